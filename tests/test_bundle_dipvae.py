"""dipvae through the real CLI (``python -m monai.bundle run training``) at 32^3: the standard decoder, the Spatial
Broadcast Decoder (recipe 2) and the Exp3 layer each train, with the DIP penalty switched on from the first epoch."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY, run_bundle

CFG = REPO / "bundles" / "dipvae" / "configs"

LAYERS = {
    "standard_decoder": [],
    "sbd": ["recipes/recipe2_sbd.json"],
    "exp3": ["exp3.json"],
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_dipvae_trains_with_each_layer(name: str, tiny_cohort: Path, tmp_path: Path) -> None:
    files = ["train.json", *LAYERS[name]]
    config = "[" + ",".join(f"'{CFG / f}'" for f in files) + "]"
    run_bundle(
        "run",
        "training",
        "--config_file",
        config,
        "--dataset_dir",
        str(tiny_cohort),
        "--output_dir",
        str(tmp_path),
        "--ckpt_dir",
        str(tmp_path / "models"),
        "--epochs",
        "1",
        "--val_interval",
        "1",
        "--lambda_start_epoch",
        "0",
        "--lambda_cov_annealing_epochs",
        "1",
        "--best_after_epoch",
        "0",
        *TINY,
    )
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert len(rows) == 1
    row = rows[0]
    # the DIP penalty is at full strength in epoch 1 and contributes a finite, positive term
    assert float(row["sched/lambda_scale"]) == pytest.approx(1.0)
    assert 0.0 < float(row["train_epoch/cov_penalty"]) < float("inf")
    state = torch.load(tmp_path / "models" / "model.pt", map_location="cpu", weights_only=True)
    sbd_keys = [k for k in state if k.startswith("decoder.broadcast_conv")]
    assert bool(sbd_keys) == (name == "sbd")
    partition_file = tmp_path / "models" / "latent_partition.json"
    assert partition_file.exists() == (name == "exp3")
    if name == "exp3":
        partition = json.loads(partition_file.read_text())
        assert partition["partition"]["vol"] == [0]
        assert float(row["train_epoch/sup_loss"]) > 0.0
