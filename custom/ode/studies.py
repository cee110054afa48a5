"""A subject's scans in a MONAI Label studies folder, as the forecast's ``scans`` list.

A studies folder holds the scans side by side, named as BraTS-MEN names them (``case = BraTS-MEN-SSSSS-TTT``,
subject SSSSS, timepoint TTT):

* per-modality files ``<case>-t1c.nii.gz``, ``-t1n``, ``-t2f``, ``-t2w`` (optionally ``<case>-seg.nii.gz``), or
* one 4D NIfTI per scan, ``<case>.nii.gz`` (channels t1c, t1n, t2f, t2w), optionally with ``<case>-seg.nii.gz``;

plus ``times.csv`` (``subject_id,timepoint,time_years``, as for ``python -m custom datalist --times``). Given any
one file of a subject (what MONAI Label posts as ``image``), :func:`subject_scans_in_folder` returns every scan of
that subject in the folder, sorted by timepoint, with its time and, where present, its segmentation.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from custom.constants import MODALITIES
from custom.data.discovery import read_times_csv

__all__ = ["subject_scans_in_folder", "TIMES_FILE"]

#: the acquisition times of a studies folder
TIMES_FILE = "times.csv"
_CASE = re.compile(r"(?P<subject>BraTS-MEN-\d{5})-(?P<tp>\d{3})")


def _scan(folder: Path, case: str) -> str | list[str] | None:
    """The scan's image: its four modality files, else its 4D file, else None."""
    per_mod = [folder / f"{case}-{m}.nii.gz" for m in MODALITIES]
    if all(p.is_file() for p in per_mod):
        return [str(p) for p in per_mod]
    four_d = folder / f"{case}.nii.gz"
    return str(four_d) if four_d.is_file() else None


def subject_scans_in_folder(image: str, times_csv: str | None = None) -> list[dict[str, Any]]:
    """Every scan of the subject of ``image`` (a file of one of its scans) in ``image``'s folder.

    Args:
        image: a file of the studies folder, ``BraTS-MEN-SSSSS-TTT[-<modality>].nii.gz``.
        times_csv: acquisition times (default ``<folder>/times.csv``).

    Returns:
        datalist-style items ``{case_id, subject_id, timepoint, time_years, image[, label]}`` sorted by timepoint.

    Raises:
        ValueError: ``image`` is not named as a BraTS-MEN scan, a scan has no time in the CSV, or a scan of the
            subject lacks a modality file.
        FileNotFoundError: no times CSV.
    """
    path = Path(image)
    match = _CASE.match(path.name)
    if match is None:
        raise ValueError(f"{path.name}: not a BraTS-MEN scan name (BraTS-MEN-SSSSS-TTT[-modality].nii.gz)")
    subject, folder = match["subject"], path.parent
    times_path = Path(times_csv) if times_csv else folder / TIMES_FILE
    times = read_times_csv(times_path)
    timepoints = sorted(
        {int(m["tp"]) for p in folder.iterdir() if (m := _CASE.match(p.name)) and m["subject"] == subject}
    )
    scans = []
    for tp in timepoints:
        case = f"{subject}-{tp:03d}"
        img = _scan(folder, case)
        if img is None:
            raise ValueError(
                f"scan {case} in {folder} has neither all of {[f'{case}-{m}.nii.gz' for m in MODALITIES]} "
                f"nor {case}.nii.gz"
            )
        if (subject, tp) not in times:
            raise ValueError(f"scan {case} has no time in {times_path} (columns subject_id,timepoint,time_years)")
        item: dict[str, Any] = {
            "case_id": case,
            "subject_id": subject,
            "timepoint": tp,
            "time_years": times[(subject, tp)],
            "image": img,
        }
        if (folder / f"{case}-seg.nii.gz").is_file():
            item["label"] = str(folder / f"{case}-seg.nii.gz")
        scans.append(item)
    return scans
