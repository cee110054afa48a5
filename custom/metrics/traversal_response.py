"""Does a latent traversal move the *tumour*? A measured version of "z_vol grows it and z_loc moves it".

A traversal decodes ``mu`` with one coordinate ``z_j`` set to ``mu_j + s * spread_j`` for offsets ``s``. On the
t1c channel the enhancing meningioma is the brightest structure (about 1.7x white matter), so the decoded tumour is
taken as the voxels brighter than a threshold ``tau`` calibrated on *input* images with their segmentations:
``tau`` = midpoint between the median t1c of tumour voxels and the 99th percentile of the other brain voxels.

Per coordinate:
- ``volume_spearman``: Spearman rank correlation between ``s`` and the number of bright voxels. A coordinate that
  grows the tumour scores near +1; one that does not change it scores 0 (constant counts count as 0).
- ``shift_mm``: centroid of the bright voxels at the last offset minus at the first, in mm along the array axes.
  A location coordinate moves it along its own axis; ``nan`` when either end has no bright voxel.

This is a pure function of decoded arrays; a detector-free proxy (it cannot tell a tumour from another bright
blob), so read it with the traversal PNG. Spearman: Spearman, Am. J. Psychol. 1904.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.stats import spearmanr


def tumour_threshold(
    t1c: np.ndarray, label: np.ndarray, tumour_labels: Sequence[int] = (1, 3), brain: np.ndarray | None = None
) -> float:
    """``tau`` from input t1c volumes ``[N, X, Y, Z]`` and labels of the same shape (see the module doc).

    ``brain`` (bool, same shape) marks brain voxels; default: non-zero t1c (skull-stripped, z-scored data).
    Raises ``ValueError`` when there is no tumour voxel or no other brain voxel to calibrate on.
    """
    t1c = np.asarray(t1c, dtype=np.float64)
    label = np.asarray(label)
    if t1c.shape != label.shape:
        raise ValueError(f"t1c {t1c.shape} and label {label.shape} must have the same shape")
    tumour = np.isin(label, list(tumour_labels))
    brain = (t1c != 0) if brain is None else np.asarray(brain, dtype=bool)
    other = brain & ~tumour
    if not tumour.any() or not other.any():
        raise ValueError("need tumour voxels and other brain voxels to calibrate the threshold")
    return float(0.5 * (np.median(t1c[tumour]) + np.percentile(t1c[other], 99.0)))


def traversal_response(
    images: np.ndarray, offsets: Sequence[float], tau: float, spacing: Sequence[float] = (1.0, 1.0, 1.0)
) -> dict[str, np.ndarray]:
    """Bright-voxel counts, their Spearman correlation with the offset, and the centroid shift, per coordinate.

    Args:
        images: decoded t1c ``[n_coords, n_steps, X, Y, Z]`` (as from :func:`custom.traversal.traversal_images`).
        offsets: the ``n_steps`` offsets ``s``, increasing.
        tau: brightness threshold (:func:`tumour_threshold`).
        spacing: voxel size in mm along X, Y, Z.

    Returns:
        ``{"counts": [n_coords, n_steps], "volume_spearman": [n_coords], "shift_mm": [n_coords, 3]}``.
    """
    imgs = np.asarray(images)
    if imgs.ndim != 5:
        raise ValueError(f"images must be [n_coords, n_steps, X, Y, Z], got {imgs.shape}")
    s = np.asarray(offsets, dtype=np.float64)
    if len(s) != imgs.shape[1] or len(s) < 2:
        raise ValueError(f"need one offset per step (>= 2), got {len(s)} for {imgs.shape[1]} steps")
    sp = np.asarray(spacing, dtype=np.float64)
    bright = imgs > tau
    counts = bright.reshape(imgs.shape[0], imgs.shape[1], -1).sum(-1)
    rho = np.zeros(imgs.shape[0])
    shift = np.full((imgs.shape[0], 3), np.nan)
    for j in range(imgs.shape[0]):
        if np.ptp(counts[j]) > 0:
            rho[j] = float(spearmanr(s, counts[j]).statistic)
        ends = [np.argwhere(bright[j, k]) for k in (0, -1)]
        if all(len(e) for e in ends):
            shift[j] = (ends[1].mean(0) - ends[0].mean(0)) * sp
    return {"counts": counts, "volume_spearman": rho, "shift_mm": shift}
