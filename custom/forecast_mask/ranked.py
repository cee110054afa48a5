"""Exact-volume forecast mask: the n voxels of lowest rank along the last mask's signed distance.

The level set {d < c} of :mod:`custom.forecast_mask.level_set` moves whole distance shells: voxels at equal
distance enter or leave together, so a change smaller than one shell keeps the last mask and the written volume
misses the forecast one. Here every voxel x gets the rank key

    key(x) = (d(x), b(x))    (lexicographic: d first, b only among voxels of equal d),

i.e. the score d(x) + eps b(x) in the limit eps -> 0, with d the signed distance (mm) of the last mask M and b a
continuous tie-break. The forecast mask is the n = round(V(t) / v) voxels of lowest key (v = voxel volume), so its
volume is within half a voxel of V(t) (unless V(t) exceeds the grid). Tie-breaks:

* ``smooth``: b = -(G_sigma * 1_M)(x), the last mask smoothed by a Gaussian of one voxel per axis; within a shell
  the voxels most surrounded by tumour come first (growth fills concavities first, shrinkage removes protrusions
  first), a sub-voxel refinement of the distance;
* ``centroid``: b = |x - centroid(M)| (mm); growth starts, and shrinkage ends, nearest the centroid.

Properties (d < 0 inside M, d >= min voxel side > 0 outside): the first |M| voxels are M, so a forecast volume
equal to the observed one returns M exactly; the masks are nested in n (growth only adds, shrinkage only removes);
and a grown mask is 26-connected to M: from an outside voxel x with nearest mask voxel p, the neighbour one step
towards p (x + sign(p - x) per axis) is strictly nearer to p, so it has a smaller d and a lower key, and is
selected before x. Ranking a discrete distance with a secondary key is the "ordered" fast-marching / priority-flood
idea (Sethian 1996; Beucher and Meyer 1993 for the watershed flooding order).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage as ndi

TIE_BREAKS: tuple[str, ...] = ("smooth", "centroid")


def tie_break(mask: np.ndarray, spacing: Sequence[float], kind: str = "smooth") -> np.ndarray:
    """The secondary rank key b(x) of every voxel (module docstring)."""
    m = np.asarray(mask, dtype=bool)
    if kind == "smooth":
        return -ndi.gaussian_filter(m.astype(np.float64), sigma=1.0, mode="constant")
    if kind == "centroid":
        s = np.asarray(spacing, dtype=np.float64)
        centre = np.argwhere(m).mean(axis=0)
        grids = np.meshgrid(*[(np.arange(n) - c) * h for n, c, h in zip(m.shape, centre, s)], indexing="ij")
        return np.sqrt(sum(g**2 for g in grids))
    raise ValueError(f"unknown tie-break {kind!r}: choose one of {', '.join(TIE_BREAKS)}")


def ranked_mask(
    last_mask: np.ndarray,
    target_volume_ml: float,
    spacing: Sequence[float],
    distance: np.ndarray,
    kind: str = "smooth",
) -> np.ndarray:
    """The round(V / v) voxels of lowest (d, b) key (module docstring); ``distance`` is the last mask's signed
    distance (:func:`custom.forecast_mask.level_set.signed_distance`)."""
    m = np.asarray(last_mask, dtype=bool)
    d = np.asarray(distance).ravel()
    v_ml = float(np.prod(np.asarray(spacing, dtype=np.float64))) / 1000.0
    n = int(min(round(target_volume_ml / v_ml), d.size))
    out = np.zeros(d.size, dtype=bool)
    if n == 0:
        return out.reshape(m.shape)
    c = np.partition(d, n - 1)[n - 1]  # the n-th smallest distance: the shell that is filled in part
    out[d < c] = True
    shell = np.flatnonzero(d == c)
    need = n - int(out.sum())
    b = tie_break(m, spacing, kind).ravel()[shell]
    out[shell[np.argsort(b, kind="stable")[:need]]] = True
    return out.reshape(m.shape)
