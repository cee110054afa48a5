"""Epoch timing columns of EpochAverager and the multi-GPU scaling script (benchmarks/scaling.py) in CPU mode."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import REPO
from ignite.engine import Engine, Events

from custom.engines.handlers import EpochAverager, epoch_stats

STEP_S = 0.02  # each fake step sleeps this long: the epoch cannot be faster than steps x STEP_S


def _load_scaling() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scaling_script", REPO / "benchmarks" / "scaling.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is created
    spec.loader.exec_module(module)
    return module


def _fake_trainer() -> Engine:
    """An Ignite engine whose step returns the loss of its batch (a tensor, like VAETrainStep) after a short sleep."""

    def step(engine: Engine, batch: dict) -> dict:
        time.sleep(STEP_S)
        return {"loss": batch["loss"], "finite": torch.tensor(True)}

    engine = Engine(step)
    EpochAverager().attach(engine)
    return engine


def test_epoch_averager_publishes_seconds_and_volumes_per_s() -> None:
    sizes, losses = [3, 2, 4], [1.0, 2.0, 6.0]
    data = [{"image": torch.zeros(b, 4, 2, 2, 2), "loss": torch.tensor(v)} for b, v in zip(sizes, losses)]
    engine = _fake_trainer()
    seen: list[dict] = []
    engine.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seen.append(dict(e.state.metrics)))
    t0 = time.perf_counter()
    engine.run(data, max_epochs=2)
    total = time.perf_counter() - t0
    assert len(seen) == 2
    for metrics in seen:
        assert {"train_epoch/seconds", "train_epoch/volumes_per_s", "train_epoch/loss"} <= set(metrics)
        assert "train_epoch/peak_gpu_gib" not in metrics  # CPU engine: no GPU column
        seconds = metrics["train_epoch/seconds"]
        assert len(sizes) * STEP_S <= seconds <= total
        assert metrics["train_epoch/volumes_per_s"] == pytest.approx(sum(sizes) / seconds, rel=1e-12)
        assert metrics["train_epoch/loss"] == pytest.approx(3.0)  # (1 + 2 + 6) / 3


def test_volumes_per_s_counts_every_rank_and_list_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(epoch_stats, "rank_and_world", lambda: (0, 2))  # as under a 2-process group
    data = [[{"image": torch.zeros(4, 2, 2, 2)}] * 2, [{"image": torch.zeros(4, 2, 2, 2)}] * 3]  # decollated
    engine = Engine(lambda e, b: time.sleep(STEP_S))  # outputs None: only the timing columns exist
    EpochAverager().attach(engine)
    engine.run(data, max_epochs=1)
    m = engine.state.metrics
    assert m["train_epoch/volumes_per_s"] == pytest.approx(2 * 5 / m["train_epoch/seconds"], rel=1e-12)
    assert epoch_stats.batch_volumes({"image": torch.zeros(7, 1)}) == 7
    assert epoch_stats.batch_volumes(torch.zeros(5, 1)) == 5 and epoch_stats.batch_volumes(None) == 0


def test_summarise_drops_the_first_epoch_and_takes_medians() -> None:
    scaling = _load_scaling()
    # 3 steps per epoch, batch 2, N = 2 -> 12 volumes per epoch; epoch 1 (warm-up) is an outlier that must not count
    metrics = [
        {
            "epoch": str(e),
            "iteration": str(3 * e),
            "train_epoch/seconds": str(s),
            "train_epoch/volumes_per_s": str(v),
            "train_epoch/peak_gpu_gib": str(g),
        }
        for e, s, v, g in ((1, 60.0, 0.2, 9.0), (2, 1.0, 12.0, 3.0), (3, 2.0, 6.0, 3.5), (4, 1.5, 8.0, 3.2))
    ]
    row = scaling.ScalingRow(bundle="b", gpus=2)
    scaling.summarise(row, metrics, batch_size=2)
    assert row.vols_per_s == 8.0 and row.epoch_s == 1.5 and row.peak_gib == 3.5
    assert row.vols_per_epoch == 12 and row.epochs_used == 3
    rows = [scaling.ScalingRow("b", 1, vols_per_s=5.0), row, scaling.ScalingRow("c", 2, vols_per_s=9.0)]
    scaling.efficiencies(rows)
    assert rows[0].efficiency == 1.0 and row.efficiency == pytest.approx(8.0 / (2 * 5.0))
    assert rows[2].efficiency is None  # no single-GPU row for bundle c
    with pytest.raises(KeyError, match="no_such_id"):
        scaling.check_override_ids("vae_baseline", {"no_such_id": 1})


def test_scaling_script_cpu_rows_for_one_and_two_processes(tmp_path: Path) -> None:
    scaling = _load_scaling()
    payload = scaling.run_scaling(
        gpus="1,2",
        bundles="vae_baseline",
        out=str(tmp_path),
        epochs=2,
        subjects=4,
        timepoints=2,
        spatial_size=32,
        spacing=7.5,
        batch_size=2,
        device="cpu",
        overrides={"z_dim": 16, "num_workers": 1},
        timeout_s=240,
    )
    rows = {r["gpus"]: r for r in payload["rows"]}
    assert sorted(rows) == [1, 2]
    for n, r in rows.items():
        assert r["status"] == "ok", (r["status"], (tmp_path / f"vae_baseline_n{n}" / "log.txt").read_text()[-3000:])
        assert r["vols_per_s"] > 0 and r["epoch_s"] > 0 and r["epochs_used"] == 1  # epoch 1 dropped
        assert r["peak_gib"] is None  # CPU: no GPU column
        # volumes per epoch from the iteration counter: steps x batch x N, at most the padded training list
        train = payload["training_volumes_in_datalist"]
        padded = -(-train // n) * n
        assert r["vols_per_epoch"] == (padded // n // 2) * 2 * n
        assert (tmp_path / f"vae_baseline_n{n}" / "log.txt").exists()
    assert rows[1]["efficiency"] == 1.0
    assert rows[2]["efficiency"] == pytest.approx(rows[2]["vols_per_s"] / (2 * rows[1]["vols_per_s"]))
    written = json.loads((tmp_path / "scaling.json").read_text())
    assert written["environment"]["torch"] == torch.__version__ and written["environment"]["gpu_count"] == 0
    md = (tmp_path / "scaling.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| vae_baseline")]
    assert [ln.split("|")[2].strip() for ln in table] == ["1", "2"]
