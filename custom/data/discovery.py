"""Find BraTS-MEN cases on disk and read their acquisition times.

Layout (BraTS-MEN): ``<root>/<case>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz`` (or ``.nii``) with
``case = BraTS-MEN-SSSSS-TTT`` (5-digit subject, 3-digit timepoint). Discovery walks ``root``
recursively, keeps only files whose *name* matches that pattern and ignores everything else
(README files, masks from other tools, hidden files). It does not open the images: that is
:mod:`custom.data.validation`'s job, so discovery is fast and never fails on a corrupt file.

Symbolic links to folders are followed (hospital exports often link case folders in from elsewhere);
a link that points back to one of its own parent folders is a loop and is reported, naming the link.
A file whose name matches the pattern only when the letter case is ignored (``brats-men-00001-000-t1c.nii.gz``,
``...-T1C.NII.GZ``) is neither used nor silently ignored: it is a problem of its case (upper-cased id), naming the
file and the expected name.

A case's files must live in one folder and each modality must appear once: the same case in two
folders (for instance a segmentation copy under ``derivatives/``), or ``-t1c.nii`` next to ``-t1c.nii.gz``,
is ambiguous and is reported naming both paths rather than silently picking one: raised at once
(``clashes="raise"``, the default), or recorded as a problem of that case only (``clashes="record"``,
what ``skip_invalid`` uses, so the rest of the dataset goes through and the case is listed as skipped).
"""

from __future__ import annotations

import csv
import math
import os
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from custom.constants import MODALITIES
from custom.data.case_record import CaseRecord
from custom.data.errors import DataValidationError

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

#: The same, ignoring letter case (names that differ only in case are reported, not used).
_LOOSE_FILE_PATTERN = re.compile(
    r"^BraTS-MEN-(?P<subject>\d{5})-(?P<tp>\d{3})-(?P<kind>" + "|".join(MODALITIES) + r"|seg)(?P<ext>\.nii(?:\.gz)?)$",
    re.IGNORECASE,
)

_SUBJECT_PREFIX = "BraTS-MEN-"


def _walk(root: Path, loops: list[str]) -> Iterable[tuple[Path, list[str]]]:
    """``(folder, file names)`` under ``root``, following folder links but not link loops (recorded in ``loops``)."""
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        here = os.path.realpath(dirpath)
        kept = []
        for name in sorted(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                target = os.path.realpath(full)
                if here == target or here.startswith(target.rstrip(os.sep) + os.sep):
                    loops.append(f"{full}: symbolic link to its own parent folder {target} (a loop); not followed")
                    continue
            kept.append(name)
        dirnames[:] = kept
        yield Path(dirpath), sorted(filenames)


def discover_cases(root: str | Path, clashes: str = "raise") -> list[CaseRecord]:
    """List the BraTS-MEN cases under ``root``, sorted by (subject_id, timepoint).

    Args:
        root: dataset folder, searched recursively (folder links are followed; loops are not).
        clashes: ``"raise"``: a case id in two folders, a file kind twice, or a folder link loop raises at once;
            ``"record"``: they become :attr:`CaseRecord.issues` of the case (validation reports them, so
            ``skip_invalid`` can skip just that case); a link loop still raises.

    Returns:
        One :class:`CaseRecord` per case id; missing modalities are simply absent from
        ``images`` (validation reports them with the expected file name). Names that match only when the
        letter case is ignored are in the case's ``issues``.

    Raises:
        FileNotFoundError: ``root`` does not exist or is not a directory.
        DataValidationError: (``clashes="raise"``) a case id appears in two folders or a file kind appears
            twice (e.g. ``.nii`` and ``.nii.gz``); the message names both paths for every clash; a folder link loop.
    """
    if clashes not in ("raise", "record"):
        raise ValueError(f"clashes must be 'raise' or 'record', got {clashes!r}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder does not exist or is not a directory: {root}")

    found: dict[str, dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    misnamed: dict[str, list[tuple[Path, str]]] = defaultdict(list)
    loops: list[str] = []
    for folder, filenames in _walk(root, loops):
        for name in filenames:
            match = FILE_PATTERN.match(name)
            if match is not None:
                found[match["case"]][match["kind"]].append(folder / name)
                continue
            loose = _LOOSE_FILE_PATTERN.match(name)
            if loose is not None:
                case_id = f"BraTS-MEN-{loose['subject']}-{loose['tp']}"
                expected = f"{case_id}-{loose['kind'].lower()}{loose['ext'].lower()}"
                misnamed[case_id].append(
                    (folder / name, f"file name differs in letter case from the BraTS-MEN form: rename it {expected}")
                )
    if loops:
        raise DataValidationError(f"{len(loops)} folder link loop(s) under {root}:\n" + "\n".join(loops))

    problems: list[str] = []
    cases: list[CaseRecord] = []
    for case_id in sorted(set(found) | set(misnamed)):
        kinds = found.get(case_id, {})
        issues: list[tuple[Path, str]] = list(misnamed.get(case_id, []))
        for kind, paths in sorted(kinds.items()):
            if len(paths) > 1:
                listed = " and ".join(str(p) for p in paths)
                issues.append((paths[1], f"duplicated {kind} file: {listed}"))
        folders = sorted({p.parent for paths in kinds.values() for p in paths})
        if len(folders) > 1:
            listed = " and ".join(str(f) for f in folders)
            issues.append((folders[1], f"duplicated case id, files found in several folders: {listed}"))
        problems += [f"{case_id}: {message}" for path, message in issues if not message.startswith("file name")]
        subject_num, tp = CASE_ID_PATTERN.fullmatch(case_id).groups()  # type: ignore[union-attr]
        cases.append(
            CaseRecord(
                case_id=case_id,
                subject_id=_SUBJECT_PREFIX + subject_num,
                timepoint=int(tp),
                images={m: kinds[m][0] for m in MODALITIES if m in kinds},
                seg=kinds["seg"][0] if "seg" in kinds else None,
                folder=folders[0] if folders else misnamed[case_id][0][0].parent,
                issues=issues,
            )
        )
    if problems and clashes == "raise":
        raise DataValidationError(
            f"{len(problems)} duplicated case file(s) under {root}:\n" + "\n".join(sorted(problems))
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
