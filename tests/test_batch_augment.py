"""The batch augmentation (``augment_on: "batch"``) is MONAI's affine warp, batched: same output for the same matrix,
same distribution of matrices as the chain's ``RandAffined``, and its generator survives a resume."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO
from monai.bundle import ConfigParser
from monai.transforms import Affine, RandAffined
from monai.transforms.utils import create_rotate, create_scale

from custom.data.batch_augment import BatchRandAffine, chain_augments, make_batch_augment
from custom.data.transforms import get_preprocessing
from custom.engines.handlers.checkpoints import LoaderRNGState


def _matrices() -> list[np.ndarray]:
    return [
        np.asarray(create_rotate(3, [0.05, -0.08, 0.07])) @ np.asarray(create_scale(3, [1.04, 0.97, 1.02])),
        np.asarray(create_rotate(3, [-0.03, 0.02, 0.09])) @ np.asarray(create_scale(3, [0.96, 1.05, 1.0])),
    ]


def _fixed(aug: BatchRandAffine, mats: list[np.ndarray]) -> None:
    aug.randomize = lambda data=None: setattr(aug, "_affines", list(mats))  # type: ignore[method-assign]


def test_same_matrix_same_output_as_monai_affine() -> None:
    """Independent reference: monai.transforms.Affine (one sample at a time) with the same output->input matrix."""
    torch.manual_seed(0)
    image = F.avg_pool3d(torch.randn(2, 3, 20, 24, 28), 3, 1, 1)
    label = torch.zeros(2, 1, 20, 24, 28, dtype=torch.uint8)
    label[:, :, 6:12, 8:15, 10:20] = 3
    label[:, :, 8:10, 10:12, 12:16] = 1
    mats = _matrices()
    aug = BatchRandAffine(prob=1.0)
    _fixed(aug, mats)
    out, out_label = aug(image, label)
    for b, m in enumerate(mats):
        a = torch.as_tensor(m, dtype=torch.float32)
        ref = Affine(affine=a, padding_mode="zeros", mode="bilinear", image_only=True)(image[b])
        ref_label = Affine(affine=a, padding_mode="zeros", mode="nearest", image_only=True)(label[b].float())
        assert torch.allclose(out[b], torch.as_tensor(ref), atol=1e-5)
        assert torch.equal(out_label[b].float(), torch.as_tensor(ref_label))
    assert out_label.dtype == torch.uint8 and set(out_label.unique().tolist()) <= {0, 1, 3}


def test_draws_follow_the_chain_augmentation_s_distribution() -> None:
    """prob 0.5 per sample; a drawn matrix is rotation (|angle| <= 5 deg per axis) x scaling within 1 +- 0.05."""
    aug = BatchRandAffine(prob=0.5, seed=3)
    mats = []
    for _ in range(200):
        aug.randomize(8)
        mats += aug._affines
    applied = [m for m in mats if not np.array_equal(m, np.eye(4))]
    assert 0.44 < len(applied) / len(mats) < 0.56
    for m in applied:
        lin = m[:3, :3]
        scales = np.linalg.norm(lin, axis=0)  # rotation @ diag(s): column norms are the scales
        assert np.all((scales >= 0.95 - 1e-9) & (scales <= 1.05 + 1e-9))
        rot = lin / scales
        assert np.allclose(rot.T @ rot, np.eye(3), atol=1e-9) and np.linalg.det(rot) == pytest.approx(1.0)
        # three rotations of at most 5 degrees each turn any axis by at most 15 degrees
        assert np.all(np.diag(rot) >= math.cos(math.radians(15.0)) - 1e-9)
    # the same ranges and probability as the chain's RandAffined (custom.data.transforms.get_preprocessing)
    chain = next(
        t for t in get_preprocessing(spatial_size=(16, 16, 16), augment=True).transforms if isinstance(t, RandAffined)
    )
    grid = chain.rand_affine.rand_affine_grid
    assert tuple(grid.rotate_range) == (aug.rotate,) * 3 and tuple(grid.scale_range) == (aug.scale,) * 3
    assert chain.prob == aug.prob


def test_prob_zero_returns_the_batch_unchanged() -> None:
    image = torch.randn(2, 4, 8, 8, 8)
    out, label = BatchRandAffine(prob=0.0)(image, None)
    assert out is image and label is None


def test_wiring_selects_exactly_one_place() -> None:
    assert chain_augments(True, "volume") and not chain_augments(True, "batch") and not chain_augments(False, "volume")
    assert make_batch_augment(True, "volume") is None and make_batch_augment(False, "batch") is None
    assert isinstance(make_batch_augment(True, "batch"), BatchRandAffine)
    assert make_batch_augment("false", "batch") is None and not chain_augments("false", "volume")  # --augment false
    with pytest.raises(ValueError, match="augment_on"):
        chain_augments(True, "gpu")
    for aug_on, in_chain in (("volume", True), ("batch", False)):
        parser = ConfigParser()
        parser.read_config(str(REPO / "bundles" / "vae_baseline" / "configs" / "train.json"))
        parser.update({"augment_on": aug_on})
        chain = parser.get_parsed_content("train#preprocessing").transforms
        assert any(isinstance(t, RandAffined) for t in chain) == in_chain
        assert (parser.get_parsed_content("train#step").augment is None) == in_chain


def test_resume_state_restores_the_step_augmentation_generator() -> None:
    step = SimpleNamespace(augment=BatchRandAffine(prob=0.5, seed=7))
    engine = SimpleNamespace(_process_function=step, state=SimpleNamespace(dataloader=None), data_loader=None)
    holder = LoaderRNGState(engine)  # type: ignore[arg-type]
    step.augment.randomize(5)
    saved = holder.state_dict()
    assert len(saved["transforms"]) == 1
    step.augment.randomize(4)
    expected = [m.copy() for m in step.augment._affines]
    step.augment.randomize(9)  # the interrupted run went on drawing
    holder.load_state_dict(saved)
    step.augment.randomize(4)
    assert all(np.array_equal(a, b) for a, b in zip(step.augment._affines, expected))
