"""Export round trip: export a 32^3 bundle, unzip it elsewhere, run its inference without this repository.

The exported run uses a clean environment: cwd = the unzip folder, ``PYTHONPATH`` unset, so ``custom`` can
only come from ``<name>/custom`` inside the zip (MONAI puts the bundle root on ``sys.path``). Its
reconstructions must equal those of the in-repository inference (allclose), and ``model.ts`` must give the
eager network's output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, TrainedBundles, run_bundle

BUNDLE = REPO / "bundles" / "vae_baseline"
NAME = BUNDLE.name
SIZE = {"spatial_size": [32, 32, 32], "spacing": 7.5, "z_dim": 16, "amp": False}


def _clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "2"
    return env


@pytest.fixture(scope="module")
def exported(tiny_cohort: Path, trained: TrainedBundles, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from custom.export import export_bundle

    tmp = tmp_path_factory.mktemp("export")
    train = trained(NAME)  # shared with test_zoo_checks.py: trained once per session
    in_repo = tmp / "in_repo"
    run_bundle(
        "run",
        "--config_file",
        str(BUNDLE / "configs" / "inference.json"),
        "--datalist",
        str(tiny_cohort / "datalist.json"),
        "--ckpt_dir",
        str(train / "models"),
        "--output_dir",
        str(in_repo),
        "--spatial_size",
        "[32,32,32]",
        "--spacing",
        "7.5",
        "--z_dim",
        "16",
        "--amp",
        "false",
    )
    zip_path = Path(export_bundle(str(BUNDLE), str(tmp / "zip"), model=str(train / "models" / "model.pt"), **SIZE))
    unzipped = tmp / "elsewhere"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(unzipped)
    out = tmp / "exported_out"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "--config_file",
            f"{NAME}/configs/inference.json",
            "--datalist",
            str(tiny_cohort / "datalist.json"),
            "--output_dir",
            str(out),
        ],
        cwd=unzipped,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return {
        "zip": zip_path,
        "unzipped": unzipped,
        "in_repo": in_repo,
        "exported": out,
        "weights": train / "models" / "model.pt",
    }


def test_zip_has_the_model_zoo_layout(exported: dict[str, Path]) -> None:
    names = set(zipfile.ZipFile(exported["zip"]).namelist())
    for required in (
        "configs/inference.json",
        "configs/metadata.json",
        "models/model.pt",
        "models/model.ts",
        "docs/README.md",
        "LICENSE",
        "custom/__init__.py",
        "custom/networks/wrappers.py",
        "custom/data/transforms.py",
    ):
        assert f"{NAME}/{required}" in names, required
    assert not [n for n in names if "__pycache__" in n]
    cfg = json.loads((exported["unzipped"] / NAME / "configs" / "inference.json").read_text())
    assert cfg["bundle_root"] == NAME and cfg["spatial_size"] == [32, 32, 32] and cfg["z_dim"] == 16
    meta = json.loads((exported["unzipped"] / NAME / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32, 32]


def test_custom_resolves_inside_the_bundle_not_the_repo(exported: dict[str, Path]) -> None:
    where = exported["unzipped"]
    bare = subprocess.run(
        [sys.executable, "-c", "import custom"], cwd=where, env=_clean_env(), capture_output=True, text=True
    )
    assert bare.returncode != 0, "the repository's custom package is importable from a clean environment"
    probe = subprocess.run(
        [sys.executable, "-c", f"import sys; sys.path.insert(1, '{NAME}'); import custom; " "print(custom.__file__)"],
        cwd=where,
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    assert probe.returncode == 0, probe.stderr
    assert Path(probe.stdout.strip()).resolve().is_relative_to(where.resolve())


def test_exported_inference_equals_in_repo_inference(exported: dict[str, Path]) -> None:
    ours = sorted(exported["in_repo"].glob("*recon.nii.gz"))
    theirs = sorted(exported["exported"].glob("*recon.nii.gz"))
    assert ours and [p.name for p in ours] == [p.name for p in theirs]
    for a, b in zip(ours, theirs):
        ia, ib = nib.load(str(a)), nib.load(str(b))
        np.testing.assert_allclose(ia.affine, ib.affine, atol=1e-5)
        np.testing.assert_allclose(ia.get_fdata(), ib.get_fdata(), rtol=1e-5, atol=1e-5)


def test_torchscript_matches_eager_network(exported: dict[str, Path]) -> None:
    from custom.networks import ReconstructionNet, ResNetVAE

    ts = torch.jit.load(str(exported["unzipped"] / NAME / "models" / "model.ts"), map_location="cpu")
    vae = ResNetVAE(in_channels=4, out_channels=4, spatial_size=[32, 32, 32], z_dim=16)
    vae.load_state_dict(torch.load(exported["weights"], map_location="cpu"))
    eager = ReconstructionNet(vae).eval()
    x = torch.randn(1, 4, 32, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ts(x), eager(x), rtol=1e-5, atol=1e-5)
