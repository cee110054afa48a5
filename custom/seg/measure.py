"""Volume and centroid of the tumour in a label map, in the map's own geometry.

For a label map L on a grid with voxel-to-world affine A (RAS, mm), the tumour T = {voxels with L in {1, 3}}
(:data:`custom.constants.TUMOUR_LABELS`):

    V [mm^3] = |T| |det A[:3, :3]|,   V [mL] = V [mm^3] / 1000,   ln V = ln(V [mL]),
    centroid = A[:3, :3] mean_{ijk in T}(ijk) + A[:3, 3]      (mm, world RAS),

the same definitions as the package's factors (:func:`custom.data.factors.seg_factors`), which it calls, so that a
segmented scan's ln V is on the latent_ode's scale (ln mL of labels 1 + 3). An empty tumour has V = 0 and ln V, the
centroid nan.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from custom.data.factors import seg_factors

#: columns of one scan's measurement, in ``seg_volumes.csv`` order
MEASURE_COLUMNS: tuple[str, ...] = ("volume_mm3", "volume_ml", "log_volume", "centroid_x", "centroid_y", "centroid_z")


def tumour_measurements(label, affine) -> dict[str, float]:
    """See the module docstring. ``label``: [X, Y, Z] or [1, X, Y, Z] (numpy or torch); ``affine``: 4 x 4."""
    seg = torch.as_tensor(label).detach().cpu().numpy() if not isinstance(label, np.ndarray) else label
    if seg.ndim == 4:
        if seg.shape[0] != 1:
            raise ValueError(f"a label map has one channel, got shape {tuple(seg.shape)}")
        seg = seg[0]
    aff = torch.as_tensor(affine).detach().cpu().double().numpy() if not isinstance(affine, np.ndarray) else affine
    f = seg_factors(np.rint(seg).astype(np.int16), np.asarray(aff, dtype=np.float64))
    ml = float(f["volume_ml"])
    return {
        "volume_mm3": ml * 1000.0,
        "volume_ml": ml,
        "log_volume": math.log(ml) if ml > 0 else math.nan,
        "centroid_x": float(f["centroid_x"]),
        "centroid_y": float(f["centroid_y"]),
        "centroid_z": float(f["centroid_z"]),
    }
