"""Preprocessing chain: shapes, dtype, RAS orientation, brain z-score, nearest labels, factors."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from custom.data.factors import FACTOR_NAMES, seg_factors
from custom.data.transforms import get_inference_preprocessing, get_preprocessing

# LPS-stored volume: voxel axis 0 runs towards -x (left), axis 1 towards -y (posterior).
LPS_AFFINE = np.array([[-2.0, 0, 0, 30.0], [0, -2.0, 0, 40.0], [0, 0, 2.0, -10.0], [0, 0, 0, 1]])
SHAPE = (10, 12, 8)
BRAIN = (slice(1, 9), slice(2, 10), slice(1, 7))
CUBE = (slice(3, 7), slice(3, 7), slice(2, 6))  # 4x4x4 voxels of 2 mm = 512 mm^3


def volumes() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for c in range(4):
        vol = np.zeros(SHAPE, np.float32)
        vol[BRAIN] = rng.uniform(1.0, 2.0, size=vol[BRAIN].shape) * (c + 1) * 100.0 + 10.0 * c
        out.append(vol)
    out[0][2, 3, 2] = 1000.0  # unique maximum, to follow one voxel through the chain
    return out


def segmentation() -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    seg[2:8, 2:8, 1:7] = 2  # edema shell (not tumour)
    seg[CUBE] = 1
    seg[4:6, 4:6, 3:5] = 3
    return seg


@pytest.fixture
def item(tmp_path: Path) -> dict:
    paths = []
    for name, vol in zip(("t1c", "t1n", "t2f", "t2w"), volumes()):
        paths.append(str(tmp_path / f"BraTS-MEN-00001-000-{name}.nii.gz"))
        nib.save(nib.Nifti1Image(vol, LPS_AFFINE), paths[-1])
    seg_path = str(tmp_path / "BraTS-MEN-00001-000-seg.nii.gz")
    nib.save(nib.Nifti1Image(segmentation(), LPS_AFFINE), seg_path)
    return {"case_id": "BraTS-MEN-00001-000", "image": paths, "label": seg_path}


def expected_image(pad_to: tuple[int, int, int]) -> np.ndarray:
    """Flip LPS -> RAS, z-score each channel over its non-zero voxels, pad symmetrically with zeros."""
    out = []
    for vol in volumes():
        ras = vol[::-1, ::-1, :]
        brain = ras != 0
        z = np.zeros_like(ras, dtype=np.float64)
        z[brain] = (ras[brain] - ras[brain].mean()) / ras[brain].std()
        pads = [((t - s) // 2, t - s - (t - s) // 2) for s, t in zip(ras.shape, pad_to)]
        out.append(np.pad(z, pads))
    return np.stack(out)


def test_shape_dtype_ras_and_brain_zscore(item: dict) -> None:
    out = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16))(item)
    image = out["image"]
    assert tuple(image.shape) == (4, 16, 16, 16) and image.dtype == torch.float32
    np.testing.assert_allclose(image.numpy(), expected_image((16, 16, 16)), atol=1e-4)

    affine = image.affine.numpy()
    assert np.all(np.diag(affine)[:3] > 0)  # RAS
    for c in range(4):  # per channel, over the brain (non-zero) voxels only: padding is excluded
        x = image[c].numpy()
        brain = x[x != 0]
        assert brain.size == 8 * 8 * 6
        assert abs(brain.mean()) < 1e-4 and abs(brain.std() - 1.0) < 1e-4

    # the same physical point: the marked voxel keeps its world coordinate
    world_in = LPS_AFFINE @ np.array([2, 3, 2, 1.0])
    idx = np.unravel_index(int(np.argmax(image[0].numpy())), (16, 16, 16))
    np.testing.assert_allclose(affine @ np.array([*idx, 1.0]), world_in, atol=1e-4)


def test_label_nearest_resampling_keeps_label_set(item: dict) -> None:
    out = get_preprocessing(spacing=1.5, spatial_size=(24, 24, 24))(item)
    label = out["label"]
    assert tuple(label.shape) == (1, 24, 24, 24) and label.dtype == torch.uint8
    assert set(torch.unique(label).tolist()) == {0, 1, 2, 3}
    assert tuple(out["image"].shape) == (4, 24, 24, 24)


def test_factors_of_known_cube(item: dict) -> None:
    out = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16))(item)
    factors = out["factors"]
    assert factors.dtype == torch.float32 and tuple(factors.shape) == (len(FACTOR_NAMES),)
    got = dict(zip(FACTOR_NAMES, factors.tolist()))
    # by hand: 64 voxels x 8 mm^3 = 0.512 mL; centre index (4.5, 4.5, 3.5) through the LPS affine
    assert got["log_volume"] == pytest.approx(math.log(0.512), abs=1e-5)
    assert (got["centroid_x"], got["centroid_y"], got["centroid_z"]) == pytest.approx((21.0, 31.0, -3.0), abs=1e-4)
    assert (got["extent_x"], got["extent_y"], got["extent_z"]) == pytest.approx((8.0, 8.0, 8.0), abs=1e-4)
    # every factor is orientation-invariant: equal to the factors of the raw (LPS, unpadded) seg
    raw = seg_factors(segmentation(), LPS_AFFINE)
    for name in FACTOR_NAMES:
        assert got[name] == pytest.approx(raw[name], rel=1e-5, abs=1e-5), name


def test_factors_after_upsampling_keep_volume_and_centroid(item: dict) -> None:
    got = dict(zip(FACTOR_NAMES, get_preprocessing(spacing=1.0, spatial_size=(32, 32, 32))(item)["factors"].tolist()))
    assert math.exp(got["log_volume"]) == pytest.approx(0.512, rel=0.15)
    assert (got["centroid_x"], got["centroid_y"], got["centroid_z"]) == pytest.approx((21.0, 31.0, -3.0), abs=1.01)


def test_unlabelled_item_gives_nan_factors(item: dict) -> None:
    unlabelled = {k: v for k, v in item.items() if k != "label"}
    out = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16))(unlabelled)
    assert "label" not in out and torch.isnan(out["factors"]).all()
    out = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16), with_label=False)(item)
    assert torch.isnan(out["factors"]).all() and isinstance(out["label"], str)  # label path left untouched
    assert "factors" not in get_preprocessing(spacing=2.0, spatial_size=(16,) * 3, with_factors=False)(item)


@pytest.mark.parametrize("size", [32, 64])
def test_sizes(item: dict, size: int) -> None:
    out = get_preprocessing(spacing=(2.0, 2.0, 2.0), spatial_size=(size,) * 3)(item)
    assert tuple(out["image"].shape) == (4, size, size, size)
    assert tuple(out["label"].shape) == (1, size, size, size)


def test_crop_when_field_of_view_is_larger(item: dict) -> None:
    out = get_preprocessing(spacing=2.0, spatial_size=(6, 6, 6))(item)
    assert tuple(out["image"].shape) == (4, 6, 6, 6)
    assert math.exp(out["factors"][0].item()) == pytest.approx(0.512)  # factors computed before the crop


def test_inference_chain_image_only_and_4d_file(item: dict, tmp_path: Path) -> None:
    chain = get_inference_preprocessing(spacing=2.0, spatial_size=(16, 16, 16))
    from_list = chain({"image": item["image"]})
    assert set(from_list) == {"image"} and tuple(from_list["image"].shape) == (4, 16, 16, 16)
    four_d = tmp_path / "stacked.nii.gz"
    nib.save(nib.Nifti1Image(np.stack(volumes(), axis=-1), LPS_AFFINE), four_d)
    from_4d = chain({"image": str(four_d)})
    np.testing.assert_allclose(from_4d["image"].numpy(), from_list["image"].numpy(), atol=1e-5)


def test_augmentation_is_mild_seeded_and_keeps_labels(item: dict) -> None:
    chain = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16), augment=True, augment_prob=1.0)
    chain.set_random_state(seed=1)
    first = chain(dict(item))
    chain.set_random_state(seed=1)
    second = chain(dict(item))
    assert torch.equal(first["image"], second["image"])
    assert tuple(first["image"].shape) == (4, 16, 16, 16) and first["image"].dtype == torch.float32
    assert set(torch.unique(first["label"]).tolist()) <= {0, 1, 2, 3}
    plain = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16))(dict(item))
    assert not torch.equal(first["image"], plain["image"])
    tumour = lambda lab: int(torch.isin(lab, torch.tensor([1, 3], dtype=lab.dtype)).sum())  # noqa: E731
    assert tumour(first["label"]) == pytest.approx(tumour(plain["label"]), rel=0.35)


def test_gpu_cache_moves_to_the_device_before_the_first_random_transform() -> None:
    """The cached (deterministic) prefix ends on the device; random augmentations then run there every epoch."""
    from monai.transforms import Compose, Identityd, RandAffined

    from custom.data.dataset import _to_device_before_random

    class Mover:  # stands in for ToDeviced (no GPU on CI)
        def __init__(self, keys, device, allow_missing_keys):
            self.keys, self.device = keys, device

        def __call__(self, d):
            return d

    chain = Compose([Identityd(keys="image"), RandAffined(keys=["image", "label"], prob=1.0), Identityd(keys="image")])
    out = _to_device_before_random(chain, Mover, "cuda:0").transforms
    assert isinstance(out[1], Mover) and isinstance(out[2], RandAffined)
    assert set(out[1].keys) == {"image", "factors", "label"}  # the label is resampled with the image
    # the affine's sampling grid is built on the cache's device too (MONAI's default builds it on the CPU)
    assert out[2].rand_affine.rand_affine_grid.device == torch.device("cuda:0")
    assert out[2].rand_affine.resampler.device == torch.device("cuda:0")
    plain = _to_device_before_random(Compose([Identityd(keys="image")]), Mover, "cuda:0").transforms
    assert isinstance(plain[-1], Mover) and "label" not in plain[-1].keys


@pytest.mark.parametrize("bundle", ["vae_baseline", "dipvae"])
def test_augment_id_reaches_training_only(bundle: str) -> None:
    """``--augment True`` augments the training chain; validation and evaluation (which reuse ``validate``) never do."""
    from conftest import REPO
    from monai.bundle import ConfigParser
    from monai.transforms import Randomizable

    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / bundle / "configs" / f) for f in ("train.json", "evaluate.json")])
    parser.update({"augment": True})
    random_steps = lambda key: [  # noqa: E731
        t for t in parser.get_parsed_content(key).transforms if isinstance(t, Randomizable)  # noqa: E731
    ]
    assert random_steps("train#preprocessing")
    assert not random_steps("validate#preprocessing")


def test_augmentation_generators_restore_exactly(item: dict) -> None:
    """Saving and restoring the chain's generators (what the resume checkpoint does) replays the same augmentations."""
    from custom.engines.handlers.checkpoints import transform_rngs

    chain = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16), augment=True, augment_prob=1.0)
    chain.set_random_state(seed=3)
    chain(dict(item))  # advance past the first draw, as a finished epoch would
    rngs = transform_rngs(chain)
    assert len(rngs) >= 2  # RandAffined keeps generators in nested transforms too
    saved = [r.get_state() for r in rngs]
    expected = [chain(dict(item))["image"] for _ in range(2)]
    fresh = get_preprocessing(spacing=2.0, spatial_size=(16, 16, 16), augment=True, augment_prob=1.0)
    fresh.set_random_state(seed=99)  # a resumed process reseeds differently
    for r, s in zip(transform_rngs(fresh), saved):
        r.set_state(s)
    replay = [fresh(dict(item))["image"] for _ in range(2)]
    assert all(torch.equal(a, b) for a, b in zip(expected, replay))
    assert not torch.equal(expected[0], expected[1])
