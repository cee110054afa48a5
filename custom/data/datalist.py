"""Build, write and read the datalist JSON (MONAI decathlon style) with a subject-level split.

The datalist is the one file every bundle reads::

    {"name": ..., "modalities": ["t1c", "t1n", "t2f", "t2w"],
     "training": [item, ...], "validation": [...], "test": [...], "skipped": [...]}

    item = {"case_id": "BraTS-MEN-00001-000", "subject_id": "BraTS-MEN-00001", "timepoint": 0,
            "time_years": 0.0,                       # only when known
            "image": [t1c, t1n, t2f, t2w],           # paths
            "label": seg}                            # only when a seg exists

Splitting is done per *subject*, never per scan: the scans of one patient at several timepoints
are strongly correlated, and a model that saw one of them in training would look better on the
others than it really is (subject-level leakage).

Note: ``monai.data.load_decathlon_datalist`` turns *any* string value that names an existing
path next to the JSON file into an absolute path; a ``case_id`` equal to a case folder name
is therefore rewritten when the datalist sits in the data root. :func:`read_datalist` restores
the non-path fields, so prefer it over the raw MONAI function.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from custom.constants import MODALITIES
from custom.data.case_record import CaseRecord
from custom.data.discovery import discover_cases, read_times_csv
from custom.data.errors import DataValidationError
from custom.data.validation import ValidationReport, validate_cases

__all__ = [
    "SPLIT_KEYS",
    "build_datalist",
    "case_to_item",
    "read_datalist",
    "split_subjects",
    "write_datalist",
    "write_skipped",
]

logger = logging.getLogger(__name__)

#: Datalist keys of the three splits, in the order of the ``split`` fractions.
SPLIT_KEYS: tuple[str, str, str] = ("training", "validation", "test")
_PATH_KEYS = ("image", "label")


def split_subjects(
    subject_ids: Sequence[str], fractions: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> list[list[str]]:
    """Partition subjects into ``len(fractions)`` groups, reproducibly.

    The unique subject ids are ordered by ``sha256(f"{seed}:{subject_id}")``, so the result depends
    only on the set of subjects and the seed, not on the discovery order, and adding or removing a
    subject changes the group of only a few others.
    Group sizes follow the largest-remainder rounding of ``fraction * n``; then every non-zero
    fraction that got no subject takes one from the largest group (while that leaves it >= 1).

    Args:
        subject_ids: subject ids (repeats are fine).
        fractions: non-negative, summing to a positive number (normalised to 1).
        seed: permutation seed.

    Returns:
        One sorted list of subject ids per fraction.
    """
    fracs = np.asarray([float(f) for f in fractions], dtype=np.float64)
    if fracs.ndim != 1 or fracs.size == 0 or np.any(~np.isfinite(fracs)) or np.any(fracs < 0) or fracs.sum() <= 0:
        raise ValueError(f"split fractions must be non-negative with a positive sum, got {list(fractions)}")
    fracs = fracs / fracs.sum()
    # rank subjects by a seeded hash of their id: independent of input order, and adding or removing
    # one subject moves only the few subjects near a split boundary (a permutation would reshuffle all)
    shuffled = sorted(set(subject_ids), key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    n = len(shuffled)

    raw = fracs * n
    counts = np.floor(raw).astype(int)
    remainder = n - int(counts.sum())
    # largest fractional part first; ties broken by position (stable)
    for idx in sorted(range(len(fracs)), key=lambda i: (-(raw[i] - counts[i]), i))[:remainder]:
        counts[idx] += 1
    for idx in range(len(fracs)):
        if fracs[idx] > 0 and counts[idx] == 0:
            donor = int(np.argmax(counts))
            if counts[donor] > 1:
                counts[donor] -= 1
                counts[idx] += 1

    groups: list[list[str]] = []
    start = 0
    for count in counts:
        groups.append(sorted(shuffled[start : start + int(count)]))
        start += int(count)
    return groups


def case_to_item(case: CaseRecord, time_years: float | None = None) -> dict[str, Any]:
    """Datalist item of one case (absolute-or-as-given paths; :func:`write_datalist` relativises)."""
    item: dict[str, Any] = {
        "case_id": case.case_id,
        "subject_id": case.subject_id,
        "timepoint": case.timepoint,
    }
    if time_years is not None:
        item["time_years"] = float(time_years)
    item["image"] = [str(case.images[m]) for m in MODALITIES]
    if case.seg is not None:
        item["label"] = str(case.seg)
    return item


def _ensure_writable(path: Path, what: str) -> None:
    """Create ``path``'s folder; raise a clean :class:`DataValidationError` when it cannot be written."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataValidationError(f"cannot create {path.parent} for the {what}: {err.strerror or err}") from None
    if not os.access(path.parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise DataValidationError(
            f"cannot write the {what} to {path}: permission denied; choose a folder you can write "
            "(the data folder itself may stay read-only)"
        )


def write_skipped(report: ValidationReport, path: str | Path) -> Path:
    """Write the skipped cases and their reasons (``.json`` -> JSON list, otherwise CSV)."""
    path = Path(path)
    _ensure_writable(path, "list of skipped cases")
    rows = [{"case_id": p.case_id, "path": p.path, "problem": p.message} for p in report.problems]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(rows, indent=2) + "\n", encoding="utf-8")
    else:
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=["case_id", "path", "problem"])
            writer.writeheader()
            writer.writerows(rows)
    return path


def build_datalist(
    data_dir: str | Path,
    times_csv: str | Path | None = None,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    require_seg: bool = False,
    skip_invalid: bool = False,
    skipped_out: str | Path | None = None,
    validate: bool = True,
    check_content: bool = True,
    workers: int = 1,
) -> dict[str, Any]:
    """Discover, validate and split a BraTS-MEN folder into a datalist dictionary.

    Args:
        data_dir: dataset root (see :func:`custom.data.discovery.discover_cases`).
        times_csv: optional ``subject_id,timepoint,time_years`` CSV; every kept case needs a time.
        split: fractions for ``training``, ``validation``, ``test`` (subject level).
        seed: split seed.
        require_seg: cases without a segmentation are invalid.
        skip_invalid: drop invalid cases (logged as a warning, listed under ``"skipped"`` and
            written to ``skipped_out`` when given) instead of raising.
        skipped_out: ``.csv`` or ``.json`` file for the skipped cases and their reasons.
        validate: run :func:`custom.data.validation.validate_cases` (discovery-level errors such as
            duplicated case ids are always raised).
        check_content: read voxel data during validation (see ``validate_cases``).
        workers: validation threads.

    Returns:
        The datalist dictionary (module docstring), items sorted by (subject_id, timepoint).

    Raises:
        DataValidationError: invalid data (without ``skip_invalid``), times CSV problems,
            duplicated case ids, or no case left.
    """
    if len(split) != len(SPLIT_KEYS):
        raise ValueError(f"split needs {len(SPLIT_KEYS)} fractions (training, validation, test), got {list(split)}")
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataValidationError(f"dataset folder does not exist or is not a folder: {data_dir}")
    # with skip_invalid a clash (same case in two folders) is a problem of that case only, skipped and listed
    cases = discover_cases(data_dir, clashes="record") if skip_invalid else discover_cases(data_dir)
    if not cases:
        raise DataValidationError(
            f"no BraTS-MEN case found under {data_dir} (expected files like "
            f"<case>/<case>-t1c.nii.gz with case = BraTS-MEN-SSSSS-TTT)"
        )

    skipped: list[dict[str, str]] = []
    warnings: list[dict[str, str]] = []
    if validate:
        report = validate_cases(cases, require_seg=require_seg, check_content=check_content, workers=workers)
        warnings = [{"case_id": w.case_id, "path": w.path, "warning": w.message} for w in report.warnings]
        if warnings:
            logger.warning("%d warning(s):\n%s", len(warnings), report.format_warnings())
        if not report.ok:
            if not skip_invalid:
                report.raise_if_any()
            bad = set(report.invalid_case_ids)
            cases = [c for c in cases if c.case_id not in bad]
            skipped = [{"case_id": p.case_id, "path": p.path, "problem": p.message} for p in report.problems]
            logger.warning("skipping %d invalid case(s):\n%s", len(bad), report.format())
            if skipped_out is not None:
                out = write_skipped(report, skipped_out)
                logger.warning("skipped cases written to %s", out)
    if not cases:
        raise DataValidationError(f"no valid case left under {data_dir} after skipping invalid ones")

    times = read_times_csv(times_csv, cases) if times_csv is not None else {}

    groups = split_subjects([c.subject_id for c in cases], split, seed)
    subject_to_split = {s: key for key, group in zip(SPLIT_KEYS, groups) for s in group}
    datalist: dict[str, Any] = {
        "name": f"BraTS-MEN datalist of {data_dir.name or data_dir}",
        "description": f"subject-level split {list(split)} with seed {seed}",
        "modalities": list(MODALITIES),
        **{key: [] for key in SPLIT_KEYS},
    }
    for case in sorted(cases, key=lambda c: (c.subject_id, c.timepoint)):
        item = case_to_item(case, times.get((case.subject_id, case.timepoint)))
        datalist[subject_to_split[case.subject_id]].append(item)
    datalist["skipped"] = skipped
    if warnings:
        datalist["warnings"] = warnings
    return datalist


def _relativise(value: Any, folder: Path) -> Any:
    if isinstance(value, list):
        return [_relativise(v, folder) for v in value]
    if not isinstance(value, (str, os.PathLike)):
        return value
    absolute = Path(os.path.abspath(value))
    try:
        return absolute.relative_to(folder).as_posix()
    except ValueError:
        return str(absolute)


def write_datalist(datalist: dict[str, Any], path: str | Path) -> Path:
    """Write ``datalist`` as JSON; image/label paths under the file's folder become relative to it.

    Paths outside that folder are written absolute, so the file works from any working directory
    with ``monai.data.load_decathlon_datalist`` (which joins relative paths to the file's folder).
    Relative input paths are taken relative to the current working directory.
    """
    path = Path(path)
    folder = Path(os.path.abspath(path.parent))
    out: dict[str, Any] = {}
    for key, value in datalist.items():
        if key in SPLIT_KEYS and isinstance(value, list):
            value = [
                (
                    {k: (_relativise(v, folder) if k in _PATH_KEYS else v) for k, v in item.items()}
                    if isinstance(item, dict)
                    else item
                )
                for item in value
            ]
        out[key] = value
    _ensure_writable(path, "datalist")
    path.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return path


def read_datalist(path: str | Path, split: str, keep_missing: bool = False) -> list[dict[str, Any]]:
    """Read one split of a datalist JSON with absolute, checked paths.

    ``keep_missing``: return items whose listed files do not exist instead of raising (for a later check that
    skips and lists them, as inference's ``skip_invalid`` does); each is logged as a warning.

    Uses ``monai.data.load_decathlon_datalist`` for the image/label paths and keeps every other
    field (``case_id``, ``time_years``, ...) exactly as written.

    Raises:
        FileNotFoundError: the datalist file does not exist.
        DataValidationError: invalid JSON (with line and column), missing split key (listing the
            keys present), or listed files that do not exist (naming each case and path).
    """
    from monai.data import load_decathlon_datalist

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"datalist file does not exist: {path}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataValidationError(
            f"datalist {path} is not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}"
        ) from None
    if not isinstance(raw, dict) or split not in raw:
        present = sorted(raw) if isinstance(raw, dict) else type(raw).__name__
        raise DataValidationError(f"datalist {path} has no split {split!r}; keys present: {present}")
    if not isinstance(raw[split], list) or not all(isinstance(i, dict) for i in raw[split]):
        raise DataValidationError(f"datalist {path}: {split!r} must be a list of objects")
    if not raw[split]:
        return []
    loaded = load_decathlon_datalist(path, is_segmentation=True, data_list_key=split)

    items: list[dict[str, Any]] = []
    missing: list[str] = []
    for index, (original, resolved) in enumerate(zip(raw[split], loaded)):
        item = dict(original)
        for key in _PATH_KEYS:
            if key in original:
                item[key] = resolved[key]
        name = item.get("case_id", f"item {index}")
        for key in _PATH_KEYS:
            for file in item.get(key, []) if isinstance(item.get(key), list) else [item.get(key)]:
                if file is not None and not os.path.exists(file):
                    missing.append(f"{name}: {key} file does not exist: {file}")
        items.append(item)
    if missing and keep_missing:
        logger.warning(
            "datalist %s (%s): %d listed file(s) do not exist:\n%s", path, split, len(missing), "\n".join(missing)
        )
    elif missing:
        raise DataValidationError(
            f"datalist {path} ({split}): {len(missing)} listed file(s) do not exist:\n" + "\n".join(missing)
        )
    return items
