"""Find BraTS-MEN cases on disk and read their acquisition times.

Layout (BraTS-MEN): ``<root>/<case>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz`` (or ``.nii``) with
``case = BraTS-MEN-SSSSS-TTT`` (5-digit subject, 3-digit timepoint). Discovery walks ``root``
recursively, keeps only files whose *name* matches that pattern and ignores everything else
(README files, masks from other tools, hidden files). It does not open the images: that is
:mod:`custom.data.validation`'s job, so discovery is fast and never fails on a corrupt file.

A case's files must live in one folder and each modality must appear once: the same case in two
folders, or ``-t1c.nii`` next to ``-t1c.nii.gz``, is ambiguous and raised as an error naming both
paths rather than silently picking one.
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from custom.constants import MODALITIES
from custom.data.validation import DataValidationError

__all__ = [
    "CASE_ID_PATTERN",
    "FILE_PATTERN",
    "CaseRecord",
    "discover_cases",
    "normalise_subject_id",
    "read_times_csv",
]

#: ``BraTS-MEN-SSSSS-TTT``: group 1 = 5-digit subject number, group 2 = 3-digit timepoint.
CASE_ID_PATTERN = re.compile(r"BraTS-MEN-(\d{5})-(\d{3})")

#: A case file name: ``<case>-<kind>.nii`` or ``<case>-<kind>.nii.gz`` with kind a modality or ``seg``.
FILE_PATTERN = re.compile(
    r"^(?P<case>BraTS-MEN-(?P<subject>\d{5})-(?P<tp>\d{3}))-(?P<kind>" + "|".join(MODALITIES) + r"|seg)"
    r"\.nii(?:\.gz)?$"
)

_SUBJECT_PREFIX = "BraTS-MEN-"


@dataclass
class CaseRecord:
    """One scan (a subject at a timepoint) found on disk.

    Attributes:
        case_id: ``BraTS-MEN-SSSSS-TTT``.
        subject_id: ``BraTS-MEN-SSSSS``.
        timepoint: ``int(TTT)``.
        images: modality name -> path, only for the modalities present on disk.
        seg: segmentation path, or ``None`` when absent.
        folder: the folder holding the case's files.
    """

    case_id: str
    subject_id: str
    timepoint: int
    images: dict[str, Path] = field(default_factory=dict)
    seg: Path | None = None
    folder: Path = Path(".")

    def files(self) -> list[Path]:
        """All files of the case (images in :data:`MODALITIES` order, then the seg)."""
        out = [self.images[m] for m in MODALITIES if m in self.images]
        if self.seg is not None:
            out.append(self.seg)
        return out


def discover_cases(root: str | Path) -> list[CaseRecord]:
    """List the BraTS-MEN cases under ``root``, sorted by (subject_id, timepoint).

    Args:
        root: dataset folder, searched recursively (directory symlinks are not followed, so a
            symlinked directory loop cannot hang discovery).

    Returns:
        One :class:`CaseRecord` per case id; missing modalities are simply absent from
        ``images`` (validation reports them with the expected file name).

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a directory.
        DataValidationError: a case id appears in two folders or a file kind appears twice
            (e.g. ``.nii`` and ``.nii.gz``); the message names both paths for every clash.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder does not exist or is not a directory: {root}")

    found: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        for name in sorted(filenames):
            match = FILE_PATTERN.match(name)
            if match is None:
                continue
            found[match["case"]][match["kind"]].append(Path(dirpath) / name)

    clashes: list[str] = []
    cases: list[CaseRecord] = []
    for case_id, kinds in found.items():
        for kind, paths in sorted(kinds.items()):
            if len(paths) > 1:
                listed = " and ".join(str(p) for p in paths)
                clashes.append(f"{case_id}: duplicated {kind} file: {listed}")
        folders = sorted({p.parent for paths in kinds.values() for p in paths})
        if len(folders) > 1:
            listed = " and ".join(str(f) for f in folders)
            clashes.append(f"{case_id}: duplicated case id, files found in several folders: {listed}")
        subject_num, tp = CASE_ID_PATTERN.fullmatch(case_id).groups()  # type: ignore[union-attr]
        cases.append(
            CaseRecord(
                case_id=case_id,
                subject_id=_SUBJECT_PREFIX + subject_num,
                timepoint=int(tp),
                images={m: kinds[m][0] for m in MODALITIES if m in kinds},
                seg=kinds["seg"][0] if "seg" in kinds else None,
                folder=folders[0],
            )
        )
    if clashes:
        raise DataValidationError(
            f"{len(clashes)} duplicated case file(s) under {root}:\n" + "\n".join(sorted(clashes))
        )
    return sorted(cases, key=lambda c: (c.subject_id, c.timepoint))


def normalise_subject_id(raw: str) -> str:
    """``"BraTS-MEN-00001"`` or ``"00001"`` (or ``"1"``) -> ``"BraTS-MEN-00001"``.

    Raises:
        ValueError: anything else.
    """
    text = raw.strip()
    if re.fullmatch(r"BraTS-MEN-\d{5}", text):
        return text
    if re.fullmatch(r"\d{1,5}", text):
        return f"{_SUBJECT_PREFIX}{int(text):05d}"
    raise ValueError(f"subject id {raw!r} is neither 'BraTS-MEN-SSSSS' nor a subject number")


def read_times_csv(path: str | Path, cases: Iterable[CaseRecord] | None = None) -> dict[tuple[str, int], float]:
    """Read acquisition times (years since a subject-specific origin) from a CSV file.

    Columns ``subject_id,timepoint,time_years`` (extra columns are ignored); ``subject_id`` may be
    ``BraTS-MEN-00001`` or ``00001``; ``timepoint`` an integer (``000`` or ``0``).

    Args:
        path: the CSV file.
        cases: when given, every case must have a time (the error names each case lacking one).

    Returns:
        ``{(subject_id, timepoint): time_years}``.

    Raises:
        DataValidationError: listing every problem found, one per line: missing columns,
            unparsable or non-finite values (with the row number), duplicated (subject, timepoint)
            rows, times not strictly increasing with the timepoint within a subject (naming the
            subject and the offending timepoints), cases on disk without a time.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"times CSV does not exist: {path}")
    required = ("subject_id", "timepoint", "time_years")
    with path.open("r", newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in required if c not in header]
        if missing:
            raise DataValidationError(
                f"times CSV {path}: missing column(s) {', '.join(missing)}; "
                f"expected header 'subject_id,timepoint,time_years', found {header}"
            )
        rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]

    problems: list[str] = []
    times: dict[tuple[str, int], float] = {}
    first_row: dict[tuple[str, int], int] = {}
    for line_no, row in enumerate(rows, start=2):  # line 1 is the header
        try:
            subject = normalise_subject_id(row["subject_id"])
            timepoint = int(row["timepoint"].strip())
            value = float(row["time_years"].strip())
        except ValueError as err:
            problems.append(f"times CSV {path} line {line_no}: cannot parse row {row}: {err}")
            continue
        if not math.isfinite(value):
            problems.append(f"times CSV {path} line {line_no}: time_years is not finite ({value})")
            continue
        key = (subject, timepoint)
        if key in times:
            problems.append(
                f"times CSV {path} line {line_no}: duplicated row for {subject} timepoint {timepoint} "
                f"(first given on line {first_row[key]})"
            )
            continue
        times[key] = value
        first_row[key] = line_no

    per_subject: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for (subject, timepoint), value in times.items():
        per_subject[subject].append((timepoint, value))
    for subject in sorted(per_subject):
        series = sorted(per_subject[subject])
        for (tp_a, t_a), (tp_b, t_b) in zip(series, series[1:]):
            if not t_b > t_a:
                problems.append(
                    f"times CSV {path}: times of {subject} are not increasing with the timepoint: "
                    f"timepoint {tp_a} at {t_a} y, timepoint {tp_b} at {t_b} y"
                )

    if cases is not None:
        for case in cases:
            if (case.subject_id, case.timepoint) not in times:
                problems.append(
                    f"times CSV {path}: no time for case {case.case_id} "
                    f"(subject {case.subject_id}, timepoint {case.timepoint}) found in {case.folder}"
                )

    if problems:
        raise DataValidationError(f"{len(problems)} problem(s) in times CSV {path}:\n" + "\n".join(problems))
    return times
