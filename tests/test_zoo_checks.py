"""MONAI's own bundle checks, run with MONAI's commands as the model zoo's CI runs them, on tiny trained models.

Each encoder bundle is trained for 1 epoch at 32^3 (z 16), exported with ``python -m custom export-bundle``'s
function and unzipped; then, on the unzipped bundle: ``verify_metadata`` against the vendored schema,
``verify_net_in_out network_def``, ``ckpt_export network_def`` (traced; TorchScript equals the eager network built
independently from the recorded sizes, and the metadata/inference embedded in it state the trained sizes), the
train / infer properties (``ConfigWorkflow.check_properties``, as the zoo's unit tests do) and inference in an
empty folder with ``PYTHONPATH`` unset. A bundle with a single-tensor ``network_def`` and a
``model_config.json`` is added to ``BUNDLES`` by one line.
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
from conftest import REPO, TINY, run_bundle

SCHEMA = REPO / "tests" / "data" / "meta_schema_20240725.json"
#: the bundles checked; latent_ode joins with one line once its network_def returns one tensor
BUNDLES = ["vae_baseline", "dipvae"]
SIZE, Z = [32, 32, 32], 16


def _env(bundle_root: Path | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["OMP_NUM_THREADS"] = "2"
    if bundle_root is not None:  # verify_net_in_out and ckpt_export do not put the bundle root on sys.path
        env["PYTHONPATH"] = str(bundle_root)
    return env


def _monai(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, f"monai.bundle {args[0]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture(scope="module", params=BUNDLES)
def exported(request: pytest.FixtureRequest, tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    from custom.export import export_bundle

    name = request.param
    tmp = tmp_path_factory.mktemp(f"zoo_{name}")
    train = tmp / "train"
    run_bundle(
        "run",
        "training",
        "--config_file",
        str(REPO / "bundles" / name / "configs" / "train.json"),
        "--dataset_dir",
        str(tiny_cohort),
        "--datalist",
        str(tiny_cohort / "datalist.json"),
        "--output_dir",
        str(train),
        "--ckpt_dir",
        str(train / "models"),
        "--epochs",
        "1",
        "--limit_cases",
        "4",
        "--val_interval",
        "100",
        "--cache",
        "none",
        *TINY,
    )
    # no size given: export reads models/model_config.json written by training
    zip_path = Path(
        export_bundle(str(REPO / "bundles" / name), str(tmp / "dist"), model=str(train / "models" / "model.pt"))
    )
    where = tmp / "empty"
    where.mkdir()
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(where)
    return {
        "name": name,
        "zip": zip_path,
        "where": where,
        "root": where / name,
        "weights": train / "models" / "model.pt",
    }


def test_zip_carries_what_it_needs_and_no_run_history(exported: dict) -> None:
    names = zipfile.ZipFile(exported["zip"]).namelist()
    n = exported["name"]
    for required in ("configs/inference.json", "configs/train.json", "configs/metadata.json", "models/model.pt"):
        assert f"{n}/{required}" in names, required
    for required in ("models/model.ts", "models/model_config.json", "docs/README.md", "LICENSE", "custom/__init__.py"):
        assert f"{n}/{required}" in names, required
    assert not [p for p in names if "/docs/runs/" in p or p.endswith(".npz") or "__pycache__" in p]
    infos = zipfile.ZipFile(exported["zip"]).infolist()
    big = [i.filename for i in infos if i.file_size > 1_000_000 and not i.filename.startswith(f"{n}/models/")]
    assert big == []


def test_metadata_states_the_trained_sizes_and_passes_the_schema(exported: dict) -> None:
    root = exported["root"]
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == SIZE
    assert meta["network_data_format"]["outputs"]["pred"]["spatial_shape"] == SIZE
    assert meta["latent"]["z_dim"] == Z
    assert "z_dim 128" not in meta["description"] and "128^3" not in meta["image_classes"]
    meta_file = str(root / "configs" / "metadata.json")
    proc = _monai(["verify_metadata", "--meta_file", meta_file, "--filepath", str(SCHEMA)], exported["where"], _env())
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


def test_verify_net_in_out_network_def(exported: dict) -> None:
    root = exported["root"]
    proc = _monai(
        [
            "verify_net_in_out",
            "network_def",
            "--meta_file",
            str(root / "configs" / "metadata.json"),
            "--config_file",
            str(root / "configs" / "inference.json"),
            "--bundle_root",
            str(root),
        ],
        exported["where"],
        _env(root),
    )
    assert "data shape of network is verified with no error" in proc.stdout + proc.stderr


def test_ckpt_export_equals_the_eager_network_and_embeds_the_trained_sizes(exported: dict) -> None:
    from custom.networks import ReconstructionNet, ResNetVAE

    root = exported["root"]
    ts_file = exported["where"] / "check.ts"
    _monai(
        [
            "ckpt_export",
            "network_def",
            "--filepath",
            str(ts_file),
            "--ckpt_file",
            str(root / "models" / "model.pt"),
            "--meta_file",
            str(root / "configs" / "metadata.json"),
            "--config_file",
            str(root / "configs" / "inference.json"),
            "--bundle_root",
            str(root),
            "--use_trace",
            "True",
        ],
        exported["where"],
        _env(root),
    )
    extra = {"metadata.json": "", "inference.json": ""}
    ts = torch.jit.load(str(ts_file), map_location="cpu", _extra_files=extra)
    embedded_meta, embedded_cfg = json.loads(extra["metadata.json"]), json.loads(extra["inference.json"])
    assert embedded_meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == SIZE
    assert embedded_meta["latent"]["z_dim"] == Z
    assert embedded_cfg["spatial_size"] == SIZE and embedded_cfg["z_dim"] == Z
    # eager reference built from the sizes the test trained with, not from the bundle's configs
    vae = ResNetVAE(in_channels=4, out_channels=4, spatial_size=SIZE, z_dim=Z)
    vae.load_state_dict(torch.load(exported["weights"], map_location="cpu", weights_only=True))
    eager = ReconstructionNet(vae).eval()
    x = torch.randn(1, 4, *SIZE, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(ts(x), eager(x), rtol=1e-5, atol=1e-5)
        shipped = torch.jit.load(str(root / "models" / "model.ts"), map_location="cpu")
        torch.testing.assert_close(shipped(x), eager(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("workflow_type", ["train", "infer"])
def test_bundle_properties(exported: dict, workflow_type: str, tiny_cohort: Path) -> None:
    from monai.bundle import ConfigWorkflow

    root = exported["root"]
    config = root / "configs" / ("train.json" if workflow_type == "train" else "inference.json")
    workflow = ConfigWorkflow(
        config_file=str(config),
        meta_file=str(root / "configs" / "metadata.json"),
        workflow_type=workflow_type,
        bundle_root=str(root),
        dataset_dir=str(tiny_cohort),
        datalist=str(tiny_cohort / "datalist.json"),
        output_dir=str(exported["where"] / f"props_{workflow_type}"),
        cache="none",
        num_workers=1,
        device="$torch.device('cpu')",
    )
    workflow.initialize()
    assert workflow.check_properties() == []
    assert workflow.network_def is not None


def test_exported_bundle_runs_inference_in_an_empty_folder(exported: dict, tiny_cohort: Path) -> None:
    where, n = exported["where"], exported["name"]
    item = json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]
    case = [str(tiny_cohort / p) for p in item["image"]]
    datalist = where / "one_case.json"
    datalist.write_text(json.dumps({"test": [{"case_id": item["case_id"], "image": case}]}))
    out = where / f"out_{n}"
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "--config_file", f"{n}/configs/inference.json"]
        + ["--datalist", str(datalist), "--output_dir", str(out)],
        cwd=where,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    (recon,) = out.glob("*recon.nii.gz")
    ref, img = nib.load(case[0]), nib.load(str(recon))
    assert img.shape == (*ref.shape, 4)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    assert np.isfinite(img.get_fdata()).all()
    (latents,) = out.glob("*_latents.json")
    assert len(json.loads(latents.read_text())["mu"]) == Z


def test_a_checkpoint_of_other_sizes_fails_with_one_clear_sentence(exported: dict) -> None:
    from custom.networks import ReconstructionNet, ResNetVAE

    state = torch.load(exported["weights"], map_location="cpu", weights_only=True)
    net = ReconstructionNet(ResNetVAE(in_channels=4, out_channels=4, spatial_size=SIZE, z_dim=2 * Z))
    with pytest.raises(RuntimeError, match="trained with other sizes.*model_config.json"):
        net.load_state_dict(state)
