"""Datalist checks and item lists of the segmentation bundle, on top of :mod:`custom.data.dataset`.

Training and validation need a segmentation for every case; inference takes any scan (with or without one) of the
requested splits, validated by the same :func:`custom.data.dataset.load_split` as every other bundle.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from custom.data.errors import DataValidationError


def check_labels(datalist: str, splits: Sequence[str] = ("training", "validation")) -> str:
    """Return ``datalist`` when every case of ``splits`` lists a segmentation (``label``), else raise one
    :class:`DataValidationError` naming each unlabelled case, its split and the file."""
    from custom.data.datalist import read_datalist

    missing = []
    for split in splits:
        for item in read_datalist(datalist, split, keep_missing=True):
            if not item.get("label"):
                missing.append(f"{item.get('case_id', '?')} ({split})")
    if missing:
        raise DataValidationError(
            f"{datalist}: the segmentation bundle trains only on segmented cases, but {len(missing)} case(s) have "
            f"no label: {', '.join(missing)}; add their -seg.nii.gz or move them to the test split"
        )
    return datalist


def inference_items(
    datalist: str,
    splits: Sequence[str] = ("training", "validation", "test"),
    with_label: bool = False,
    limit: int | None = None,
    skip_invalid: bool = False,
    skipped_dir: str | None = None,
) -> list[dict[str, Any]]:
    """The validated items of ``splits`` (absolute paths) in datalist order, each with the same keys so that they
    collate: ``image``, ``case_id``, ``subject_id``, ``timepoint``, ``time_years`` (nan when the datalist has none),
    ``split`` and ``reference_seg`` (the reference segmentation's path, ``""`` without one); ``label`` too with
    ``with_label`` (evaluation: then every case must have one, see :func:`check_labels`). An empty result is a
    :class:`DataValidationError`."""
    from custom.data.dataset import load_split

    if with_label:
        check_labels(datalist, splits)
    items: list[dict[str, Any]] = []
    for split in splits:
        for it in load_split(datalist, split, skip_invalid=skip_invalid, skipped_dir=skipped_dir):
            item = {
                "image": it["image"],
                "case_id": str(it.get("case_id", "")),
                "subject_id": str(it.get("subject_id", it.get("case_id", ""))),
                "timepoint": int(it.get("timepoint", 0)),
                "time_years": float(it["time_years"]) if it.get("time_years") is not None else math.nan,
                "split": split,
                "reference_seg": str(it.get("label") or ""),
            }
            if with_label:
                item["label"] = it["label"]
            items.append(item)
    if limit:
        items = items[: int(limit)]
    if not items:
        raise DataValidationError(f"{datalist} has no case in the split(s) {', '.join(splits)}: nothing to segment")
    return items
