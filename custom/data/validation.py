"""Check discovered cases up front, before any training job touches them.

Every problem of every case is collected (not just the first) so that a user fixes the whole
dataset in one pass. Each problem names the case and the file, in one line, without a library
traceback. Inputs are only ever opened read-only: nothing here writes, renames or touches a file.

Checks per case (reference geometry = the case's t1c, or its first readable modality):

* a modality is missing (the expected file name is given); the seg is missing when required;
* a file cannot be reached: broken link, symbolic-link loop (``ELOOP``), permission denied;
* the gzip stream or NIfTI header is truncated/corrupt (nibabel, gzip, zlib and EOF errors become
  one-line messages); with ``check_content`` the whole gzip stream is decompressed, so its CRC-32 is checked;
* the header geometry is unusable: non-finite affine or pixdim, a degenerate (singular) affine, qform and
  sform both set but disagreeing (:mod:`custom.data.nifti_checks`);
* problems found by discovery (file names in the wrong letter case, a file kind found twice);
* the image is not 3D (2D, or 4D with more than one volume; a trailing singleton axis is fine);
* shape or affine (absolute tolerance 1e-3 mm) differ from the reference;
* with ``check_content``: non-finite voxels (counted), all-zero images, seg labels outside
  ``{0, 1, 2, 3}`` (listed). This needs the voxel data and is the slow part (~0.2 s per volume).

Accepted as they are (MONAI's loader reads them the same way): left-handed affines (e.g. LAS, the loader
reorients to RAS), ``scl_slope``/``scl_inter`` scaling (applied on reading by nibabel and MONAI alike), and
trailing singleton axes (``X,Y,Z,1`` or ``X,Y,Z,1,1``). Warnings (listed, not refused): an image whose
background is not zero.
"""

from __future__ import annotations

import errno
import gzip
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from custom.constants import LABELS, MODALITIES
from custom.data.case_record import CaseRecord
from custom.data.errors import DataValidationError
from custom.data.nifti_checks import background_warning, gzip_problem, header_problems

__all__ = ["AFFINE_TOLERANCE_MM", "DataValidationError", "Problem", "ValidationReport", "validate_cases"]

#: Largest absolute difference (mm) between two affines still considered the same geometry.
AFFINE_TOLERANCE_MM: float = 1e-3


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one file of one case."""

    case_id: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.case_id}: {self.path}: {self.message}"


@dataclass
class ValidationReport:
    """Outcome of :func:`validate_cases`.

    Attributes:
        case_ids: every case that was checked, in input order.
        problems: every problem found.
        warnings: things accepted but worth knowing (e.g. a non-zero background), one per file.
    """

    case_ids: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def invalid_case_ids(self) -> list[str]:
        """Cases with at least one problem, in input order."""
        bad = {p.case_id for p in self.problems}
        return [c for c in self.case_ids if c in bad]

    def problems_of(self, case_id: str) -> list[Problem]:
        return [p for p in self.problems if p.case_id == case_id]

    def format(self) -> str:
        """Human-readable listing: a count line, then one problem per line."""
        if self.ok:
            return f"{len(self.case_ids)} case(s) checked, no problems"
        head = f"{len(self.problems)} problem(s) in {len(self.invalid_case_ids)} of " f"{len(self.case_ids)} case(s):"
        return "\n".join([head, *(f"  {p}" for p in self.problems)])

    def format_warnings(self) -> str:
        """One warning per line (empty string when there is none)."""
        return "\n".join(f"  {w}" for w in self.warnings)

    def raise_if_any(self) -> None:
        """Raise :class:`DataValidationError` listing every problem, or do nothing."""
        if self.problems:
            raise DataValidationError(self.format())


def _reach(path: Path) -> str | None:
    """Return why ``path`` cannot be opened for reading, or ``None``; opens read-only, reads 1 byte."""
    try:
        os.stat(path)
    except OSError as err:
        if err.errno == errno.ELOOP:
            return "symbolic link loop (too many levels of symbolic links); fix or remove the link"
        if err.errno == errno.ENOENT:
            return "file does not exist (broken symbolic link?)"
        if err.errno == errno.EACCES:
            return "not readable: permission denied"
        return f"cannot stat file: {err.strerror or err}"
    if not os.path.isfile(path):
        return "not a regular file"
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except PermissionError:
        return "not readable: permission denied"
    except OSError as err:
        return f"not readable: {err.strerror or err}"
    return None


_READ_ERRORS = (EOFError, OSError, ValueError, zlib.error, gzip.BadGzipFile, RuntimeError, MemoryError)


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or "no message"
    return f"{type(err).__name__}: {text}"


@dataclass
class _FileInfo:
    shape: tuple[int, ...] | None = None
    affine: np.ndarray | None = None
    data: np.ndarray | None = None
    warnings: list[str] = field(default_factory=list)


def _load(path: Path, check_content: bool) -> tuple[_FileInfo, list[str]]:
    """Read header (and voxels when ``check_content``) of one NIfTI file; return info and messages."""
    import nibabel as nib  # local: keeps module import cheap
    from nibabel.filebasedimages import ImageFileError

    info = _FileInfo()
    why = _reach(path)
    if why is not None:
        return info, [why]
    try:
        img = nib.load(str(path), mmap=False)
    except (ImageFileError, *_READ_ERRORS) as err:
        return info, [f"cannot read NIfTI header (truncated or corrupt file?): {_one_line(err)}"]
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) != 3:
        return info, [f"not a 3D volume: shape {tuple(img.shape)} (expected 3 spatial axes, one volume)"]
    geometry = header_problems(img)
    if geometry:
        return info, geometry
    info.shape = shape
    info.affine = np.asarray(img.affine, dtype=np.float64)
    if path.name.endswith(".nii"):  # uncompressed: a cheap size check catches truncation without reading
        header = img.header
        offset = int(getattr(img.dataobj, "offset", header.get_data_offset()))  # the loaded header reports 0
        needed = offset + int(np.prod(img.shape)) * header.get_data_dtype().itemsize
        size = os.stat(path).st_size
        if size < needed:
            info.shape = None
            return info, [f"truncated file: {size} bytes, header promises {needed} bytes of data"]
    if check_content:
        if path.name.endswith(".gz"):
            corrupt = gzip_problem(path)
            if corrupt is not None:
                info.shape = None
                return info, [corrupt]
        try:
            info.data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
        except (ImageFileError, *_READ_ERRORS) as err:
            info.shape = None
            return info, [f"cannot read voxel data (truncated or corrupt file?): {_one_line(err)}"]
    return info, []


def _expected_name(case: CaseRecord, kind: str) -> Path:
    return case.folder / f"{case.case_id}-{kind}.nii.gz"


def _check_case(case: CaseRecord, require_seg: bool, check_content: bool) -> tuple[list[Problem], list[Problem]]:
    """Every problem and warning of one case, in a stable order (discovery issues, modalities, then seg)."""
    problems: list[Problem] = []
    warnings: list[Problem] = []

    def add(path: Path | str, message: str) -> None:
        problems.append(Problem(case.case_id, str(path), message))

    for path, message in case.issues:
        add(path, message)

    infos: dict[str, _FileInfo] = {}
    for modality in MODALITIES:
        path = case.images.get(modality)
        if path is None:
            expected = _expected_name(case, modality)
            add(expected, f"missing modality {modality}: expected file {expected.name} (or .nii)")
            continue
        info, messages = _load(Path(path), check_content)
        for message in messages:
            add(path, message)
        if info.data is not None:
            n_bad = int(np.count_nonzero(~np.isfinite(info.data)))
            if n_bad:
                add(path, f"{n_bad} non-finite voxel(s) (NaN/Inf) of {info.data.size}")
            elif not np.any(info.data):
                add(path, "image is all zeros")
            else:
                warning = background_warning(info.data)
                if warning is not None:
                    warnings.append(Problem(case.case_id, str(path), warning))
            info.data = None  # free memory early
        infos[modality] = info

    reference = next((m for m in MODALITIES if infos.get(m) and infos[m].shape is not None), None)

    def compare(kind: str, path: Path, info: _FileInfo) -> None:
        if reference is None or kind == reference or info.shape is None:
            return
        ref = infos[reference]
        if info.shape != ref.shape:
            add(path, f"shape {info.shape} differs from {reference} shape {ref.shape}")
        elif not np.allclose(info.affine, ref.affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
            diff = float(np.max(np.abs(info.affine - ref.affine)))
            add(
                path,
                f"affine differs from {reference} affine by up to {diff:.4g} mm (tolerance {AFFINE_TOLERANCE_MM} mm)",
            )

    for modality in MODALITIES:
        if modality in infos:
            compare(modality, case.images[modality], infos[modality])

    if case.seg is None:
        if require_seg:
            expected = _expected_name(case, "seg")
            add(expected, f"missing segmentation: expected file {expected.name} (or .nii)")
    else:
        info, messages = _load(Path(case.seg), check_content)
        for message in messages:
            add(case.seg, message)
        if info.data is not None:
            finite = info.data[np.isfinite(info.data)]
            n_bad = info.data.size - finite.size
            if n_bad:
                add(case.seg, f"{n_bad} non-finite voxel(s) (NaN/Inf) in segmentation")
            values = np.unique(finite)
            wrong = [v for v in values.tolist() if v not in LABELS]
            if wrong:
                shown = ", ".join(f"{v:g}" for v in wrong[:20]) + (" ..." if len(wrong) > 20 else "")
                add(case.seg, f"segmentation labels outside {{0,1,2,3}}: {shown}")
            info.data = None
        compare("seg", Path(case.seg), info)
    return problems, warnings


def validate_cases(
    cases: Iterable[CaseRecord],
    require_seg: bool = False,
    check_content: bool = True,
    workers: int = 1,
) -> ValidationReport:
    """Check every case and collect all problems (never raises for bad data; see ``raise_if_any``).

    Args:
        cases: records from :func:`custom.data.discovery.discover_cases`.
        require_seg: report cases without a segmentation.
        check_content: also read the voxels (non-finite, all-zero, label checks and truncated
            gzip streams); header-only checks when ``False``.
        workers: number of threads (zlib decompression releases the GIL, so threads help).

    Returns:
        A :class:`ValidationReport` with the problems in case order.
    """
    case_list: Sequence[CaseRecord] = list(cases)
    report = ValidationReport(case_ids=[c.case_id for c in case_list])
    if workers > 1 and len(case_list) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(lambda c: _check_case(c, require_seg, check_content), case_list))
    else:
        results = [_check_case(c, require_seg, check_content) for c in case_list]
    for problems, warnings in results:
        report.problems.extend(problems)
        report.warnings.extend(warnings)
    return report
