"""Bad input through the bundle entry points (``monai.bundle run``) at 32^3 on the shared tiny cohort.

A run that would train nothing fails before training with the split sizes named; on bad data the first thing
the user reads is the message, not a library traceback (the traceback only with ``MENGROWTH_DEBUG=1``); a
read-only data folder trains, writing only into the output dir; inference names outputs by case id and skips
a missing listed file with ``skip_invalid``.
"""

from __future__ import annotations

import builtins
import csv
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from bad_input_helpers import snapshot
from conftest import REPO

from custom.data.errors import find_user_error

BUNDLE = REPO / "bundles" / "vae_baseline" / "configs"
SMALL = {
    "spatial_size": [32, 32, 32],
    "spacing": 7.5,
    "z_dim": 16,
    "amp": False,
    "num_workers": 1,
    "cache": "none",
    "epochs": 1,
    "val_interval": 100,
}


@pytest.fixture()
def cohort(tiny_cohort: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(tiny_cohort, dst)
    return dst


def _split_sizes(datalist: Path) -> str:
    raw = json.loads(datalist.read_text())
    return ", ".join(f"{k} {len(raw[k])}" for k in ("training", "validation", "test"))


def _bundle_cli(cohort: Path, tmp: Path, debug: bool, **extra: object) -> subprocess.CompletedProcess:
    overrides = {**SMALL, **extra}
    args = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(BUNDLE / "train.json")]
    args += ["--dataset_dir", str(cohort), "--output_dir", str(tmp / "run"), "--ckpt_dir", str(tmp / "models")]
    for key, value in overrides.items():
        args += [f"--{key}", json.dumps(value) if isinstance(value, list) else str(value)]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.pop("MENGROWTH_DEBUG", None)
    if debug:
        env["MENGROWTH_DEBUG"] = "1"
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_split_without_a_full_batch_fails_before_training_with_a_clean_message(cohort: Path, tmp_path: Path) -> None:
    before = snapshot(cohort)
    proc = _bundle_cli(cohort, tmp_path, debug=False, batch_size=50)
    expected = (
        f"error: split 'training' of {cohort / 'datalist.json'} has 12 usable case(s), fewer than the 50 needed "
        "(batch_size: the training loader drops the last incomplete batch, so training would train nothing); "
        f"split sizes: {_split_sizes(cohort / 'datalist.json')}; add cases or change the split"
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and "Failed to instantiate" not in proc.stderr, proc.stderr[-3000:]
    error_lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert error_lines == [expected], proc.stderr[-3000:]
    assert not (tmp_path / "models" / "model.pt").exists()
    assert snapshot(cohort) == before


def test_debug_switch_keeps_the_traceback_and_ends_with_the_message(cohort: Path, tmp_path: Path) -> None:
    proc = _bundle_cli(cohort, tmp_path, debug=True, batch_size=50)
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: split 'training' of ")


def test_validation_split_of_one_scan_is_a_named_error(cohort: Path, tmp_path: Path) -> None:
    from monai.bundle import run

    dl = json.loads((cohort / "datalist.json").read_text())
    dl["test"] += dl["validation"][1:]
    dl["validation"] = dl["validation"][:1]
    for split in ("training", "validation", "test"):
        for item in dl[split]:
            item["image"] = [str(cohort / p) for p in item["image"]]
            item["label"] = str(cohort / item["label"])
    (tmp_path / "dl.json").write_text(json.dumps(dl))
    with pytest.raises(Exception) as info:
        run(
            "training",
            config_file=str(BUNDLE / "train.json"),
            dataset_dir=str(cohort),
            datalist=str(tmp_path / "dl.json"),
            output_dir=str(tmp_path / "run"),
            ckpt_dir=str(tmp_path / "models"),
            **SMALL,
        )
    message = str(find_user_error(info.value))
    assert message.startswith(f"split 'validation' of {tmp_path / 'dl.json'} has 1 usable case(s), fewer than the 2")
    assert "validation diagnostics" in message and "validation 1" in message
    assert not (tmp_path / "models" / "model.pt").exists()


def test_read_only_data_folder_trains_writing_only_to_the_output_dir(
    cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from monai.bundle import run

    (cohort / "datalist.json").unlink()  # no datalist: training builds one, into the output dir
    before = snapshot(cohort)
    real_open = builtins.open

    def read_only(file, mode="r", *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+"):
            if os.path.abspath(os.fspath(file)).startswith(str(cohort)):
                raise PermissionError(13, "Permission denied", os.fspath(file))
        return real_open(file, mode, *args, **kwargs)

    for dirpath, _, _ in os.walk(cohort):
        os.chmod(dirpath, 0o555)
    monkeypatch.setattr(builtins, "open", read_only)
    monkeypatch.setattr(io, "open", read_only)
    try:
        run(
            "training",
            config_file=str(BUNDLE / "train.json"),
            dataset_dir=str(cohort),
            output_dir=str(tmp_path / "run"),
            ckpt_dir=str(tmp_path / "models"),
            limit_cases=4,
            **SMALL,
        )
        after = snapshot(cohort)
    finally:
        monkeypatch.undo()
        for dirpath, _, _ in os.walk(cohort):
            os.chmod(dirpath, 0o755)
    assert after == before
    built = json.loads((tmp_path / "run" / "datalist.json").read_text())
    assert sum(len(built[k]) for k in ("training", "validation", "test")) == 18
    assert (tmp_path / "models" / "model.pt").exists()


# ------------------------------------------------------------------------------------------- inference
@pytest.fixture()
def weights(tmp_path: Path) -> Path:
    """Untrained weights of the 32^3 network (what is checked is naming and skipping, not the reconstruction)."""
    import torch

    from custom.networks import ResNetVAE

    models = tmp_path / "models"
    models.mkdir()
    torch.manual_seed(0)
    net = ResNetVAE(in_channels=4, out_channels=4, spatial_size=[32, 32, 32], z_dim=16)
    torch.save(net.state_dict(), models / "model.pt")
    return models


def _export_like(cohort: Path, dst: Path, cid: str, name: str) -> list[str]:
    """A case folder as an export tool writes it: files named by modality only (``t1c.nii.gz`` ...)."""
    dst.mkdir(parents=True)
    files = []
    for m in ("t1c", "t1n", "t2f", "t2w"):
        shutil.copy(cohort / cid / f"{cid}-{m}.nii.gz", dst / f"{m}.nii.gz")
        files.append(str(dst / f"{m}.nii.gz"))
    return files


def _infer(datalist: Path, tmp: Path, **extra: object) -> None:
    from monai.bundle import run

    run(
        config_file=str(BUNDLE / "inference.json"),
        datalist=str(datalist),
        output_dir=str(tmp / "infer"),
        ckpt_dir=str(tmp / "models"),
        spatial_size=[32, 32, 32],
        spacing=7.5,
        z_dim=16,
        amp=False,
        **extra,
    )


def test_inference_outputs_of_same_named_inputs_do_not_overwrite(cohort: Path, tmp_path: Path, weights: Path) -> None:
    ids = [i["case_id"] for i in json.loads((cohort / "datalist.json").read_text())["test"][:2]]
    items = [
        {"case_id": f"scan-{k}", "image": _export_like(cohort, tmp_path / "export" / f"scan-{k}", cid, "t1c")}
        for k, cid in enumerate(ids)
    ]
    (tmp_path / "dl.json").write_text(json.dumps({"test": items}))
    before = snapshot(tmp_path / "export")
    _infer(tmp_path / "dl.json", tmp_path)
    out = tmp_path / "infer"
    recon = sorted(p.name for p in out.glob("*_recon.nii.gz"))
    assert recon == ["scan-0_recon.nii.gz", "scan-1_recon.nii.gz"]
    assert (out / recon[0]).read_bytes() != (out / recon[1]).read_bytes()
    assert sorted(p.name for p in out.glob("*_latents.json")) == ["scan-0_latents.json", "scan-1_latents.json"]
    assert snapshot(tmp_path / "export") == before


def test_inference_skip_invalid_lists_a_missing_file_and_runs_the_rest(
    cohort: Path, tmp_path: Path, weights: Path
) -> None:
    dl = json.loads((cohort / "datalist.json").read_text())
    test = dl["test"][:2]
    missing = cohort / test[0]["image"][3]
    missing.unlink()
    before = snapshot(cohort)
    _infer(cohort / "datalist.json", tmp_path, skip_invalid=True)
    rows = list(csv.DictReader((tmp_path / "infer" / "skipped_inference.csv").open()))
    assert [r["case_id"] for r in rows] == [test[0]["case_id"]]
    assert str(missing) in rows[0]["problem"] and "does not exist" in rows[0]["problem"]
    done = {p.name for p in (tmp_path / "infer").glob("*_recon.nii.gz")}
    assert f"{test[1]['case_id']}_recon.nii.gz" in done and f"{test[0]['case_id']}_recon.nii.gz" not in done
    assert snapshot(cohort) == before


def test_training_on_an_empty_non_default_folder_is_refused(tmp_path: Path) -> None:
    from monai.bundle import run

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(Exception) as info:
        run(
            "training",
            config_file=str(BUNDLE / "train.json"),
            dataset_dir=str(empty),
            output_dir=str(tmp_path / "run"),
            ckpt_dir=str(tmp_path / "models"),
            **SMALL,
        )
    message = str(find_user_error(info.value))
    assert message.startswith(f"dataset folder {empty} is empty: no BraTS-MEN case to use")
    assert list(empty.iterdir()) == [] and not (tmp_path / "models" / "model.pt").exists()
