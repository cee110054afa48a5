"""MONAI's own bundle checks, run with MONAI's commands as the model zoo's CI runs them, on tiny trained models.

Each encoder bundle is trained for 1 epoch at 32^3 (z 16), latent_ode for 2 epochs on the tiny dipvae's latents
(the session's shared ``trained`` fixture of conftest.py), exported with ``python -m custom export-bundle``'s
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
from conftest import REPO, ExportedBundles, TrainedBundles

SCHEMA = REPO / "tests" / "data" / "meta_schema_20240725.json"
#: the bundles checked (each has a single-tensor network_def and a model_config.json)
ENCODERS = ["vae_baseline", "dipvae"]
BUNDLES = [*ENCODERS, "latent_ode"]
SIZE, Z = [32, 32, 32], 16
#: the tiny forecaster: 2 observed scans, 1 target time, hidden 8 (conftest.TrainedBundles)
K_OBS, M_TGT, HIDDEN = 2, 1, 8


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


@pytest.fixture(scope="module")
def exported(
    request: pytest.FixtureRequest, exports: ExportedBundles, tmp_path_factory: pytest.TempPathFactory
) -> dict:
    name = request.param
    tmp = tmp_path_factory.mktemp(f"zoo_{name}")
    zip_path = exports(name)  # shared with test_monailabel_server.py
    train = exports.trained(name)
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


@pytest.mark.parametrize("exported", BUNDLES, indirect=True)
def test_zip_carries_what_it_needs_and_no_run_history(exported: dict) -> None:
    names = zipfile.ZipFile(exported["zip"]).namelist()
    n = exported["name"]
    for required in ("configs/inference.json", "configs/train.json", "configs/metadata.json", "models/model.pt"):
        assert f"{n}/{required}" in names, required
    for required in ("models/model.ts", "models/model_config.json", "docs/README.md", "LICENSE", "custom/__init__.py"):
        assert f"{n}/{required}" in names, required
    if n == "latent_ode":  # the encoder it was trained on, to encode the observed scans
        for required in ("encoder/models/model.pt", "encoder/models/model_config.json"):
            assert f"{n}/{required}" in names, required
    assert not [p for p in names if "/docs/runs/" in p or p.endswith(".npz") or "__pycache__" in p]
    infos = zipfile.ZipFile(exported["zip"]).infolist()
    weights = (f"{n}/models/", f"{n}/encoder/models/")
    big = [i.filename for i in infos if i.file_size > 1_000_000 and not i.filename.startswith(weights)]
    assert big == []


@pytest.mark.parametrize("exported", ENCODERS, indirect=True)
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


@pytest.mark.parametrize("exported", BUNDLES, indirect=True)
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


@pytest.mark.parametrize("exported", ENCODERS, indirect=True)
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


@pytest.mark.parametrize("exported", BUNDLES, indirect=True)
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
    if exported["name"] == "latent_ode" and workflow_type == "infer":  # sizes from models/model_config.json
        assert workflow.network_def.z_dim == Z and workflow.network_def.in_channels == K_OBS * (Z + 3) + M_TGT
    assert workflow.network_def is not None


@pytest.mark.parametrize("exported", ENCODERS, indirect=True)
def test_exported_bundle_runs_inference_in_an_empty_folder(exported: dict, tiny_cohort: Path) -> None:
    where, n = exported["where"], exported["name"]
    item = json.loads((tiny_cohort / "datalist.json").read_text())["test"][0]
    case = [str(tiny_cohort / p) for p in item["image"]]
    datalist = where / "one_case.json"
    datalist.write_text(json.dumps({"test": [{"case_id": item["case_id"], "image": case}]}))
    out = where / f"out_{n}"
    _monai(["run", "--config_file", f"{n}/configs/inference.json", "--datalist", str(datalist)]
           + ["--output_dir", str(out)], where, _env())  # fmt: skip
    (recon,) = out.glob("*recon.nii.gz")
    ref, img = nib.load(case[0]), nib.load(str(recon))
    assert img.shape == (*ref.shape, 4)
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)
    assert np.isfinite(img.get_fdata()).all()
    (latents,) = out.glob("*_latents.json")
    assert len(json.loads(latents.read_text())["mu"]) == Z


@pytest.mark.parametrize("exported", ENCODERS, indirect=True)
def test_a_checkpoint_of_other_sizes_fails_with_one_clear_sentence(exported: dict) -> None:
    from custom.networks import ReconstructionNet, ResNetVAE

    state = torch.load(exported["weights"], map_location="cpu", weights_only=True)
    net = ReconstructionNet(ResNetVAE(in_channels=4, out_channels=4, spatial_size=SIZE, z_dim=2 * Z))
    with pytest.raises(RuntimeError, match="trained with other sizes.*model_config.json"):
        net.load_state_dict(state)


# ---------------------------------------------------------------------------------------------- latent_ode
def _forecaster_reference(weights: Path):
    """The trained forecaster rebuilt from the sizes this test trained with (not from the bundle's configs)."""
    from custom.ode.hybrid import HybridGompertzForecaster

    net = HybridGompertzForecaster(z_dim=Z, vol_index=None, hidden=HIDDEN)
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()


def _pack(mu: torch.Tensor, log_v: torch.Tensor, flags: torch.Tensor, t: torch.Tensor, target: torch.Tensor):
    """The layout of metadata.json's channel_def, written out here: means, ln V, flags, times, target times."""
    return torch.cat([mu.flatten(1), log_v, flags, t, target], 1).float()


@pytest.mark.parametrize("exported", ["latent_ode"], indirect=True)
def test_latent_ode_metadata_states_the_packed_layout_of_the_trained_sizes(exported: dict) -> None:
    root = exported["root"]
    meta = json.loads((root / "configs" / "metadata.json").read_text())
    image, pred = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == K_OBS * (Z + 3) + M_TGT == 39 and image["spatial_shape"] == []
    assert pred["num_channels"] == M_TGT
    assert sorted(image["channel_def"]) == sorted(["0-31", "32-33", "34-35", "36-37", "38-38"])
    assert meta["forecaster"]["z_dim"] == Z and meta["forecaster"]["hidden"] == HIDDEN
    assert "z_dim 128" not in meta["description"]
    cfg = json.loads((root / "configs" / "inference.json").read_text())
    assert cfg["z_dim"] == Z and cfg["encoder_bundle"] == "$@bundle_root + '/encoder'"
    meta_file = str(root / "configs" / "metadata.json")
    proc = _monai(["verify_metadata", "--meta_file", meta_file, "--filepath", str(SCHEMA)], exported["where"], _env())
    assert "metadata is verified with no error" in proc.stdout + proc.stderr


@pytest.mark.parametrize("exported", ["latent_ode"], indirect=True)
def test_latent_ode_ckpt_export_equals_the_eager_forecaster(exported: dict) -> None:
    root = exported["root"]
    ts_file = exported["where"] / "check.ts"
    _monai(
        ["ckpt_export", "network_def", "--filepath", str(ts_file), "--ckpt_file", str(root / "models" / "model.pt")]
        + ["--meta_file", str(root / "configs" / "metadata.json"), "--config_file"]
        + [str(root / "configs" / "inference.json"), "--bundle_root", str(root), "--use_trace", "True"],
        exported["where"],
        _env(root),
    )
    extra = {"metadata.json": "", "inference.json": ""}
    ts = torch.jit.load(str(ts_file), map_location="cpu", _extra_files=extra)
    assert json.loads(extra["metadata.json"])["forecaster"]["z_dim"] == Z
    assert json.loads(extra["inference.json"])["z_dim"] == Z
    eager = _forecaster_reference(exported["weights"])
    g = torch.Generator().manual_seed(5)
    mu = torch.randn(3, K_OBS, Z, generator=g)
    log_v = torch.tensor([[2.0, 2.1], [1.0, 1.3], [0.0, 0.0]])
    flags = torch.tensor([[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]])  # segmentations, one of two, images only
    t, target = torch.tensor([[0.0, 1.0], [0.5, 2.0], [0.0, 0.7]]), torch.tensor([[2.5], [3.0], [1.7]])
    z = (mu - eager.latent_mean) / eager.latent_std
    with torch.no_grad():
        ref = eager(z, log_v, flags.bool(), t, target)
        torch.testing.assert_close(ts(_pack(mu, log_v, flags, t, target)), ref, rtol=1e-5, atol=1e-5)
        shipped = torch.jit.load(str(root / "models" / "model.ts"), map_location="cpu")
        torch.testing.assert_close(shipped(_pack(mu, log_v, flags, t, target)), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("exported", ["latent_ode"], indirect=True)
def test_latent_ode_exported_forecast_in_an_empty_folder_equals_the_packed_network(
    exported: dict, tiny_cohort: Path, trained: TrainedBundles
) -> None:
    """The zip's forecast of a test subject (from its first 2 scans, in a folder with nothing else) equals the
    TorchScript network fed with the dipvae bundle's own inference latents and the volumes of the segmentation
    files (voxel count x voxel volume, read with nibabel); the decoded images have the scans' geometry."""
    from conftest import run_bundle

    where = exported["where"]
    items = json.loads((tiny_cohort / "datalist.json").read_text())["test"]
    subject = items[0]["subject_id"]
    scans = sorted((it for it in items if it["subject_id"] == subject), key=lambda it: it["time_years"])
    out = where / "out_latent_ode"
    _monai(["run", "--config_file", "latent_ode/configs/inference.json", "--datalist", str(tiny_cohort / "datalist.json")]
           + ["--dataset_dir", str(tiny_cohort), "--subject", subject, "--output_dir", str(out)], where, _env())  # fmt: skip
    result = json.loads((out / f"{subject}_forecast.json").read_text())
    assert result["target_times"][0] == pytest.approx(scans[2]["time_years"])

    observed = where / "observed.json"
    rows = [{"case_id": s["case_id"], "image": [str(tiny_cohort / p) for p in s["image"]]} for s in scans[:2]]
    observed.write_text(json.dumps({"test": rows}))
    enc = where / "dipvae_latents"
    run_bundle("run", "--config_file", str(REPO / "bundles" / "dipvae" / "configs" / "inference.json"),
               "--datalist", str(observed), "--ckpt_dir", str(trained("dipvae") / "models"),
               "--output_dir", str(enc), "--amp", "false")  # fmt: skip
    mu = torch.tensor([[json.loads((enc / f"{s['case_id']}_latents.json").read_text())["mu"] for s in scans[:2]]])
    log_v = []
    for s in scans[:2]:
        seg = nib.load(str(tiny_cohort / s["label"]))
        log_v.append(np.log((seg.get_fdata() > 0).sum() * np.prod(seg.header.get_zooms()[:3]) / 1000.0))
    x = _pack(mu, torch.tensor([log_v]), torch.ones(1, 2), torch.tensor([[s["time_years"] for s in scans[:2]]]),
              torch.tensor([[scans[2]["time_years"]]]))  # fmt: skip
    ts = torch.jit.load(str(exported["root"] / "models" / "model.ts"), map_location="cpu")
    with torch.no_grad():
        expected_ml = float(torch.exp(ts(x))[0, 0])
    assert result["forecast_volume_ml"][0] == pytest.approx(expected_ml, rel=1e-4)
    ref = nib.load(str(tiny_cohort / scans[1]["image"][0]))
    for path in result["images"]:
        img = nib.load(path)
        assert img.shape == (*ref.shape, 4) and np.isfinite(img.get_fdata()).all()
        np.testing.assert_allclose(img.affine, ref.affine, atol=1e-4)


@pytest.mark.parametrize("exported", ["latent_ode"], indirect=True)
def test_latent_ode_forecast_from_a_studies_folder_of_4d_scans_equals_the_case_files(
    exported: dict, tiny_cohort: Path, tmp_path: Path
) -> None:
    """What the MONAI Label task runs (custom.ode.studies + forecast_subject): a studies folder with one 4D NIfTI per
    scan (channels stacked here with nibabel) forecasts what the same scans as per-modality files forecast."""
    from custom.ode.forecast import forecast_subject
    from custom.ode.studies import subject_scans_in_folder

    items = json.loads((tiny_cohort / "datalist.json").read_text())["test"]
    subject = items[0]["subject_id"]
    files, four_d = tmp_path / "files", tmp_path / "four_d"
    files.mkdir(), four_d.mkdir()
    rows = ["subject_id,timepoint,time_years"]
    for it in (it for it in items if it["subject_id"] == subject):
        for rel in [*it["image"], it["label"]]:
            (files / Path(rel).name).write_bytes((tiny_cohort / rel).read_bytes())
        (four_d / Path(it["label"]).name).write_bytes((tiny_cohort / it["label"]).read_bytes())
        channels = [nib.load(str(tiny_cohort / rel)) for rel in it["image"]]
        stacked = np.stack([c.get_fdata(dtype=np.float32) for c in channels], -1)
        nib.save(nib.Nifti1Image(stacked, channels[0].affine), str(four_d / f"{it['case_id']}.nii.gz"))
        rows.append(f"{subject},{it['timepoint']},{it['time_years']}")
    for folder in (files, four_d):
        (folder / "times.csv").write_text("\n".join(rows) + "\n")
    root = exported["root"]
    results = []
    for folder, first in ((files, f"{items[0]['case_id']}-t2f.nii.gz"), (four_d, f"{items[0]['case_id']}.nii.gz")):
        scans = subject_scans_in_folder(str(folder / first))
        assert len(scans) == 3 and all("label" in s for s in scans)
        results.append(forecast_subject(str(root / "encoder"), str(root / "models"), str(folder / "out"), scans=scans))
    np.testing.assert_allclose(results[0]["forecast_volume_ml"], results[1]["forecast_volume_ml"], rtol=1e-5)
    for a, b in zip(results[0]["images"], results[1]["images"]):
        ia, ib = nib.load(a), nib.load(b)
        assert ia.shape == ib.shape
        np.testing.assert_allclose(ia.affine, ib.affine, atol=1e-5)
        np.testing.assert_allclose(ia.get_fdata(), ib.get_fdata(), atol=1e-4)
