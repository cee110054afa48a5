"""One test per bad input: the message names the case and the file, and no input file changes."""

from __future__ import annotations

import builtins
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from custom.data.discovery import discover_cases, read_times_csv
from custom.data.validation import DataValidationError, ValidationReport, validate_cases

MODS = ("t1c", "t1n", "t2f", "t2w")
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
CID = "BraTS-MEN-00001-000"


def make_case(root: Path, cid: str = CID, ext: str = ".nii.gz", seg: bool = True) -> Path:
    folder = root / cid
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for m in MODS:
        nib.save(nib.Nifti1Image(rng.random((12, 12, 8)).astype(np.float32) + 1.0, AFFINE), folder / f"{cid}-{m}{ext}")
    if seg:
        lab = np.zeros((12, 12, 8), np.uint8)
        lab[3:7, 3:7, 2:5] = 1
        lab[4:6, 4:6, 3:4] = 3
        lab[2, 2, 1] = 2
        nib.save(nib.Nifti1Image(lab, AFFINE), folder / f"{cid}-seg{ext}")
    return folder


def file_of(root: Path, kind: str, cid: str = CID, ext: str = ".nii.gz") -> Path:
    return root / cid / f"{cid}-{kind}{ext}"


def snapshot(root: Path) -> dict[str, tuple]:
    """Content hash + mtime (or link target) of every entry under root, without following links."""
    state: dict[str, tuple] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if os.path.islink(path):
                state[path] = ("link", os.readlink(path), st.st_mtime_ns)
            else:
                with open(path, "rb") as handle:
                    state[path] = (hashlib.sha256(handle.read()).hexdigest(), st.st_mtime_ns, st.st_mode)
    return state


def problems_for(root: Path, **kwargs) -> tuple[ValidationReport, str]:
    before = snapshot(root)
    report = validate_cases(discover_cases(root), **kwargs)
    assert snapshot(root) == before, "validation changed an input file"
    with pytest.raises(DataValidationError) as info:
        report.raise_if_any()
    assert isinstance(info.value, ValueError)
    return report, str(info.value)


def assert_named(message: str, path: Path, *words: str) -> None:
    line = next((ln for ln in message.splitlines() if str(path) in ln), None)
    assert line is not None, f"{path} not named in:\n{message}"
    assert CID in line or path.parent.name in line
    for word in words:
        assert word in line, f"{word!r} not in {line!r}"


def rewrite(path: Path, make: Callable[[], nib.Nifti1Image]) -> None:
    path.unlink()
    nib.save(make(), path)


# ------------------------------------------------------------------------------------------ valid data
def test_valid_cases_pass_including_nii_and_4d_singleton(tmp_path: Path) -> None:
    make_case(tmp_path)
    make_case(tmp_path, "BraTS-MEN-00002-003", ext=".nii")
    rewrite(file_of(tmp_path, "t2w"), lambda: nib.Nifti1Image(np.ones((12, 12, 8, 1), np.float32), AFFINE))
    before = snapshot(tmp_path)
    report = validate_cases(discover_cases(tmp_path), require_seg=True, workers=2)
    assert report.ok, report.format()
    report.raise_if_any()
    assert snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------- bad inputs
def test_missing_modality_names_expected_file(tmp_path: Path) -> None:
    make_case(tmp_path)
    file_of(tmp_path, "t2f").unlink()
    _, msg = problems_for(tmp_path)
    assert_named(msg, file_of(tmp_path, "t2f"), "missing modality t2f", f"{CID}-t2f.nii.gz")


@pytest.mark.parametrize("keep", [0.5, 0.05])
def test_truncated_gzip(tmp_path: Path, keep: float) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t1n")
    data = path.read_bytes()
    path.write_bytes(data[: max(10, int(len(data) * keep))])
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "truncated or corrupt")
    assert "Traceback" not in msg and len(msg.splitlines()) == 2


def test_truncated_uncompressed_nii_found_without_reading_voxels(tmp_path: Path) -> None:
    make_case(tmp_path, ext=".nii")
    path = file_of(tmp_path, "t2f", ext=".nii")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    _, msg = problems_for(tmp_path, check_content=False)
    assert_named(msg, path, "truncated file")


def test_corrupt_header(tmp_path: Path) -> None:
    make_case(tmp_path, ext=".nii")
    path = file_of(tmp_path, "t1c", ext=".nii")
    path.write_bytes(b"this is not a nifti file at all" * 3)
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "cannot read NIfTI header")


def test_2d_image(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t2w")
    rewrite(path, lambda: nib.Nifti1Image(np.ones((12, 12), np.float32), AFFINE))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "not a 3D volume", "(12, 12)")


def test_4d_image_with_several_volumes(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t1n")
    rewrite(path, lambda: nib.Nifti1Image(np.ones((12, 12, 8, 2), np.float32), AFFINE))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "not a 3D volume", "(12, 12, 8, 2)")


def test_mismatched_affine(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t2f")
    shifted = AFFINE.copy()
    shifted[0, 3] = 0.5
    rewrite(path, lambda: nib.Nifti1Image(np.ones((12, 12, 8), np.float32), shifted))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "affine differs from t1c")
    # below the 1e-3 mm tolerance: fine
    tiny = AFFINE.copy()
    tiny[0, 3] = 5e-4
    rewrite(path, lambda: nib.Nifti1Image(np.ones((12, 12, 8), np.float32), tiny))
    assert validate_cases(discover_cases(tmp_path)).ok


def test_mismatched_shape(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t2w")
    rewrite(path, lambda: nib.Nifti1Image(np.ones((12, 12, 9), np.float32), AFFINE))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "shape (12, 12, 9) differs from t1c shape (12, 12, 8)")


def test_nan_voxels_counted(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t1c")
    vol = np.ones((12, 12, 8), np.float32)
    vol[0, 0, :3] = np.nan
    vol[1, 1, 1] = np.inf
    rewrite(path, lambda: nib.Nifti1Image(vol, AFFINE))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "4 non-finite voxel(s)")


def test_all_zero_image(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t1n")
    rewrite(path, lambda: nib.Nifti1Image(np.zeros((12, 12, 8), np.float32), AFFINE))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "all zeros")


def test_missing_seg_only_when_required(tmp_path: Path) -> None:
    make_case(tmp_path, seg=False)
    assert validate_cases(discover_cases(tmp_path)).ok
    _, msg = problems_for(tmp_path, require_seg=True)
    assert_named(msg, file_of(tmp_path, "seg"), "missing segmentation", f"{CID}-seg.nii.gz")


def test_wrong_label_values_listed(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "seg")
    lab = np.zeros((12, 12, 8), np.uint8)
    lab[1, 1, 1], lab[2, 2, 2], lab[3, 3, 3] = 1, 4, 7
    rewrite(path, lambda: nib.Nifti1Image(lab, AFFINE))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "labels outside {0,1,2,3}: 4, 7")


def test_seg_shape_mismatch(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "seg")
    rewrite(path, lambda: nib.Nifti1Image(np.zeros((10, 12, 8), np.uint8), AFFINE))
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "shape (10, 12, 8) differs from t1c")


def test_unreadable_file_permission_denied(tmp_path: Path, monkeypatch) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t2w")
    mode = path.stat().st_mode
    before = snapshot(tmp_path)
    os.chmod(path, 0)
    try:
        readable = os.access(path, os.R_OK)
        if readable:  # running as root: permission bits are bypassed, so emulate the kernel's refusal
            real_open = builtins.open

            def refusing_open(file, *args, **kwargs):
                if os.fspath(file) == os.fspath(path):
                    raise PermissionError(13, "Permission denied", os.fspath(file))
                return real_open(file, *args, **kwargs)

            monkeypatch.setattr(builtins, "open", refusing_open)
        report = validate_cases(discover_cases(tmp_path))
        monkeypatch.undo()
    finally:
        os.chmod(path, mode)
    assert snapshot(tmp_path) == before
    assert [p.path for p in report.problems] == [str(path)]
    assert "permission denied" in report.problems[0].message and report.problems[0].case_id == CID


def test_symlink_loop(tmp_path: Path) -> None:
    make_case(tmp_path)
    path = file_of(tmp_path, "t1c")
    path.unlink()
    os.symlink(path.name, path)  # points to itself
    _, msg = problems_for(tmp_path)
    assert_named(msg, path, "symbolic link loop")


def test_every_problem_of_every_case_is_listed(tmp_path: Path) -> None:
    make_case(tmp_path)
    make_case(tmp_path, "BraTS-MEN-00002-000")
    file_of(tmp_path, "t1n").unlink()
    file_of(tmp_path, "t2w", "BraTS-MEN-00002-000").unlink()
    rewrite(
        file_of(tmp_path, "t1c", "BraTS-MEN-00002-000"),
        lambda: nib.Nifti1Image(np.zeros((12, 12, 8), np.float32), AFFINE),
    )
    report, msg = problems_for(tmp_path, workers=2)
    assert len(report.problems) == 3 and report.invalid_case_ids == [CID, "BraTS-MEN-00002-000"]
    for p in report.problems:
        assert str(p) in msg


# --------------------------------------------------------------------------- duplicates and times CSV
def test_duplicated_case_in_two_folders(tmp_path: Path) -> None:
    make_case(tmp_path / "a")
    make_case(tmp_path / "b")
    before = snapshot(tmp_path)
    with pytest.raises(DataValidationError) as info:
        discover_cases(tmp_path)
    assert str(tmp_path / "a" / CID) in str(info.value) and str(tmp_path / "b" / CID) in str(info.value)
    assert snapshot(tmp_path) == before


def test_duplicated_nii_and_nii_gz(tmp_path: Path) -> None:
    make_case(tmp_path)
    gz = file_of(tmp_path, "t1c")
    plain = file_of(tmp_path, "t1c", ext=".nii")
    nib.save(nib.load(gz), plain)
    before = snapshot(tmp_path)
    with pytest.raises(DataValidationError) as info:
        discover_cases(tmp_path)
    assert str(gz) in str(info.value) and str(plain) in str(info.value) and "duplicated t1c" in str(info.value)
    assert snapshot(tmp_path) == before


def _times(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "times.csv"
    path.write_text(text)
    return path


def test_times_csv_reads_both_subject_forms(tmp_path: Path) -> None:
    path = _times(tmp_path, "subject_id,timepoint,time_years,site\nBraTS-MEN-00001,000,0.0,x\n00001,1,1.25,y\n")
    assert read_times_csv(path) == {("BraTS-MEN-00001", 0): 0.0, ("BraTS-MEN-00001", 1): 1.25}


def test_times_csv_missing_time_for_case_on_disk(tmp_path: Path) -> None:
    make_case(tmp_path / "d")
    make_case(tmp_path / "d", "BraTS-MEN-00001-001")
    path = _times(tmp_path, "subject_id,timepoint,time_years\n00001,0,0.0\n")
    before = snapshot(tmp_path)
    with pytest.raises(DataValidationError, match="no time for case BraTS-MEN-00001-001"):
        read_times_csv(path, discover_cases(tmp_path / "d"))
    assert snapshot(tmp_path) == before


def test_times_csv_non_monotonic_names_subject_and_timepoints(tmp_path: Path) -> None:
    path = _times(tmp_path, "subject_id,timepoint,time_years\n00007,0,0.0\n00007,1,2.0\n00007,2,1.5\n00008,0,0\n")
    before = snapshot(tmp_path)
    with pytest.raises(DataValidationError) as info:
        read_times_csv(path)
    msg = str(info.value)
    assert "BraTS-MEN-00007" in msg and "timepoint 1" in msg and "timepoint 2" in msg and "00008" not in msg
    assert snapshot(tmp_path) == before


def test_times_csv_missing_column_non_numeric_and_duplicates(tmp_path: Path) -> None:
    with pytest.raises(DataValidationError, match="missing column.*time_years"):
        read_times_csv(_times(tmp_path, "subject_id,timepoint,years\n00001,0,0\n"))
    with pytest.raises(DataValidationError, match="line 3: cannot parse"):
        read_times_csv(_times(tmp_path, "subject_id,timepoint,time_years\n00001,0,0\n00001,1,soon\n"))
    with pytest.raises(DataValidationError, match="line 3: duplicated row for BraTS-MEN-00001 timepoint 0.*line 2"):
        read_times_csv(_times(tmp_path, "subject_id,timepoint,time_years\n00001,0,0\nBraTS-MEN-00001,0,0\n"))
    with pytest.raises(DataValidationError, match="not finite"):
        read_times_csv(_times(tmp_path, "subject_id,timepoint,time_years\n00001,0,nan\n"))
