"""CaseFilesd: one BraTS-MEN file, a case folder or a 4D file -> what LoadImaged reads; MONAI Label's keys kept."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO

from custom.data.geometry_check import InputGeometryError
from custom.data.request import CaseFilesd

META = REPO / "bundles" / "vae_baseline" / "configs" / "metadata.json"
MODS = ["t1c", "t1n", "t2f", "t2w"]


def _case(tmp_path: Path, mods: list[str]) -> Path:
    folder = tmp_path / "BraTS-MEN-00007-001"
    folder.mkdir()
    for m in mods:
        (folder / f"BraTS-MEN-00007-001-{m}.nii.gz").write_bytes(b"")
    return folder


def test_one_modality_file_gives_the_four_files_in_channel_order(tmp_path: Path) -> None:
    folder = _case(tmp_path, MODS)
    given = str(folder / "BraTS-MEN-00007-001-t2f.nii.gz")
    out = CaseFilesd("image", str(META))({"image": given, "image_path": given})
    assert out["image"] == [str(folder / f"BraTS-MEN-00007-001-{m}.nii.gz") for m in MODS]
    assert "image_path" not in out and out["request_image_path"] == given


def test_case_folder_and_lists_and_4d_files(tmp_path: Path) -> None:
    folder = _case(tmp_path, MODS)
    t = CaseFilesd("image", str(META))
    assert t({"image": str(folder)})["image"] == [str(folder / f"BraTS-MEN-00007-001-{m}.nii.gz") for m in MODS]
    assert t({"image": ["a.nii.gz", "b.nii.gz"]})["image"] == ["a.nii.gz", "b.nii.gz"]
    assert t({"image": str(tmp_path / "case4d.nii.gz")})["image"] == str(tmp_path / "case4d.nii.gz")


def test_a_missing_modality_names_the_case_and_the_file(tmp_path: Path) -> None:
    folder = _case(tmp_path, ["t1c", "t1n", "t2w"])
    with pytest.raises(InputGeometryError, match="BraTS-MEN-00007-001.*t2f"):
        CaseFilesd("image", str(META))({"image": str(folder / "BraTS-MEN-00007-001-t1c.nii.gz")})


def test_a_request_without_case_id_is_named_by_its_case(tmp_path: Path) -> None:
    folder = _case(tmp_path, MODS)
    t = CaseFilesd("image", str(META))
    assert t({"image": str(folder / "BraTS-MEN-00007-001-t1n.nii.gz")})["case_id"] == "BraTS-MEN-00007-001"
    assert t({"image": str(folder)})["case_id"] == "BraTS-MEN-00007-001"
    assert t({"image": str(tmp_path / "scan_4d.nii.gz")})["case_id"] == "scan_4d"
    given = {"image": str(folder / "BraTS-MEN-00007-001-t1n.nii.gz"), "case_id": "visit-2"}
    assert t(given)["case_id"] == "visit-2"
    assert "case_id" not in t({"image": ["a.nii.gz", "b.nii.gz"]})
