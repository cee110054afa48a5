"""Names shared by every bundle: modality order, label meanings, default geometry."""

from __future__ import annotations

#: Channel order of the stacked image tensor ``x[B, 4, D, H, W]``.
MODALITIES: tuple[str, ...] = ("t1c", "t1n", "t2f", "t2w")

#: BraTS-MEN segmentation labels.
LABELS: dict[int, str] = {0: "background", 1: "ncr", 2: "ed", 3: "et"}

#: Labels that make up the tumour whose growth is modelled (non-enhancing core + enhancing tumour).
TUMOUR_LABELS: tuple[int, ...] = (1, 3)

#: Default isotropic spacing (mm): 240 mm field of view -> 128 voxels.
DEFAULT_SPACING: float = 1.875
DEFAULT_SPATIAL_SIZE: tuple[int, int, int] = (128, 128, 128)
