"""Forecast mask: the last observed tumour mask moved along its signed distance until it has the forecast volume.

With M the last observed binary tumour mask on a grid of voxel sizes s (mm) and d its signed Euclidean distance in
physical units,

    d(x) = -dist(x, outside M)  for x in M,        d(x) = +dist(x, M)  for x outside M

(``scipy.ndimage.distance_transform_edt`` with ``sampling=s``; voxel-centre distances, so |d| >= min(s) on every
voxel), the forecast mask at time t is the sublevel set

    M_t = {x : d(x) < c},    c chosen so that |M_t| v is closest to the forecast volume V(t)   (v = voxel volume).

|{d < c}| is a non-decreasing step function of c; c is found by bisection (binary search over the sorted distance
values, ``numpy.searchsorted``), which reaches the closest voxel count the grid allows: voxels at equal distance
enter together. c < 0 shrinks M (an erosion by |c| mm), c > 0 grows it (a dilation by c mm): an isotropic level-set
growth of the observed shape (Osher and Sethian 1988; the same isotropic expansion is the growth model of Swanson et
al. 2003 for a homogeneous medium). Every level in (max_{x in M} d, min_{x notin M} d) gives M itself, so a forecast
volume equal to the observed one returns M exactly.

The level set misses V(t) by up to one shell (a change smaller than one shell keeps M); ``method="ranked"`` (the
default of :func:`forecast_mask`) fills the last shell voxel by voxel to the exact count instead
(:mod:`custom.forecast_mask.ranked`), ``method="level_set"`` keeps whole shells.

The whole tumour is forecast (the labels in ``custom.constants.TUMOUR_LABELS``, whose volume the forecaster
predicts); edema is not.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

from custom.constants import TUMOUR_LABELS


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """Voxel sizes (mm) of a voxel-to-world ``affine``: the norms of its first three columns (nibabel's)."""
    from nibabel.affines import voxel_sizes as nib_voxel_sizes

    return np.asarray(nib_voxel_sizes(np.asarray(affine, dtype=np.float64)), dtype=np.float64)


def tumour_mask(seg: np.ndarray, labels: Sequence[int] = TUMOUR_LABELS) -> np.ndarray:
    """Binary tumour mask of a label map (voxels whose label is in ``labels``)."""
    return np.isin(np.asarray(seg), list(labels))


def signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed Euclidean distance (mm) of a binary mask: negative inside, positive outside (module docstring)."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        raise ValueError("the mask is empty: a forecast mask needs a tumour in the last observed mask")
    if m.all():
        raise ValueError("the mask fills the whole grid: there is no outside to measure distances to")
    s = tuple(float(v) for v in spacing)
    return ndi.distance_transform_edt(~m, sampling=s) - ndi.distance_transform_edt(m, sampling=s)


def level_for_count(distance: np.ndarray, n_target: float, n_observed: int) -> float:
    """The level c whose sublevel set {d < c} has the voxel count closest to ``n_target`` (ties: the count nearer
    ``n_observed``, so that no predicted change keeps the observed mask). Bisection over the sorted distances."""
    d = np.sort(distance, axis=None)
    levels = np.unique(d)
    # candidate thresholds: below everything, between consecutive levels, above everything
    cuts = np.concatenate([[levels[0] - 1.0], 0.5 * (levels[:-1] + levels[1:]), [levels[-1] + 1.0]])
    counts = np.searchsorted(d, cuts, side="left")  # |{d < c}| for each candidate c
    j = int(np.searchsorted(counts, n_target, side="left"))  # first count >= n_target
    cand = [i for i in (j - 1, j) if 0 <= i < len(counts)]
    best = min(cand, key=lambda i: (abs(counts[i] - n_target), abs(counts[i] - n_observed)))
    return float(cuts[best])


MASK_METHODS: tuple[str, ...] = ("ranked", "level_set")


def forecast_mask(
    last_mask: np.ndarray,
    target_volume_ml: float,
    spacing: Sequence[float],
    distance: np.ndarray | None = None,
    method: str = "ranked",
    tie_break: str = "smooth",
) -> np.ndarray:
    """The forecast of ``last_mask`` (binary, voxel sizes ``spacing`` in mm) at ``target_volume_ml``: the ranked
    exact-volume mask (``method="ranked"``, with ``tie_break`` of :mod:`custom.forecast_mask.ranked`) or the
    whole-shell level set (``method="level_set"``).

    Args:
        last_mask: binary tumour mask of the last observed scan (any source: its segmentation, or a mask file).
        target_volume_ml: forecast tumour volume V(t) in mL.
        spacing: voxel sizes in mm (:func:`voxel_sizes` of the mask's affine).
        distance: the mask's :func:`signed_distance`, when several volumes are forecast from the same mask.
        method: ``"ranked"`` (volume within half a voxel of the target) or ``"level_set"`` (whole shells).

    Returns:
        Boolean mask of the same shape; equal to ``last_mask`` when ``target_volume_ml`` is its volume.

    Example:
        >>> m = np.zeros((9, 9, 9), bool); m[4, 4, 4] = True
        >>> int(forecast_mask(m, 7 * 8e-3, (2.0, 2.0, 2.0)).sum())  # centre + its 6 face neighbours
        7
    """
    m = np.asarray(last_mask, dtype=bool)
    if method not in MASK_METHODS:
        raise ValueError(f"unknown forecast-mask method {method!r}: choose one of {', '.join(MASK_METHODS)}")
    if not np.isfinite(target_volume_ml) or target_volume_ml < 0:
        raise ValueError(f"the forecast volume must be a finite number >= 0 mL, got {target_volume_ml}")
    d = signed_distance(m, spacing) if distance is None else distance
    if method == "ranked":
        from custom.forecast_mask.ranked import ranked_mask

        return ranked_mask(m, target_volume_ml, spacing, d, tie_break)
    v_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    c = level_for_count(d, target_volume_ml / v_ml, int(m.sum()))
    return d < c
