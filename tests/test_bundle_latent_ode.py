"""latent_ode as a MONAI bundle on a tiny trajectories file: ``network_def`` loads and returns one tensor, ``run
training`` trains and selects on validation, a resumed run continues at the right epoch, ``evaluate.json`` writes
forecast frames of both modes."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_bundle

CONFIGS = REPO / "bundles" / "latent_ode" / "configs"


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from custom.ode.toy import make_toy_trajectories

    path = tmp_path_factory.mktemp("latent_ode") / "trajectories.pt"
    traj = make_toy_trajectories(
        n_subjects=24, n_times=4, z_dim=5, enc_noise=0.15, seg_noise=0.05, split_fractions=(0.5, 0.25), seed=0
    )
    torch.save(traj, path)
    return path


def _epoch(ckpt: Path) -> int:
    """Epochs done according to the trainer state in a resume checkpoint (Ignite keeps iteration and epoch length)."""
    state = torch.load(ckpt, weights_only=False)["trainer"]
    return state["iteration"] // state["epoch_length"]


def _overrides(traj: Path, out: Path) -> list[str]:
    return [
        "--trajectories_file", str(traj), "--encode", "False", "--output_dir", str(out / "run"),
        "--ckpt_dir", str(out / "models"), "--hidden", "8", "--val_interval", "1", "--checkpoint_interval", "1",
        "--batch_size", "8", "--device", "cpu", "--dataset_dir", str(out / "no_data"),
    ]  # fmt: skip


def test_network_def_loads_from_the_config_and_forward_returns_a_tensor(trajectories: Path, tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(CONFIGS / "train.json"))
    parser.update(
        {
            "trajectories_file": str(trajectories),
            "encode": False,
            "output_dir": str(tmp_path),
            "dataset_dir": str(tmp_path / "no_data"),
        }
    )
    net = parser.get_parsed_content("network")
    z = torch.randn(3, 2, 5)
    out = net(z, torch.full((3, 2), 2.0), torch.ones(3, 2, dtype=torch.bool), torch.tensor([[0.0, 1.0]] * 3),
              torch.tensor([[2.0, 3.0]] * 3))  # fmt: skip
    assert isinstance(out, torch.Tensor) and out.shape == (3, 2) and torch.isfinite(out).all()


def test_training_resume_and_evaluate(trajectories: Path, tmp_path: Path) -> None:
    run_bundle("run", "training", "--config_file", str(CONFIGS / "train.json"), *_overrides(trajectories, tmp_path),
               "--epochs", "2")  # fmt: skip
    models, run = tmp_path / "models", tmp_path / "run"
    assert (models / "model.pt").exists() and json.loads((models / "model_config.json").read_text())["z_dim"] == 5
    assert _epoch(run / "checkpoints" / "last.pt") == 2
    proc = run_bundle("run", "training", "--config_file", str(CONFIGS / "train.json"),
                      *_overrides(trajectories, tmp_path), "--epochs", "4", "--resume", "True")  # fmt: skip
    assert "resuming from iteration" in proc.stdout + proc.stderr
    assert "Epoch[3]" in proc.stdout + proc.stderr and "Epoch[1] Metrics" not in proc.stdout + proc.stderr
    assert _epoch(run / "checkpoints" / "last.pt") == 4
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert all(float(r["val_epoch/rel_vol_err_pct_last"]) >= 0 for r in rows)

    run_bundle("run", "--config_file", str([str(CONFIGS / "train.json"), str(CONFIGS / "evaluate.json")]),
               *_overrides(trajectories, tmp_path))  # fmt: skip
    ev = run / "eval_test"
    frames = list(csv.DictReader((ev / "forecasts_test.csv").open()))
    assert {(r["method"], r["k_obs"]) for r in frames} == {
        (m, k) for m in ("latent_ode_hybrid", "latent_ode_images_only") for k in ("1", "2")
    }
    assert all(float(r["pred_volume_ml"]) > 0 and float(r["pred_sd_log"]) > 0 for r in frames)
    metrics = json.loads((ev / "metrics.json").read_text())
    assert "latent_ode_hybrid (k=2)" in metrics["table"] and (ev / "growth.png").exists()
