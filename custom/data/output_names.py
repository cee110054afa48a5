"""Name every inference output after its case id, never after its first input file.

``SaveImaged`` names a file after the image's ``filename_or_obj``: the first channel file. Two cases whose first
files share a name (``t1c.nii.gz`` in two case folders, or the same export name from two scanners) would then
write one output file, the second overwriting the first. :class:`NameByCased` sets that name to the item's
``case_id`` (unique in a checked datalist, see :func:`custom.data.geometry_check.check_items`), so the output is
``<output_dir>/<case_id>_<postfix>.nii.gz``; the original path stays in the metadata as ``source_filename``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from monai.transforms import MapTransform

__all__ = ["NameByCased"]


class NameByCased(MapTransform):
    """Set ``data[key].meta["filename_or_obj"]`` to ``<case_id>.nii.gz`` for ``SaveImaged``.

    Args:
        keys: the tensors to be saved (MetaTensors).
        case_key: the item key holding the case id.
    """

    def __init__(self, keys: str | Sequence[str], case_key: str = "case_id") -> None:
        super().__init__(keys)
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        case = d.get(self.case_key)
        if isinstance(case, (list, tuple)):
            case = case[0]
        if case is None:
            raise KeyError(f"NameByCased: the item has no {self.case_key!r} to name its output by")
        for key in self.key_iterator(d):
            meta = d[key].meta
            meta["source_filename"] = meta.get("filename_or_obj")
            meta["filename_or_obj"] = f"{case}.nii.gz"
        return d
