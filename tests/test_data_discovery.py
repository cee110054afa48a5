"""Discovery, subject-level split, datalist write/read round trip and the ``datalist`` CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from custom.data import discovery as discovery_module
from custom.data.cli import datalist as datalist_cli
from custom.data.cli import parse_split
from custom.data.datalist import build_datalist, read_datalist, split_subjects, write_datalist
from custom.data.discovery import CaseRecord, discover_cases
from custom.data.validation import DataValidationError

MODS = ("t1c", "t1n", "t2f", "t2w")
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])


def make_case(
    root: Path, subject: int, tp: int, ext: str = ".nii.gz", seg: bool = True, folder: Path | None = None
) -> Path:
    """Write a tiny 12x12x8 case; returns its folder."""
    cid = f"BraTS-MEN-{subject:05d}-{tp:03d}"
    case_dir = folder if folder is not None else root / cid
    case_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(subject * 100 + tp)
    for m in MODS:
        nib.save(
            nib.Nifti1Image(rng.random((12, 12, 8)).astype(np.float32) + 1.0, AFFINE), case_dir / f"{cid}-{m}{ext}"
        )
    if seg:
        lab = np.zeros((12, 12, 8), np.uint8)
        lab[4:8, 4:8, 2:6] = 1
        nib.save(nib.Nifti1Image(lab, AFFINE), case_dir / f"{cid}-seg{ext}")
    return case_dir


# ----------------------------------------------------------------------------------------- discovery
def test_discovery_both_extensions_seg_optional_and_unrelated_files_ignored(tmp_path: Path) -> None:
    make_case(tmp_path, 1, 0, ".nii.gz", seg=True)
    make_case(tmp_path, 1, 1, ".nii", seg=False)
    make_case(tmp_path / "nested" / "deeper", 2, 0, ".nii.gz", seg=True)
    (tmp_path / "README.md").write_text("hello")
    (tmp_path / "BraTS-MEN-00001-000" / "BraTS-MEN-00001-000-t1c.nii.gz.bak").write_text("x")
    (tmp_path / "BraTS-MEN-00001-000" / "BraTS-MEN-00001-000-mask.nii.gz").write_text("x")
    (tmp_path / "BraTS-GLI-00003-000").mkdir()
    (tmp_path / "BraTS-GLI-00003-000" / "BraTS-GLI-00003-000-t1c.nii.gz").write_text("x")

    cases = discover_cases(tmp_path)
    assert [c.case_id for c in cases] == ["BraTS-MEN-00001-000", "BraTS-MEN-00001-001", "BraTS-MEN-00002-000"]
    first, second, third = cases
    assert (first.subject_id, first.timepoint) == ("BraTS-MEN-00001", 0)
    assert (second.subject_id, second.timepoint) == ("BraTS-MEN-00001", 1)
    assert set(first.images) == set(MODS) and first.seg is not None and first.seg.name.endswith("-seg.nii.gz")
    assert second.seg is None and second.images["t2w"].name == "BraTS-MEN-00001-001-t2w.nii"
    assert third.folder == tmp_path / "nested" / "deeper" / "BraTS-MEN-00002-000"


def test_discovery_partial_case_kept_for_validation(tmp_path: Path) -> None:
    folder = make_case(tmp_path, 4, 2)
    (folder / "BraTS-MEN-00004-002-t2f.nii.gz").unlink()
    (case,) = discover_cases(tmp_path)
    assert set(case.images) == {"t1c", "t1n", "t2w"} and case.timepoint == 2


def test_discovery_missing_root_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        discover_cases(tmp_path / "does-not-exist")


# ------------------------------------------------------------------------------------------- split
def test_split_is_by_subject_reproducible_and_order_independent(tmp_path: Path) -> None:
    subjects = [f"BraTS-MEN-{i:05d}" for i in range(1, 21)]
    groups = split_subjects(subjects, (0.7, 0.15, 0.15), seed=3)
    assert [len(g) for g in groups] == [14, 3, 3]
    assert sorted(sum(groups, [])) == subjects  # a partition
    shuffled = subjects * 2  # repeats (several timepoints) and shuffled order
    random.Random(1).shuffle(shuffled)
    assert split_subjects(shuffled, (0.7, 0.15, 0.15), seed=3) == groups
    assert split_subjects(subjects, (0.7, 0.15, 0.15), seed=4) != groups


def test_split_removing_one_subject_moves_few_others() -> None:
    subjects = [f"BraTS-MEN-{i:05d}" for i in range(1, 101)]
    before = split_subjects(subjects, (0.7, 0.15, 0.15), seed=0)
    after = split_subjects(subjects[1:], (0.7, 0.15, 0.15), seed=0)
    where = lambda groups: {s: g for g, members in enumerate(groups) for s in members}  # noqa: E731
    old, new = where(before), where(after)
    moved = [s for s in new if new[s] != old[s]]
    assert len(moved) <= 3  # only subjects at a group boundary may move


def test_split_few_subjects_each_nonzero_fraction_gets_one() -> None:
    groups = split_subjects(["a", "b", "c"], (0.7, 0.15, 0.15), seed=0)
    assert [len(g) for g in groups] == [1, 1, 1]
    groups = split_subjects(["a", "b", "c", "d"], (0.8, 0.2, 0.0), seed=0)
    assert [len(g) for g in groups] == [3, 1, 0]
    with pytest.raises(ValueError):
        split_subjects(["a"], (-1.0, 1.0, 0.0))


def test_build_datalist_keeps_subjects_together_sorted_and_stable(tmp_path: Path, monkeypatch) -> None:
    for s in range(1, 8):
        for t in (1, 0, 2):
            make_case(tmp_path, s, t, seg=(s % 2 == 0))
    times = tmp_path / "times.csv"
    times.write_text(
        "subject_id,timepoint,time_years\n"
        + "".join(
            f"{'BraTS-MEN-' if s % 2 else ''}{s:05d},{t},{0.5 * t + 0.01 * s}\n" for s in range(1, 8) for t in range(3)
        )
    )
    dl = build_datalist(tmp_path, times_csv=times, seed=5, check_content=False)
    owner: dict[str, str] = {}
    for key in ("training", "validation", "test"):
        assert dl[key], key
        ordered = [(i["subject_id"], i["timepoint"]) for i in dl[key]]
        assert ordered == sorted(ordered)
        for item in dl[key]:
            assert owner.setdefault(item["subject_id"], key) == key  # never split across lists
            assert len(item["image"]) == 4 and item["image"][0].endswith("-t1c.nii.gz")
            assert item["time_years"] == pytest.approx(0.5 * item["timepoint"] + 0.01 * int(item["subject_id"][-5:]))
            assert ("label" in item) == (int(item["subject_id"][-5:]) % 2 == 0)
    assert len(owner) == 7

    # same seed, reversed discovery order -> identical split
    original = discovery_module.discover_cases
    monkeypatch.setattr("custom.data.datalist.discover_cases", lambda root: list(reversed(original(root))))
    again = build_datalist(tmp_path, times_csv=times, seed=5, check_content=False)
    assert {k: again[k] for k in ("training", "validation", "test")} == {
        k: dl[k] for k in ("training", "validation", "test")
    }


# ------------------------------------------------------------------------------- write / read datalist
def test_write_read_roundtrip_relative_and_absolute_paths(tmp_path: Path) -> None:
    data = tmp_path / "data"
    make_case(data, 1, 0)
    make_case(data, 2, 0, seg=False)
    dl = build_datalist(data, split=(1.0, 0.0, 0.0))
    inside = write_datalist(dl, data / "datalist.json")
    raw = json.loads(inside.read_text())
    first = raw["training"][0]
    assert first["image"][0] == "BraTS-MEN-00001-000/BraTS-MEN-00001-000-t1c.nii.gz"
    assert first["label"] == "BraTS-MEN-00001-000/BraTS-MEN-00001-000-seg.nii.gz"
    assert "label" not in raw["training"][1] and "time_years" not in first

    outside = write_datalist(dl, tmp_path / "elsewhere" / "dl.json")
    raw_out = json.loads(outside.read_text())
    assert Path(raw_out["training"][0]["image"][0]).is_absolute()

    for path in (inside, outside):
        items = read_datalist(path, "training")
        assert items[0]["case_id"] == "BraTS-MEN-00001-000"  # not turned into a path by MONAI
        assert items[0]["image"][0] == str(data / "BraTS-MEN-00001-000" / "BraTS-MEN-00001-000-t1c.nii.gz")
        assert Path(items[0]["label"]).is_file()
    assert read_datalist(inside, "test") == []


def test_read_datalist_errors_name_file_case_and_path(tmp_path: Path) -> None:
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"training": [')
    with pytest.raises(DataValidationError, match="bad.json.*not valid JSON"):
        read_datalist(bad_json, "training")

    good = tmp_path / "dl.json"
    good.write_text(json.dumps({"training": [{"case_id": "BraTS-MEN-00009-000", "image": ["a.nii.gz"] * 4}]}))
    with pytest.raises(DataValidationError, match=r"dl.json has no split 'validation'.*training"):
        read_datalist(good, "validation")
    with pytest.raises(DataValidationError) as info:
        read_datalist(good, "training")
    assert "BraTS-MEN-00009-000" in str(info.value) and str(tmp_path / "a.nii.gz") in str(info.value)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_datalist(tmp_path / "nope.json", "training")


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_writes_file_and_summary(tmp_path: Path, capsys) -> None:
    for s in range(1, 5):
        make_case(tmp_path / "d", s, 0)
    out = datalist_cli(str(tmp_path / "d"), str(tmp_path / "out" / "dl.json"), seed=1, split="0.5,0.25,0.25")
    text = capsys.readouterr().out
    assert Path(out).is_file() and "4 case(s) of 4 subject(s)" in text and "problems: none" in text
    assert [len(json.loads(Path(out).read_text())[k]) for k in ("training", "validation", "test")] == [2, 1, 1]
    assert parse_split((0.6, 0.2, 0.2)) == (0.6, 0.2, 0.2)
    with pytest.raises(ValueError, match="three"):
        parse_split("0.5,0.5")


def test_cli_invalid_raises_and_skip_invalid_writes_reasons(tmp_path: Path, capsys) -> None:
    data = tmp_path / "d"
    for s in range(1, 4):
        make_case(data, s, 0)
    (data / "BraTS-MEN-00002-000" / "BraTS-MEN-00002-000-t1n.nii.gz").unlink()
    with pytest.raises(DataValidationError, match="BraTS-MEN-00002-000-t1n.nii.gz"):
        datalist_cli(str(data), str(tmp_path / "dl.json"))
    assert "BraTS-MEN-00002-000" in capsys.readouterr().err
    assert not (tmp_path / "dl.json").exists()

    out = datalist_cli(str(data), str(tmp_path / "dl.json"), skip_invalid=True, split="1,0,0")
    listed = [i["case_id"] for i in json.loads(Path(out).read_text())["training"]]
    assert listed == ["BraTS-MEN-00001-000", "BraTS-MEN-00003-000"]
    skipped = (tmp_path / "skipped_cases.csv").read_text()
    assert "BraTS-MEN-00002-000" in skipped and "missing modality t1n" in skipped


def test_case_record_files_order(tmp_path: Path) -> None:
    rec = CaseRecord(
        "BraTS-MEN-00001-000", "BraTS-MEN-00001", 0, {m: tmp_path / m for m in reversed(MODS)}, tmp_path / "s"
    )
    assert [p.name for p in rec.files()] == [*MODS, "s"]
