"""File names of the segmentation bundle's outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from custom.constants import MODALITIES

#: suffix of a predicted mask: ``<case>_pred_seg.nii.gz`` (not ``-seg``, so it never passes for a reference mask)
MASK_POSTFIX = "pred_seg"


def case_name(filename: str) -> str:
    """``.../BraTS-MEN-00001-000-t1c.nii.gz`` -> ``BraTS-MEN-00001-000`` (a 4-channel file keeps its stem)."""
    name = Path(str(filename)).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    for m in MODALITIES:
        if name.endswith(f"-{m}"):
            return name[: -len(m) - 1]
    return name


def mask_name_formatter(metadict: dict[str, Any], saver: Any) -> dict[str, Any]:
    """``output_name_formatter`` of MONAI's ``SaveImaged``: name the mask after the case, not the t1c file."""
    filename = metadict.get("filename_or_obj", "image")
    filename = filename[0] if isinstance(filename, (list, tuple)) else filename
    return {"subject": case_name(filename), "idx": metadict.get("patch_index")}
