"""Scores of a forecast tumour mask and a forecast image against the true future scan.

Masks (binary, same grid, voxel-to-world ``affine``; P forecast, T true):

* Dice = 2 |P n T| / (|P| + |T|) (Dice 1945), ``monai.metrics.DiceMetric``;
* HD95 (mm): the symmetric 95th-percentile Hausdorff distance between the surfaces of P and T in physical spacing
  (Huttenlocher et al. 1993; the BraTS variant), ``monai.metrics.HausdorffDistanceMetric(percentile=95)``;
  NaN when either mask is empty;
* relative volume difference RVD = (V_P - V_T) / V_T (signed; ``abs_rvd`` = |RVD|), V = voxel count x voxel volume;
* centroid error (mm) = || A (mean_{i in P} ijk_i) - A (mean_{i in T} ijk_i) ||_2 with A the affine (world
  coordinates of the voxel-centre means); NaN when either mask is empty.

Images ([C, ...] on one grid, compared inside a box B: the bounding box of a tumour region dilated by ``margin``
voxels and clipped to the grid), with the data range R = max_B(y) - min_B(y) of the true image over all channels:

* PSNR = 10 log10(R^2 / MSE_B) (``monai.metrics.PSNRMetric(max_val=R)``);
* SSIM (Wang et al. 2004), Gaussian window of ``win_size`` voxels (at most the box's smallest side, odd), sigma 1.5,
  mean over channels (``monai.metrics.SSIMMetric(spatial_dims=3, data_range=R)``, one channel at a time).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.metrics import DiceMetric, HausdorffDistanceMetric, PSNRMetric, SSIMMetric

from custom.forecast_mask.level_set import voxel_sizes


def _as_batch(mask: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(mask, dtype=bool), dtype=torch.float32)[None, None]


def dice(pred: np.ndarray, true: np.ndarray) -> float:
    """Dice of two binary masks (MONAI ``DiceMetric``; 1.0 when both are empty)."""
    if not np.any(pred) and not np.any(true):
        return 1.0
    return float(DiceMetric(include_background=True, reduction="none")(_as_batch(pred), _as_batch(true))[0, 0])


def hd95_mm(pred: np.ndarray, true: np.ndarray, spacing: np.ndarray) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (MONAI); NaN when either mask is empty."""
    if not np.any(pred) or not np.any(true):
        return math.nan
    metric = HausdorffDistanceMetric(include_background=True, percentile=95, reduction="none")
    return float(metric(_as_batch(pred), _as_batch(true), spacing=[float(s) for s in spacing])[0, 0])


def relative_volume_difference(pred: np.ndarray, true: np.ndarray) -> float:
    """(|P| - |T|) / |T| (the voxel volume cancels); NaN when T is empty."""
    n_true = int(np.count_nonzero(true))
    return math.nan if n_true == 0 else (int(np.count_nonzero(pred)) - n_true) / n_true


def centroid_mm(mask: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World coordinate (mm) of the mean voxel index of ``mask``."""
    ijk = np.argwhere(np.asarray(mask, dtype=bool)).mean(axis=0)
    a = np.asarray(affine, dtype=np.float64)
    return a[:3, :3] @ ijk + a[:3, 3]


def centroid_error_mm(pred: np.ndarray, true: np.ndarray, affine: np.ndarray) -> float:
    """Euclidean distance between the world centroids of P and T; NaN when either is empty."""
    if not np.any(pred) or not np.any(true):
        return math.nan
    return float(np.linalg.norm(centroid_mm(pred, affine) - centroid_mm(true, affine)))


def mask_scores(pred: np.ndarray, true: np.ndarray, affine: np.ndarray) -> dict[str, float]:
    """Dice, HD95 (mm), RVD, |RVD| and centroid error (mm) of a forecast mask against the true one."""
    rvd = relative_volume_difference(pred, true)
    return {
        "dice": dice(pred, true),
        "hd95_mm": hd95_mm(pred, true, voxel_sizes(affine)),
        "rvd": rvd,
        "abs_rvd": abs(rvd),
        "centroid_err_mm": centroid_error_mm(pred, true, affine),
    }


def tumour_box(region: np.ndarray, margin: int = 3) -> tuple[slice, ...]:
    """Bounding box of a non-empty ``region`` dilated by ``margin`` voxels, clipped to the grid."""
    idx = np.argwhere(np.asarray(region, dtype=bool))
    if idx.size == 0:
        raise ValueError("the tumour region is empty: there is no box to score images in")
    lo = np.maximum(idx.min(axis=0) - margin, 0)
    hi = np.minimum(idx.max(axis=0) + margin + 1, np.asarray(region.shape))
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def image_scores(pred: torch.Tensor, true: torch.Tensor, box: tuple[slice, ...], win_size: int = 7) -> dict[str, float]:
    """SSIM and PSNR of ``pred`` against ``true`` ([C, *spatial]) inside ``box`` (module docstring)."""
    p = torch.as_tensor(pred, dtype=torch.float32)[(slice(None), *box)]
    y = torch.as_tensor(true, dtype=torch.float32)[(slice(None), *box)]
    rng = float(y.max() - y.min())
    if rng <= 0:
        return {"ssim": math.nan, "psnr": math.nan}
    psnr = float(PSNRMetric(max_val=rng, reduction="mean")(p[None], y[None]).mean())
    win = min(int(win_size), *p.shape[1:])
    win = win if win % 2 == 1 else win - 1
    ssim = SSIMMetric(spatial_dims=3, data_range=rng, win_size=win, reduction="none")
    vals = [float(ssim(p[None, c : c + 1], y[None, c : c + 1]).mean()) for c in range(p.shape[0])]
    return {"ssim": float(np.mean(vals)), "psnr": psnr}
