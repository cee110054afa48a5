"""Bad input at the data layer: each test one kind, asserting the named error, the listed skip or the acceptance.

Every test hashes the data folder before and after: nothing is ever written into it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from bad_input_helpers import AFFINE, file_of, make_case, make_cohort, regzip_stored, snapshot, volume

from custom.data.datalist import build_datalist, write_datalist
from custom.data.datalist_check import StaleDatalistError
from custom.data.dataset import prepare_datalist
from custom.data.discovery import discover_cases
from custom.data.errors import DataValidationError
from custom.data.validation import validate_cases


def _problem_lines(root: Path, **kwargs: object) -> list[str]:
    report = validate_cases(discover_cases(root), **kwargs)
    return [str(p) for p in report.problems]


def _line_naming(lines: list[str], path: Path) -> str:
    found = [ln for ln in lines if str(path) in ln]
    assert found, f"{path} not named in {lines}"
    return found[0]


# ------------------------------------------------------------------------------------------- integrity
def test_gzip_with_flipped_bytes_is_named_although_nibabel_reads_it(tmp_path: Path) -> None:
    cid, _ = make_case(tmp_path)
    path = file_of(tmp_path, cid, "t1c")
    regzip_stored(path)
    blob = bytearray(path.read_bytes())
    middle = len(blob) // 2
    blob[middle : middle + 4] = bytes(b ^ 0xFF for b in blob[middle : middle + 4])
    path.write_bytes(bytes(blob))
    np.asarray(nib.load(str(path)).dataobj)  # the premise: nibabel alone decodes it without complaint
    before = snapshot(tmp_path)
    lines = _problem_lines(tmp_path)
    line = _line_naming(lines, path)
    assert line.startswith(cid) and "CRC check failed" in line and "corrupt gzip stream" in line
    assert len(lines) == 1
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------------------------ datalist reuse
def _built(root: Path, out: Path) -> Path:
    return write_datalist(build_datalist(root, split=(0.5, 0.25, 0.25)), out / "datalist.json")


def test_stale_datalist_with_added_case_is_refused_naming_it(tmp_path: Path) -> None:
    root, out = tmp_path / "data", tmp_path / "out"
    make_cohort(root, subjects=4)
    dl = _built(root, out)
    added, folder = make_case(root, subject=9)
    before = snapshot(root)
    with pytest.raises(StaleDatalistError) as info:
        prepare_datalist(str(root), str(dl), output_dir=str(out))
    message = str(info.value)
    assert f"{added}: in {folder} but not in the datalist (added since)" in message
    assert str(dl) in message and "python -m custom datalist" in message
    assert snapshot(root) == before


def test_stale_datalist_with_removed_case_is_refused_naming_it(tmp_path: Path) -> None:
    root, out = tmp_path / "data", tmp_path / "out"
    cids = make_cohort(root, subjects=4)
    dl = _built(root, out)
    for f in (root / cids[1]).iterdir():
        f.unlink()
    (root / cids[1]).rmdir()
    with pytest.raises(StaleDatalistError, match=f"{cids[1]}: listed in the datalist but no longer found under"):
        prepare_datalist(str(root), str(dl), output_dir=str(out))


def test_matching_datalist_is_reused_unchanged(tmp_path: Path) -> None:
    root, out = tmp_path / "data", tmp_path / "out"
    make_cohort(root, subjects=4)
    dl = _built(root, out)
    text = dl.read_text()
    assert prepare_datalist(str(root), str(dl), output_dir=str(out)) == str(dl)
    assert dl.read_text() == text


# ----------------------------------------------------------------------------------- data folder itself
def test_empty_non_default_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataValidationError) as info:
        prepare_datalist(str(empty), str(empty / "datalist.json"), synthetic={"subjects": 2}, output_dir=str(tmp_path))
    assert f"dataset folder {empty} is empty" in str(info.value)
    assert list(empty.iterdir()) == []
    missing = tmp_path / "typo"
    with pytest.raises(DataValidationError, match=f"dataset folder {missing} does not exist"):
        prepare_datalist(str(missing), str(missing / "datalist.json"), output_dir=str(tmp_path))
    assert not missing.exists()


def test_default_synthetic_location_is_generated_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    path = prepare_datalist(
        "data/synthetic", "data/synthetic/datalist.json", synthetic={"subjects": 2, "timepoints": 1}, spacing=15.0
    )
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if "generating the synthetic cohort" in ln]
    assert lines == [
        "dataset_dir data/synthetic does not exist: generating the synthetic cohort there (2 subjects x 1 timepoints)"
    ]
    assert len(discover_cases(tmp_path / "data" / "synthetic")) == 2 and Path(path).is_file()


def test_read_only_data_folder_builds_into_the_output_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import builtins
    import io

    root, out = tmp_path / "data", tmp_path / "out"
    make_cohort(root, subjects=4)
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o555)
    before = snapshot(root)
    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if any(c in mode for c in "wax+") and os.path.abspath(os.fspath(file)).startswith(str(root)):
            raise PermissionError(13, "Permission denied", os.fspath(file))  # as the kernel would, even for root
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", read_only)
    monkeypatch.setattr(io, "open", read_only)
    try:
        path = prepare_datalist(str(root), str(root / "datalist.json"), output_dir=str(out), skip_invalid=True)
        after = snapshot(root)
    finally:
        monkeypatch.undo()
        for dirpath, _, _ in os.walk(root):
            os.chmod(dirpath, 0o755)
    assert path == str(out / "datalist.json")
    listed = [i["case_id"] for k in ("training", "validation", "test") for i in json.loads(Path(path).read_text())[k]]
    assert len(listed) == 4
    assert after == before


def test_datalist_cli_into_unwritable_folder_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    from custom.__main__ import main

    root = tmp_path / "data"
    make_cohort(root, subjects=2)
    before = snapshot(root)
    real_access = os.access

    def no_write(p, m, *a, **k):  # noqa: ANN001, ANN002, ANN003
        return False if m == os.W_OK and os.fspath(p) == str(root) else real_access(p, m, *a, **k)

    monkeypatch.setattr(os, "access", no_write)
    code = main(["datalist", str(root), "--out", str(root / "datalist.json")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"cannot write the datalist to {root / 'datalist.json'}: permission denied" in err
    assert snapshot(root) == before


# ------------------------------------------------------------------------------------------- discovery
def test_symlinked_case_folder_is_followed(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "data", tmp_path / "archive"
    make_cohort(root, subjects=2)
    cid, real = make_case(elsewhere, subject=7)
    os.symlink(real, root / cid)
    before = snapshot(root)
    cases = {c.case_id: c for c in discover_cases(root)}
    assert cid in cases and cases[cid].images["t1c"] == root / cid / f"{cid}-t1c.nii.gz"
    assert validate_cases(cases.values()).ok
    assert snapshot(root) == before


def test_folder_link_loop_is_named(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_cohort(root, subjects=1)
    os.symlink(root, root / "again")
    with pytest.raises(DataValidationError) as info:
        discover_cases(root)
    assert f"{root / 'again'}: symbolic link to its own parent folder" in str(info.value)


def test_lower_case_case_id_is_named_not_dropped(tmp_path: Path) -> None:
    root = tmp_path / "data"
    make_cohort(root, subjects=2)
    cid, folder = make_case(root, subject=5)
    for f in sorted(folder.iterdir()):
        f.rename(folder / f.name.lower())
    lower = folder / f"{cid.lower()}-t1c.nii.gz"
    before = snapshot(root)
    lines = _problem_lines(root)
    line = _line_naming(lines, lower)
    assert line.startswith(f"{cid}: ") and f"rename it {cid}-t1c.nii.gz" in line
    built = build_datalist(root, skip_invalid=True, split=(1, 0, 0))
    assert {r["case_id"] for r in built["skipped"]} == {cid}
    assert len(built["training"]) == 2
    assert snapshot(root) == before


def test_segmentation_copy_in_derivatives_is_named_and_skipped_alone(tmp_path: Path) -> None:
    root = tmp_path / "data"
    cids = make_cohort(root, subjects=3)
    copy = root / "derivatives" / f"{cids[0]}-seg.nii.gz"
    copy.parent.mkdir()
    copy.write_bytes(file_of(root, cids[0], "seg").read_bytes())
    before = snapshot(root)
    with pytest.raises(DataValidationError, match=f"{cids[0]}: duplicated case id, files found in several folders"):
        build_datalist(root)
    built = build_datalist(root, skip_invalid=True, split=(1, 0, 0))
    assert [i["case_id"] for i in built["training"]] == cids[1:]
    assert {r["case_id"] for r in built["skipped"]} == {cids[0]}
    problems = sorted(r["problem"] for r in built["skipped"])
    assert problems == [
        f"duplicated case id, files found in several folders: {root / cids[0]} and {root / 'derivatives'}",
        f"duplicated seg file: {file_of(root, cids[0], 'seg')} and {copy}",
    ]
    assert snapshot(root) == before


# ------------------------------------------------------------------------------------ odd headers
SHIFTED_3MM = AFFINE + np.array([[0, 0, 0, 3.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def _rewrite_header(path: Path, edit) -> None:  # noqa: ANN001
    img = nib.load(str(path))
    new = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header.copy())
    edit(new)
    path.unlink()
    nib.save(new, str(path))


@pytest.mark.parametrize(
    "kind, edit, words",
    [
        ("singular", lambda img: img.set_sform(np.diag([2.0, 2.0, 0.0, 1.0]), code=2), "degenerate affine"),
        (
            "qform_sform",
            lambda img: (img.set_qform(AFFINE, code=1), img.set_sform(SHIFTED_3MM, code=1)),
            "qform and sform disagree by up to 3 mm",
        ),
    ],
)
def test_unusable_header_geometry_is_named(tmp_path: Path, kind: str, edit, words: str) -> None:  # noqa: ANN001
    cid, _ = make_case(tmp_path)
    path = file_of(tmp_path, cid, "t2f")
    _rewrite_header(path, edit)
    before = snapshot(tmp_path)
    line = _line_naming(_problem_lines(tmp_path), path)
    assert line.startswith(cid) and words in line, line
    assert snapshot(tmp_path) == before


def test_nan_pixdim_is_named(tmp_path: Path) -> None:
    cid, _ = make_case(tmp_path)
    path = file_of(tmp_path, cid, "t1n")
    img = nib.load(str(path))
    header = img.header.copy()
    header.set_sform(None, code=0)
    header.set_qform(AFFINE, code=1)
    new = nib.Nifti1Image(np.asarray(img.dataobj), None, header)
    new.header["pixdim"][2] = np.nan
    new.header.set_sform(None, code=0)
    path.unlink()
    nib.save(new, str(path))
    line = _line_naming(_problem_lines(tmp_path), path)
    assert "header pixdim (voxel size) is not finite" in line


def test_five_d_singleton_axes_are_accepted_and_squeezed(tmp_path: Path) -> None:
    from custom.data.transforms import get_preprocessing

    cid, _ = make_case(tmp_path)
    path = file_of(tmp_path, cid, "t1c")
    data = np.asarray(nib.load(str(path)).dataobj)
    path.unlink()
    nib.save(nib.Nifti1Image(data.reshape(*data.shape, 1, 1), AFFINE), str(path))
    assert validate_cases(discover_cases(tmp_path)).ok
    item = {"image": [str(file_of(tmp_path, cid, m)) for m in ("t1c", "t1n", "t2f", "t2w")]}
    out = get_preprocessing(spacing=2.0, spatial_size=[16, 16, 16], with_label=False, with_factors=False)(item)
    brain = data != 0  # channel 0 is t1c z-scored over its non-zero voxels, independently computed here
    expected = np.zeros_like(data, dtype=np.float64)
    expected[brain] = (data[brain] - data[brain].mean()) / data[brain].std()
    assert tuple(out["image"].shape) == (4, 16, 16, 16)
    np.testing.assert_allclose(out["image"][0].numpy(), expected, atol=1e-4)


def test_left_handed_affine_is_accepted_and_reoriented(tmp_path: Path) -> None:
    from custom.data.transforms import get_preprocessing

    ras_root, las_root = tmp_path / "ras", tmp_path / "las"
    cid, _ = make_case(ras_root)
    las = AFFINE.copy()
    las[0, 0], las[0, 3] = -2.0, 30.0  # x flipped: voxel i sits at 30 - 2 i, the RAS voxel 15 - i
    make_case(las_root)
    for m in ("t1c", "t1n", "t2f", "t2w", "seg"):
        src = nib.load(str(file_of(ras_root, cid, m)))
        dst = file_of(las_root, cid, m)
        dst.unlink()
        nib.save(nib.Nifti1Image(np.asarray(src.dataobj)[::-1].copy(), las), str(dst))
    assert np.linalg.det(nib.load(str(file_of(las_root, cid, "t1c"))).affine[:3, :3]) < 0
    assert validate_cases(discover_cases(las_root), require_seg=True).ok
    chain = get_preprocessing(spacing=2.0, spatial_size=[16, 16, 16])
    outs = []
    for root in (ras_root, las_root):
        item = {"image": [str(file_of(root, cid, m)) for m in ("t1c", "t1n", "t2f", "t2w")]}
        outs.append(chain({**item, "label": str(file_of(root, cid, "seg"))}))
    np.testing.assert_allclose(outs[0]["image"].numpy(), outs[1]["image"].numpy(), atol=1e-5)
    assert np.array_equal(outs[0]["label"].numpy(), outs[1]["label"].numpy())


def test_scl_slope_and_inter_are_applied_on_reading(tmp_path: Path) -> None:
    from monai.transforms import LoadImage

    cid, _ = make_case(tmp_path)
    path = file_of(tmp_path, cid, "t2w")
    raw = (volume(3) * 100).astype(np.int16)
    img = nib.Nifti1Image(raw, AFFINE)
    img.header.set_slope_inter(0.5, 10.0)
    path.unlink()
    nib.save(img, str(path))
    report = validate_cases(discover_cases(tmp_path))
    assert report.ok
    loaded = LoadImage(image_only=True)(str(path)).numpy()
    np.testing.assert_allclose(loaded, raw.astype(np.float64) * 0.5 + 10.0, rtol=0, atol=1e-4)


def test_non_zero_background_is_listed_as_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from custom.__main__ import main

    root = tmp_path / "data"
    cids = make_cohort(root, subjects=2)
    path = file_of(root, cids[0], "t1c")
    path.unlink()
    nib.save(nib.Nifti1Image(volume(0) + 5.0, AFFINE), str(path))  # background 5, not 0
    before = snapshot(root)
    code = main(["datalist", str(root), "--out", str(tmp_path / "out" / "datalist.json"), "--split", "1,0,0"])
    out = capsys.readouterr().out
    assert code == 0
    (line,) = [ln for ln in out.splitlines() if "warning:" in ln]
    assert f"{cids[0]}: {path}: background is not zero: 100 % of the border voxels are non-zero" in line
    assert "most common border value 5" in line
    written = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert [w["case_id"] for w in written["warnings"]] == [cids[0]]
    assert snapshot(root) == before


def test_skip_invalid_skips_a_missing_listed_file_and_lists_it(tmp_path: Path) -> None:
    from custom.data.dataset import load_split

    root, out = tmp_path / "data", tmp_path / "out"
    cids = make_cohort(root, subjects=3)
    dl = write_datalist(build_datalist(root, split=(1, 0, 0)), out / "datalist.json")
    gone = file_of(root, cids[1], "t2w")
    gone.unlink()
    before = snapshot(root)
    with pytest.raises(DataValidationError, match=f"{cids[1]}: image file does not exist: {gone}"):
        load_split(str(dl), "training")
    items = load_split(str(dl), "training", skip_invalid=True, skipped_dir=str(out / "run"))
    assert [i["case_id"] for i in items] == [cids[0], cids[2]]
    rows = (out / "run" / "skipped_training.csv").read_text().splitlines()
    assert rows == ["case_id,path,problem", f"{cids[1]},{gone},file does not exist (broken symbolic link?)"]
    assert snapshot(root) == before
