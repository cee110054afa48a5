"""End to end through the real CLI: ``python -m monai.bundle run`` for train, evaluate, inference, export (32^3)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO, TINY, run_bundle

BUNDLE = REPO / "bundles" / "vae_baseline"
CFG = BUNDLE / "configs"


@pytest.fixture(scope="module")
def trained(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("vae_run")
    models = out / "models"
    run_bundle(
        "run",
        "training",
        "--config_file",
        str(CFG / "train.json"),
        "--dataset_dir",
        str(tiny_cohort),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(models),
        "--epochs",
        "2",
        "--val_interval",
        "1",
        "--tumour_weight",
        "5",
        "--tumour_weight_hold",
        "1",
        "--augment_on",
        "batch",
        *TINY,
    )
    # augment_on batch here (the training step warps each batch); test_resume.py runs the default per-volume chain
    return {"out": out, "models": models, "cohort": tiny_cohort}


def test_training_leaves_every_artefact(trained: dict[str, Path]) -> None:
    out = trained["out"]
    assert (trained["models"] / "model.pt").exists()
    assert (out / "checkpoints" / "last.pt").exists()
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert (out / "dashboard.png").stat().st_size > 10_000
    assert list((out / "figures").glob("recon_epoch0002_*.png"))
    assert list((out / "figures").glob("recon_epoch0002_*_recon.nii.gz"))
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    for col in ("train_epoch/loss", "train_epoch/kl_raw", "sched/beta", "val_epoch/ssim_t1c", "diag/au_count"):
        assert rows[-1][col] not in ("", "nan"), col
    # beta at epoch 1 of the cyclical schedule is 0 (Fu et al. 2019), the free-bits floor is 0.1 * z_dim
    assert float(rows[0]["sched/beta"]) == 0.0
    assert float(rows[0]["sched/expected_kl_floor"]) == pytest.approx(0.1 * 16)
    # tumour-emphasis warm-up from the command line: weight 5 for epoch 1, the plain likelihood from epoch 2
    assert [float(r["sched/tumour_weight"]) for r in rows] == [5.0, 1.0]


def test_checkpoint_holds_resume_state(trained: dict[str, Path]) -> None:
    ckpt = torch.load(trained["out"] / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert {"network", "optimizer", "trainer", "rng"} <= set(ckpt)
    # Ignite stores the iteration; with epoch_length it gives the epoch the run resumes after
    assert ckpt["trainer"]["iteration"] == 2 * ckpt["trainer"]["epoch_length"]


def test_evaluate_writes_metrics_and_figures(trained: dict[str, Path]) -> None:
    out = trained["out"]
    run_bundle(
        "run",
        "--config_file",
        f"['{CFG / 'train.json'}','{CFG / 'evaluate.json'}']",
        "--dataset_dir",
        str(trained["cohort"]),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(trained["models"]),
        "--eval_split",
        "training",
        *TINY,
    )
    ev = out / "eval_training"
    metrics = json.loads((ev / "metrics.json").read_text())["metrics"]
    for key in ("diag/au_count", "val_epoch/psnr_t1c", "probe/r2_log_volume", "dci/disentanglement", "mig/oracle"):
        assert key in metrics, key
    assert (ev / "dashboard.png").exists() and (ev / "traversal.png").exists()
    assert not (ev / "probes.png").exists()  # the probe is fitted on this split: no held-out figure
    # the validation subjects were encoded to choose the probes' penalty (probe_select pass)
    assert (out / "eval_validation" / "metrics.json").exists() and (ev / "latents_validation.npz").exists()
    assert metrics["probe/alpha_from_validation"] in (0.0, 1.0)
    lat = np.load(ev / "latents.npz")
    assert lat["mu"].shape[1] == 16


def test_inference_writes_reconstruction_in_input_geometry(trained: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "infer"
    run_bundle(
        "run",
        "--config_file",
        str(CFG / "inference.json"),
        "--datalist",
        str(trained["cohort"] / "datalist.json"),
        "--ckpt_dir",
        str(trained["models"]),
        "--output_dir",
        str(out),
        "--spatial_size",
        "[32,32,32]",
        "--spacing",
        "7.5",
        "--z_dim",
        "16",
        "--amp",
        "false",
    )
    recons = sorted(out.glob("*recon.nii.gz"))
    latents = sorted(out.glob("*_latents.json"))
    assert recons and latents
    test_items = json.loads((trained["cohort"] / "datalist.json").read_text())["test"]
    src = nib.load(str(trained["cohort"] / test_items[0]["image"][0]))
    rec = nib.load(str(recons[0]))
    assert rec.shape[:3] == src.shape[:3]
    np.testing.assert_allclose(rec.affine, src.affine, atol=1e-3)
    assert len(json.loads(latents[0].read_text())["mu"]) == 16


def test_ckpt_export_traced_matches_eager(trained: dict[str, Path], tmp_path: Path) -> None:
    from custom.networks import ReconstructionNet, ResNetVAE

    ts = tmp_path / "model.ts"
    run_bundle(
        "ckpt_export",
        "network",
        "--filepath",
        str(ts),
        "--ckpt_file",
        str(trained["models"] / "model.pt"),
        "--meta_file",
        str(CFG / "metadata.json"),
        "--config_file",
        str(CFG / "inference.json"),
        "--use_trace",
        "True",
        "--input_shape",
        "[1,4,32,32,32]",
        "--spatial_size",
        "[32,32,32]",
        "--z_dim",
        "16",
        "--bundle_root",
        str(BUNDLE),
    )
    vae = ResNetVAE(spatial_size=32, z_dim=16)
    vae.load_state_dict(torch.load(trained["models"] / "model.pt", map_location="cpu", weights_only=True))
    eager = ReconstructionNet(vae).eval()
    traced = torch.jit.load(str(ts)).eval()
    x = torch.randn(2, 4, 32, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(traced(x), eager(x), rtol=1e-4, atol=1e-4)
