"""Kill-and-resume: a training run SIGKILLed mid-epoch and resumed ends bit-identical to an uninterrupted one.

Both runs use the real CLI (``python -m monai.bundle run training``) at 32^3 with 2 iterations per epoch.
The killed run gets one extra config file that, at the first iteration of epoch 2 (after ``last.pt`` of
epoch 1 exists), touches a marker file and sleeps; the test then sends SIGKILL from outside, so the process
dies mid-epoch exactly as under a scheduler's kill. The resumed run (``--resume true``) restarts epoch 2
from ``last.pt``. Expected: ``torch.equal`` on every final weight tensor (CPU, one thread in every run, so
the float reductions are ordered identically), the same per-epoch losses, one CSV row per epoch.

Bit-identity needs each epoch's shuffle to be a function of (seed, epoch) only: ``train#sampler`` is a
``DistributedSampler(num_replicas=1, rank=0, seed=@seed)`` whose ``set_epoch`` MONAI's workflow calls at
every epoch start. (``RandomSampler`` on the loader's generator is not enough: the generator is consumed by
an extra ``randperm`` when the previous epoch's iterator is exhausted, which a resumed run never does.)
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, TINY

CFG = REPO / "bundles" / "vae_baseline" / "configs"
EPOCHS = 2
ITERS_PER_EPOCH = 2  # limit_cases 4, batch 2, drop_last


def _cmd(out: Path, cohort: Path, extra_cfg: Path | None = None, resume: bool = False) -> list[str]:
    cfg = str(CFG / "train.json") if extra_cfg is None else f"['{CFG / 'train.json'}','{extra_cfg}']"
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        cfg,
        "--dataset_dir",
        str(cohort),
        "--datalist",
        str(cohort / "datalist.json"),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(out / "models"),
        "--epochs",
        str(EPOCHS),
        "--limit_cases",
        "4",
        "--val_interval",
        "1",
        "--figure_interval",
        "100",
        "--cache",
        "none",
        "--resume",
        "true" if resume else "false",
        *TINY,
    ]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return dict(env, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _kill_config(path: Path, marker: Path, iteration: int) -> Path:
    """Extra config: same ``run`` list plus a handler that parks the process at ``iteration`` for the kill."""
    cfg = {
        "imports": [
            "$import torch",
            "$import sys",
            "$import monai",
            "$import time",
            "$import pathlib",
            "$import ignite",
        ],
        "kill_marker": str(marker),
        "run": [
            "$@train#checkpoints.attach_best(@validate#evaluator)",
            f"$@train#trainer.add_event_handler(ignite.engine.Events.ITERATION_COMPLETED(once={iteration}), "
            "lambda e: (pathlib.Path(@kill_marker).touch(), time.sleep(120)))",
            "$@train#trainer.run()",
        ],
    }
    path.write_text(json.dumps(cfg))
    return path


def test_train_config_shuffles_as_a_function_of_seed_and_epoch() -> None:
    sampler = json.loads((CFG / "train.json").read_text())["train"]["sampler"]
    assert sampler and sampler["_target_"].endswith("DistributedSampler"), (
        "train.json needs train#sampler = DistributedSampler(num_replicas=1, rank=0, shuffle=True, seed=@seed) "
        "for bit-identical resume"
    )
    assert sampler["seed"] == "@seed" and sampler["shuffle"] is True


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "metrics.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def runs(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("resume")
    ref, killed = tmp / "uninterrupted", tmp / "killed"
    env = _env()
    # the uninterrupted reference runs concurrently with the kill/resume sequence (one thread each)
    ref_proc = subprocess.Popen(
        _cmd(ref, tiny_cohort), cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    marker = tmp / "parked"
    kill_cfg = _kill_config(tmp / "kill.json", marker, ITERS_PER_EPOCH + 1)
    victim = subprocess.Popen(
        _cmd(killed, tiny_cohort, kill_cfg),
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 240
    while not marker.exists():
        if victim.poll() is not None or time.time() > deadline:
            victim.kill()
            ref_proc.kill()
            pytest.fail(f"killed run never reached epoch 2:\n{victim.communicate()[0][-4000:]}")
        time.sleep(0.2)
    victim.send_signal(signal.SIGKILL)
    victim.communicate(timeout=60)
    state_after_kill = {
        "returncode": victim.returncode,
        "ckpt": torch.load(killed / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)["trainer"],
        "rows": _rows(killed),
        "tmp_files": sorted(p.name for p in (killed / "checkpoints").iterdir() if p.name != "last.pt"),
    }
    resumed = subprocess.run(
        _cmd(killed, tiny_cohort, resume=True), cwd=REPO, env=env, capture_output=True, text=True, timeout=400
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-5000:]
    ref_out = ref_proc.communicate(timeout=400)[0]
    assert ref_proc.returncode == 0, ref_out[-5000:]
    (tmp / "after_kill.json").write_text(json.dumps(state_after_kill, default=str))
    return {"ref": ref, "killed": killed, "after_kill": tmp / "after_kill.json", "resumed_log": resumed.stderr}


def test_kill_happened_mid_epoch_two(runs: dict[str, Path]) -> None:
    after = json.loads(runs["after_kill"].read_text())
    assert after["returncode"] == -signal.SIGKILL
    # Ignite's trainer state holds iteration and epoch_length: last.pt is the end of epoch 1
    assert after["ckpt"]["epoch_length"] == ITERS_PER_EPOCH and after["ckpt"]["iteration"] == ITERS_PER_EPOCH
    assert [int(r["epoch"]) for r in after["rows"]] == [1]
    # atomic writes: no temporary checkpoint left beside last.pt (DiskSaver writes then renames)
    assert not [n for n in after["tmp_files"] if n.endswith((".tmp", ".part"))], after["tmp_files"]


def test_resumed_weights_are_bit_identical(runs: dict[str, Path]) -> None:
    ref = torch.load(runs["ref"] / "models" / "model_final.pt", map_location="cpu")
    res = torch.load(runs["killed"] / "models" / "model_final.pt", map_location="cpu")
    assert ref.keys() == res.keys()
    different = [k for k in ref if not torch.equal(ref[k], res[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


def test_resumed_optimizer_and_engine_state_match(runs: dict[str, Path]) -> None:
    ref = torch.load(runs["ref"] / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    res = torch.load(runs["killed"] / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert ref["trainer"]["iteration"] == res["trainer"]["iteration"] == EPOCHS * ITERS_PER_EPOCH
    for group_ref, group_res in zip(ref["optimizer"]["state"].values(), res["optimizer"]["state"].values()):
        for key in group_ref:
            assert torch.equal(torch.as_tensor(group_ref[key]), torch.as_tensor(group_res[key])), key
    assert torch.equal(ref["rng"]["torch"], res["rng"]["torch"])
    assert torch.equal(ref["loader_rng"]["generator"], res["loader_rng"]["generator"])


def test_tidy_csv_has_each_epoch_once_with_the_same_losses(runs: dict[str, Path]) -> None:
    ref, res = _rows(runs["ref"]), _rows(runs["killed"])
    assert [int(r["epoch"]) for r in res] == list(range(1, EPOCHS + 1))
    assert [int(r["iteration"]) for r in res] == [ITERS_PER_EPOCH * e for e in range(1, EPOCHS + 1)]
    for col in ("train_epoch/loss", "train_epoch/kl_raw", "sched/beta", "val_epoch/loss"):
        assert [r[col] for r in res] == [r[col] for r in ref], col
