"""The training augmentation of ``get_preprocessing(augment=True)``, applied to a whole batch in one warp.

MONAI's ``RandAffined`` warps one sample at a time: on the GPU-resident cache at 128^3 that is ~3.4 ms of mostly
Python per 4-channel volume (27.5 ms per batch of 8 on an H200 host), and it runs in the loader's thread, where it
does not overlap the eager training step (both hold the GIL). :class:`BatchRandAffine` draws the same random affine
per sample (MONAI's own ``create_rotate`` / ``create_scale``, the same ranges and probability) and warps the batch
with one ``torch.nn.functional.affine_grid`` + ``grid_sample`` call per key on the device, inside the training step.

Equivalence with MONAI: a sample's matrix ``A = R(rx, ry, rz) @ S(sx, sy, sz)`` maps output voxel coordinates,
centred on the volume, to input coordinates, as in ``monai.transforms.AffineGrid``; with ``align_corners=False`` the
normalised sampling grid is ``theta = P D A D^-1 P`` (``D = diag(2 / size)``, ``P`` reverses the axis order into
``grid_sample``'s x, y, z), which is the grid ``monai.transforms.Resample`` builds from ``A``
(``tests/test_batch_augment.py`` checks the output against ``monai.transforms.Affine`` with the same matrix).

Measured (H200, 128^3, batch 8; ``BENCHMARKS.md``): end to end 83 -> 116 vol/s with an eager step, but with
``torch.compile`` 120 (per volume) against 72-94 vol/s (per batch) in short benchmarks, a one-off cost not yet found;
hence not the bundles' default (``augment_on: "volume"``).
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Randomizable
from monai.transforms.utils import create_rotate, create_scale

from custom.utils import as_bool

__all__ = ["AUGMENT_ON", "BatchRandAffine", "affine_theta", "chain_augments", "make_batch_augment"]

#: where the training augmentation runs: the data chain, per sample (MONAI ``RandAffined``), or the training step,
#: per batch (:class:`BatchRandAffine`)
AUGMENT_ON = ("volume", "batch")


def affine_theta(affine: torch.Tensor, spatial_size: tuple[int, int, int]) -> torch.Tensor:
    """``[B, 4, 4]`` centred voxel-space affines (output -> input) -> ``[B, 3, 4]`` ``affine_grid`` thetas.

    ``theta = P D A D^-1 P`` on the 3x3 block and ``P D t`` for the translation, with ``D = diag(2 / size)``
    (``align_corners=False``: voxel ``i`` of ``n`` sits at ``(2 i + 1) / n - 1``, i.e. ``2 / n`` times its centred
    coordinate) and ``P`` the reversal of (d, h, w) into grid_sample's (x, y, z).
    """
    d = torch.tensor([2.0 / n for n in spatial_size], dtype=affine.dtype, device=affine.device)
    lin = affine[:, :3, :3] * d[None, :, None] / d[None, None, :]
    trans = affine[:, :3, 3] * d[None, :]
    flip = torch.arange(2, -1, -1, device=affine.device)
    lin = lin[:, flip][:, :, flip]
    trans = trans[:, flip]
    return torch.cat([lin, trans[:, :, None]], dim=2)


class BatchRandAffine(Randomizable):
    """Per-sample random rotation (|angle| <= ``rotate_deg`` per axis) and scaling (``1 +- scale`` per axis) with
    probability ``prob``, applied to a batch on its device: image bilinear, label nearest, zeros outside.

    The same distribution as the ``RandAffined`` of :func:`custom.data.transforms.get_preprocessing`; its numpy
    ``RandomState`` (``R``) is saved with resume checkpoints like the data chain's
    (:class:`custom.engines.handlers.checkpoints.LoaderRNGState`).
    """

    def __init__(self, prob: float = 0.5, rotate_deg: float = 5.0, scale: float = 0.05, seed: int | None = 0) -> None:
        if not 0.0 <= float(prob) <= 1.0:
            raise ValueError(f"prob must be in [0, 1], got {prob}")
        self.prob = float(prob)
        self.rotate = math.radians(float(rotate_deg))
        self.scale = float(scale)
        if seed is not None:
            self.set_random_state(seed=int(seed))
        self._affines: list[np.ndarray] = []

    def randomize(self, data: Any = None) -> None:
        """Draw one matrix per sample, in ``RandAffine``'s order: apply?, 3 angles, 3 scales."""
        n = int(data)
        self._affines = []
        for _ in range(n):
            if self.R.rand() >= self.prob:
                self._affines.append(np.eye(4))
                continue
            angles = self.R.uniform(-self.rotate, self.rotate, 3)
            scales = 1.0 + self.R.uniform(-self.scale, self.scale, 3)
            rotation = np.asarray(create_rotate(3, angles.tolist()))
            self._affines.append(rotation @ np.asarray(create_scale(3, scales.tolist())))

    def matrices(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """The last drawn ``[B, 4, 4]`` matrices (output -> input, centred voxel coordinates)."""
        return torch.as_tensor(np.stack(self._affines), dtype=torch.float32, device=device)

    def __call__(
        self, image: torch.Tensor, label: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Warp ``image [B, C, D, H, W]`` (and ``label [B, 1, D, H, W]``, any dtype) with fresh per-sample affines."""
        if image.ndim != 5:
            raise ValueError(f"BatchRandAffine expects [B, C, D, H, W], got shape {tuple(image.shape)}")
        self.randomize(image.shape[0])
        if all(np.array_equal(a, np.eye(4)) for a in self._affines):
            return image, label
        theta = affine_theta(self.matrices(image.device), tuple(image.shape[2:]))
        grid = F.affine_grid(theta, list(image.shape), align_corners=False)
        out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        out = out.to(image.dtype)
        if label is not None:
            warped = F.grid_sample(label.float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
            label = warped.round().to(label.dtype)
        return out, label


def _check(augment_on: str) -> None:
    if augment_on not in AUGMENT_ON:
        raise ValueError(f"augment_on must be one of {AUGMENT_ON}, got {augment_on!r}")


def chain_augments(augment: bool, augment_on: str) -> bool:
    """Whether the training data chain holds the augmentation (``augment`` and ``augment_on == "volume"``)."""
    _check(augment_on)
    return as_bool(augment) and augment_on == "volume"


def make_batch_augment(augment: bool, augment_on: str, seed: int = 0, prob: float = 0.5) -> BatchRandAffine | None:
    """The training step's batch augmentation, or None when the chain augments or nothing does.

    Seeded with ``seed + RANK`` (torchrun's environment variable; 0 outside it) so that DDP ranks draw different
    matrices, as the per-rank loaders of the chain augmentation do.
    """
    _check(augment_on)
    if not (as_bool(augment) and augment_on == "batch"):
        return None
    return BatchRandAffine(prob=prob, seed=int(seed) + int(os.environ.get("RANK", "0")))
