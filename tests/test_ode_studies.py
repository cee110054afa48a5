"""A subject's scans in a MONAI Label studies folder (custom.ode.studies) and the packed forecaster's input check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def _touch(folder: Path, *names: str) -> None:
    for name in names:
        (folder / name).write_bytes(b"")


def _times(folder: Path, rows: list[tuple[str, int, float]]) -> None:
    lines = ["subject_id,timepoint,time_years"] + [f"{s},{t},{y}" for s, t, y in rows]
    (folder / "times.csv").write_text("\n".join(lines) + "\n")


def test_every_scan_of_the_subject_with_times_and_segmentations(tmp_path: Path) -> None:
    from custom.ode.studies import subject_scans_in_folder

    mods = ("t1c", "t1n", "t2f", "t2w")
    _touch(tmp_path, *[f"BraTS-MEN-00007-001-{m}.nii.gz" for m in mods], "BraTS-MEN-00007-001-seg.nii.gz")
    _touch(tmp_path, *[f"BraTS-MEN-00007-000-{m}.nii.gz" for m in mods])
    _touch(tmp_path, "BraTS-MEN-00007-002.nii.gz")  # a 4D scan
    _touch(tmp_path, *[f"BraTS-MEN-00008-000-{m}.nii.gz" for m in mods])  # another subject
    _times(tmp_path, [("BraTS-MEN-00007", 0, 0.0), ("00007", 1, 1.25), ("7", 2, 2.5), ("BraTS-MEN-00008", 0, 0.0)])
    scans = subject_scans_in_folder(str(tmp_path / "BraTS-MEN-00007-001-t2w.nii.gz"))
    assert [s["case_id"] for s in scans] == ["BraTS-MEN-00007-000", "BraTS-MEN-00007-001", "BraTS-MEN-00007-002"]
    assert [s["time_years"] for s in scans] == [0.0, 1.25, 2.5]
    assert scans[0]["image"] == [str(tmp_path / f"BraTS-MEN-00007-000-{m}.nii.gz") for m in mods]
    assert scans[2]["image"] == str(tmp_path / "BraTS-MEN-00007-002.nii.gz")
    assert ["label" in s for s in scans] == [False, True, False]
    assert {s["subject_id"] for s in scans} == {"BraTS-MEN-00007"}


def test_a_scan_without_a_time_or_a_modality_is_named(tmp_path: Path) -> None:
    from custom.ode.studies import subject_scans_in_folder

    _touch(tmp_path, *[f"BraTS-MEN-00001-000-{m}.nii.gz" for m in ("t1c", "t1n", "t2f", "t2w")])
    _touch(tmp_path, "BraTS-MEN-00001-001-t1c.nii.gz")
    _times(tmp_path, [("BraTS-MEN-00001", 0, 0.0), ("BraTS-MEN-00001", 1, 1.0)])
    with pytest.raises(ValueError, match="scan BraTS-MEN-00001-001 in .* has neither"):
        subject_scans_in_folder(str(tmp_path / "BraTS-MEN-00001-000-t1c.nii.gz"))
    (tmp_path / "BraTS-MEN-00001-001-t1c.nii.gz").unlink()
    _times(tmp_path, [("BraTS-MEN-00002", 0, 0.0)])
    with pytest.raises(ValueError, match="scan BraTS-MEN-00001-000 has no time in .*times.csv"):
        subject_scans_in_folder(str(tmp_path / "BraTS-MEN-00001-000-t1c.nii.gz"))
    with pytest.raises(ValueError, match="not a BraTS-MEN scan name"):
        subject_scans_in_folder(str(tmp_path / "scan.nii.gz"))


def test_packed_input_layout_and_a_wrong_width_is_one_sentence() -> None:
    from custom.ode.hybrid import HybridGompertzForecaster
    from custom.ode.packed import PackedForecastNet

    net = PackedForecastNet(HybridGompertzForecaster(z_dim=2, vol_index=0, hidden=4), n_observed=2, n_targets=1)
    assert net.in_channels == 2 * (2 + 3) + 1
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 0.5, 0.75, 1.0, 0.0, 0.0, 1.5, 3.0]])
    z, y, measured, t, target = net.unpack(x)
    assert z.tolist() == [[[1.0, 2.0], [3.0, 4.0]]]  # the standardisation starts as mean 0, sd 1
    assert y.tolist() == [[0.5, 0.75]] and measured.tolist() == [[True, False]]
    assert t.tolist() == [[0.0, 1.5]] and target.tolist() == [[3.0]]
    with pytest.raises(ValueError, match=r"expects \[B, 11\] \(k=2 scans, z_dim 2, 1 target times\), got \[1, 10\]"):
        net(x[:, :10])
