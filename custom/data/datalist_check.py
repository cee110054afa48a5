"""Check that an existing datalist still describes its data folder before it is reused.

A datalist holds paths only, and each run re-validates the contents of the listed files
(:func:`custom.data.dataset.load_split`), so a *modified* file is checked anyway. What a reused datalist
hides is a change of the folder's case set: cases added since are never trained on, cases removed since
fail late, and a case whose files moved is read from the old place. This module compares the datalist
(its splits plus its ``skipped`` list) with a fresh discovery of the folder and names every difference.
The datalist is never rewritten here: the user decides (delete it, or rebuild it with ``python -m custom datalist``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from custom.constants import MODALITIES
from custom.data.discovery import discover_cases
from custom.data.errors import DataValidationError

__all__ = ["StaleDatalistError", "check_datalist_matches"]

_SPLITS = ("training", "validation", "test")


class StaleDatalistError(DataValidationError):
    """An existing datalist no longer matches the cases in its data folder."""


def _resolve(value: str, folder: Path) -> str:
    path = Path(value)
    return os.path.realpath(path if path.is_absolute() else folder / path)


def check_datalist_matches(datalist: str | Path, dataset_dir: str | Path, rebuild_hint: str = "") -> None:
    """Raise :class:`StaleDatalistError` when ``datalist`` lists another set of cases or files than ``dataset_dir``.

    Compared: the case ids (splits and ``skipped``) against the discovered ones, and for each case listed in a
    split, its image and label paths (after resolving links) against the discovered files. A datalist none of whose
    images lies under ``dataset_dir`` describes another folder and is not compared.

    Args:
        datalist: the JSON file (relative paths are relative to its folder, as MONAI reads them).
        dataset_dir: the data folder it should describe.
        rebuild_hint: appended to the message (how to rebuild it).
    """
    datalist, root = Path(datalist), Path(dataset_dir)
    try:
        raw = json.loads(datalist.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataValidationError(
            f"datalist {datalist} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None
    if not isinstance(raw, dict):
        raise DataValidationError(f"datalist {datalist} is not a JSON object")
    folder = datalist.parent
    listed: dict[str, dict[str, Any]] = {}
    for split in _SPLITS:
        for item in raw.get(split, []) or []:
            if isinstance(item, dict) and "case_id" in item:
                listed[str(item["case_id"])] = item
    skipped = {str(row.get("case_id")) for row in raw.get("skipped", []) or [] if isinstance(row, dict)}
    paths = [
        _resolve(str(v), folder)
        for item in listed.values()
        for v in ([item.get("image")] if isinstance(item.get("image"), str) else list(item.get("image") or []))
    ]
    real_root = os.path.realpath(root).rstrip(os.sep) + os.sep
    if paths and not any(p.startswith(real_root) for p in paths):
        return  # the datalist describes another folder (e.g. given with --datalist alone): nothing to compare
    on_disk = {c.case_id: c for c in discover_cases(root, clashes="record")}

    lines: list[str] = []
    added = sorted(set(on_disk) - set(listed) - skipped)
    removed = sorted(set(listed) - set(on_disk))
    for cid in added:
        lines.append(f"  {cid}: in {on_disk[cid].folder} but not in the datalist (added since)")
    for cid in removed:
        lines.append(f"  {cid}: listed in the datalist but no longer found under {root}")
    for cid in sorted(set(listed) & set(on_disk)):
        case, item = on_disk[cid], listed[cid]
        images = item.get("image", [])
        images = [images] if isinstance(images, str) else list(images)
        for modality, value in zip(MODALITIES, images):
            now = case.images.get(modality)
            if now is not None and _resolve(str(value), folder) != os.path.realpath(now):
                lines.append(f"  {cid}: datalist lists {modality} file {value}, the folder has {now}")
        if case.seg is not None and "label" not in item:
            lines.append(f"  {cid}: the folder has a segmentation {case.seg} that the datalist does not list")
    if lines:
        hint = f"; {rebuild_hint}" if rebuild_hint else ""
        raise StaleDatalistError(
            f"datalist {datalist} does not match the data folder {root} any more ({len(lines)} difference(s)); "
            f"it is not reused{hint}:\n" + "\n".join(lines)
        )
