"""DDP with 2 processes (gloo on the CPU; nccl on 2 GPUs on request): gradients, the DIP all-gather, and the
real bundle under torchrun.

Backend: ``DIST_TEST_BACKEND=nccl`` (with >= 2 CUDA devices) runs the 2-process comparisons with nccl, rank r on
``cuda:r``, and the single-process reference on ``cuda:0`` (issue 9: the DIP covariance penalty over the global
batch on NCCL equals a single-process computation on the same samples)::

    DIST_TEST_BACKEND=nccl python -m pytest -q tests/test_distributed.py -k "not torchrun"

Default (CI): gloo on the CPU. The torchrun smoke test is unchanged (the bundle picks nccl by itself on a CUDA host).

Why DDP equals the single-process run on the concatenated batch (world size W, equal local batches B):
- ELBO: each rank's loss is a mean over its B samples; DDP averages the parameter gradients over the W ranks, so
  the gradient is (1/W) sum_r (1/B) sum_{b in r} g_b = (1/(WB)) sum_b g_b, the full-batch-mean gradient (exact up
  to fp32 summation order; GroupNorm is per sample, so no batch statistics differ).
- DIP penalty P (Kumar et al. 2018) on the all-gathered mu/logvar: every rank computes the same P(global). The
  backward of ``torch.distributed.nn.functional.all_gather`` sums, over ranks, the gradients that arrive for a
  rank's rows, so dL/dmu_local = W * dP/dmu_global[rows]; DDP's 1/W averaging then gives exactly dP/dtheta.
Reparameterisation noise is made identical by replacing ``reparameterize`` with a fixed global eps, sliced per rank.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from conftest import REPO, TINY

WORLD = 2
B_GLOBAL, Z, SIZE = 4, 16, 32
#: "gloo" (CPU, default) or "nccl" (rank r on cuda:r; needs >= 2 CUDA devices)
BACKEND = os.environ.get("DIST_TEST_BACKEND", "gloo").strip().lower()
if BACKEND not in ("gloo", "nccl"):
    raise ValueError(f"DIST_TEST_BACKEND must be 'gloo' or 'nccl', got {BACKEND!r}")
NCCL = BACKEND == "nccl"
#: SGD step sizes giving a weight change of ~1% of the weight norm (gradient norms ~1.3e5 for the sum-reduced ELBO,
#: ~370 for the DIP set-up): SGD (not Adam, which normalises) so the weight change is -lr * gradient
LR = {"elbo": 2e-6, "dip": 1e-3, "dip_nogather": 1e-3}


# ----------------------------------------------------------------------------------------------- shared set-up
def _device(rank: int) -> torch.device:
    """Where rank ``rank`` (or the single-process reference, rank 0) computes: ``cuda:<rank>`` with nccl, else CPU."""
    return torch.device(f"cuda:{rank}") if NCCL else torch.device("cpu")


def _fp32_cuda() -> None:
    """True fp32 on the GPU: no TF32 in convolutions/matmuls and deterministic cuDNN algorithms (with TF32 the
    10-bit mantissa alone would move the gradients by ~1e-3 and blur the same-order comparison)."""
    if NCCL:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


def _cpu(value: object) -> object:
    """Tensors (also inside dicts and lists) moved to the CPU, so results can be saved and compared anywhere."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_cpu(v) for v in value]
    return value


def _tiny_vae() -> torch.nn.Module:
    from custom.networks import ResNetVAE

    torch.manual_seed(0)
    return ResNetVAE(
        in_channels=4,
        out_channels=4,
        spatial_size=SIZE,
        z_dim=Z,
        widths=(8, 16, 16, 16),
        blocks_per_stage=1,
        num_groups=4,
    )


def _global_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(B_GLOBAL, 4, SIZE, SIZE, SIZE, generator=g)
    eps = torch.randn(B_GLOBAL, Z, generator=g)
    return x, eps


def _fix_noise(net: torch.nn.Module, eps: torch.Tensor) -> None:
    """z = mu + exp(logvar / 2) * eps with a given eps (keeps the logvar path of the reparameterisation)."""
    net.reparameterize = lambda mu, logvar: torch.addcmul(mu, eps, torch.exp(0.5 * logvar))


def _losses() -> dict[str, torch.nn.Module]:
    from custom.losses.dip import DIPVAELoss
    from custom.losses.elbo import VAELoss

    # free_bits 0: the batch-mean free-bits floor is applied per rank-local batch by design (not linear in the batch)
    # recon_sigma 1e3 makes the reconstruction term tiny, so the DIP penalty dominates the DIP gradients
    return {
        "elbo": VAELoss(recon_reduction="sum", free_bits=0.0),
        "dip": DIPVAELoss(lambda_od=10.0, lambda_d=5.0, gather=True, recon_sigma=1e3, free_bits=0.0),
        "dip_nogather": DIPVAELoss(lambda_od=10.0, lambda_d=5.0, gather=False, recon_sigma=1e3, free_bits=0.0),
    }


def _one_step(
    net: torch.nn.Module,
    train_net: torch.nn.Module,
    loss: torch.nn.Module,
    x: torch.Tensor,
    eps: torch.Tensor,
    lr: float,
    device: torch.device = torch.device("cpu"),
) -> dict[str, object]:
    """One real :class:`VAETrainStep` (no clipping) with SGD on ``device`` (``net`` already there); returns grads,
    updated weights (on the CPU) and the step output."""
    from custom.engines.train_step import VAETrainStep

    _fix_noise(net, eps.to(device))
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    engine = SimpleNamespace(
        network=train_net,
        optimizer=opt,
        loss_function=loss,
        state=SimpleNamespace(
            device=device,
            epoch=1,
            iteration=1,
            loss_kwargs={"beta": 1.0, "lambda_scale": 1.0} if hasattr(loss, "gather") else {"beta": 1.0},
        ),
    )
    out = VAETrainStep(amp=False, grad_clip=0.0)(engine, {"image": x})
    return {
        "grads": [p.grad.detach().cpu().clone() for p in net.parameters()],
        "state": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "loss": float(out["loss"]),
        "grad_norm": float(out["grad_norm"]),
    }


# ------------------------------------------------------------------------------------------ the spawned worker
def _worker(rank: int, tmp: str) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    device = _device(rank)
    if NCCL:
        torch.cuda.set_device(device)
        _fp32_cuda()
    dist.init_process_group(BACKEND, init_method=f"file://{tmp}/store", rank=rank, world_size=WORLD)
    from torch.nn.parallel import DistributedDataParallel

    from custom.engines.distributed import EpochMetricsAllReduce
    from custom.losses.dip import dip_penalty, gather_for_dip

    x, eps = _global_batch()
    rows = slice(rank * B_GLOBAL // WORLD, (rank + 1) * B_GLOBAL // WORLD)
    ddp_kwargs = {"device_ids": [rank]} if NCCL else {}
    result: dict[str, object] = {}
    for name, loss in _losses().items():
        net = _tiny_vae().to(device)
        result[name] = _one_step(
            net, DistributedDataParallel(net, **ddp_kwargs), loss, x[rows], eps[rows], LR[name], device
        )

    # the DIP gather on its own: penalty value and gradient w.r.t. this rank's rows
    g = torch.Generator().manual_seed(3)
    mu_all, logvar_all = torch.randn(B_GLOBAL, Z, generator=g), 0.3 * torch.randn(B_GLOBAL, Z, generator=g)
    mu = mu_all[rows].clone().to(device).requires_grad_()
    logvar = logvar_all[rows].clone().to(device).requires_grad_()
    penalty = dip_penalty(*gather_for_dip(mu, logvar), lambda_od=10.0, lambda_d=5.0)[0]
    penalty.backward()
    result["gather"] = {
        "penalty": float(penalty.detach()),
        "mu_grad": mu.grad.cpu().clone(),
        "logvar_grad": logvar.grad.cpu().clone(),
    }

    # epoch metrics: rank r reports r + 1 -> every rank ends with the mean 1.5; other prefixes untouched
    engine = SimpleNamespace(
        state=SimpleNamespace(device=device, metrics={"train_epoch/a": rank + 1.0, "val_epoch/b": float(rank)})
    )
    EpochMetricsAllReduce()(engine)
    result["metrics"] = dict(engine.state.metrics)
    torch.save(_cpu(result), f"{tmp}/rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    if NCCL and torch.cuda.device_count() < WORLD:
        pytest.skip(f"DIST_TEST_BACKEND=nccl needs >= {WORLD} CUDA devices")
    tmp = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(tmp),), nprocs=WORLD, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single_results() -> dict[str, dict]:
    """The full batch of 4 in one process (on cuda:0 with nccl); for the ELBO also the mean of the two half-batch
    gradients."""
    if NCCL and torch.cuda.device_count() < WORLD:
        pytest.skip(f"DIST_TEST_BACKEND=nccl needs >= {WORLD} CUDA devices")
    x, eps = _global_batch()
    device = _device(0)
    _fp32_cuda()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers' thread count: same reduction order inside each convolution
    try:
        out = {}
        for name, loss in _losses().items():
            net = _tiny_vae().to(device)
            out[name] = _one_step(net, net, loss, x, eps, LR[name], device)
        halves = [
            _one_step(net, net, _losses()["elbo"], x[rows], eps[rows], LR["elbo"], device)["grads"]
            for net, rows in ((_tiny_vae().to(device), slice(0, 2)), (_tiny_vae().to(device), slice(2, 4)))
        ]
        out["elbo_halves_mean"] = [(a + b) / 2 for a, b in zip(*halves)]
    finally:
        torch.set_num_threads(threads)
    return out


def _global_loss(state: dict[str, torch.Tensor], loss: torch.nn.Module) -> float:
    """Loss of a fresh forward of the full batch through weights ``state`` (fixed noise)."""
    net = _tiny_vae()
    net.load_state_dict(state)
    x, eps = _global_batch()
    _fix_noise(net, eps)
    with torch.no_grad():
        x_hat, mu, logvar, _ = net(x)
        kwargs = {"lambda_scale": 1.0} if hasattr(loss, "gather") else {}
        return float(loss(x, x_hat, mu, logvar, beta=1.0, **kwargs)["loss"])


def _worst_rel_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """max over parameter tensors of ||a - b|| / ||b|| (norm-relative: robust to near-zero entries)."""
    return max(float((x - y).norm() / (y.norm() + 1e-30)) for x, y in zip(a, b))


#: Full batch vs DDP halves in fp32: the convolution weight gradients are sums over 4 * 32^3 voxels of random-sign
#: terms (the reconstruction residual of an untrained net), so the summation order alone moves them by up to
#: ~1.3e-3 norm-relative (measured: one process, full batch vs the mean of its two halves). 1e-2 leaves ~8x margin;
#: the errors this test exists to catch (a missing or extra 1/W, a rank-local gradient or covariance) are >= 0.3.
FULL_BATCH_RTOL = 1e-2
#: DDP vs the same two half-batch backward passes in one process: only the gloo average differs (g0/2 + g1/2).
#: With nccl the two halves run on two GPUs against the reference's one, in fp32 (TF32 off, deterministic cuDNN,
#: see _fp32_cuda); cuDNN may still pick a different algorithm per device/process, and its fp32 algorithms reorder
#: sums over the 2 * 32^3 voxels: 1e-4 (still >= 3000x below the errors the test exists to catch).
SAME_ORDER_RTOL = 1e-4 if NCCL else 1e-5
#: mean of the rank-local first-step losses vs the full-batch loss (a sum over 4 * 4 * 32^3 voxels): on the CPU
#: the two orders agree to ~1e-7; GPU reductions (tree sums in blocks) reorder more
LOSS_RTOL = 1e-5 if NCCL else 1e-6
#: DIP penalty and its gradient from 2 ranks vs float64 numpy / a single-process fp32 autograd reference
#: (Z = 16, B = 4: tiny matmuls, same tolerances on GPU with TF32 off)
GATHER_RTOL, GATHER_ATOL = 1e-4, 1e-5


# ------------------------------------------------------------------------------------------------------- tests
@pytest.mark.parametrize("loss_name", ["elbo", "dip"])
def test_ddp_step_equals_single_process_on_the_global_batch(ddp_results, single_results, loss_name) -> None:
    single = single_results[loss_name]
    w0 = _tiny_vae().state_dict()
    for rank in range(WORLD):  # DDP keeps the replicas identical, and equal to the full-batch run
        ddp = ddp_results[rank][loss_name]
        assert _worst_rel_error(ddp["grads"], single["grads"]) < FULL_BATCH_RTOL
        if loss_name == "elbo":
            assert _worst_rel_error(ddp["grads"], single_results["elbo_halves_mean"]) < SAME_ORDER_RTOL
        assert ddp["grad_norm"] == pytest.approx(single["grad_norm"], rel=FULL_BATCH_RTOL)
        # the SGD step: the weight change (-lr * gradient, all parameters as one vector; per tensor, fp32 rounding
        # of w - lr * g would dominate where a tensor's update is tiny) compared the same way
        delta = lambda state: torch.cat(  # noqa: E731
            [(state[k] - w0[k]).flatten() for k in w0 if w0[k].is_floating_point()]
        )
        assert _worst_rel_error([delta(ddp["state"])], [delta(single["state"])]) < FULL_BATCH_RTOL
    for key in w0:  # bitwise-identical replicas
        assert torch.equal(ddp_results[0][loss_name]["state"][key], ddp_results[1][loss_name]["state"][key])
    # the loss of a second forward of the global batch through the updated weights
    loss = _losses()[loss_name]
    assert _global_loss(ddp_results[0][loss_name]["state"], loss) == pytest.approx(
        _global_loss(single["state"], loss), rel=1e-5
    )
    # each rank's first-step loss is its local batch mean; their mean is the full-batch loss (ELBO part)
    if loss_name == "elbo":
        mean_local = sum(r[loss_name]["loss"] for r in ddp_results) / WORLD
        assert mean_local == pytest.approx(single["loss"], rel=LOSS_RTOL)


def test_dip_without_gather_is_not_the_global_gradient(ddp_results, single_results) -> None:
    """Negative control: a rank-local covariance gives a different (wrong) gradient, so the test above can fail."""
    assert (
        _worst_rel_error(ddp_results[0]["dip_nogather"]["grads"], single_results["dip"]["grads"]) > 10 * FULL_BATCH_RTOL
    )


def _independent_penalty(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """lambda_od sum_{i!=j} C_ij^2 + lambda_d sum_i (C_ii - 1)^2, C = Cov_biased(mu) + diag(mean exp(logvar))."""
    n = mu.shape[0]
    c = torch.einsum("bi,bj->ij", mu - mu.mean(0), mu - mu.mean(0)) / n + torch.diag(logvar.exp().mean(0))
    off = c * (1 - torch.eye(c.shape[0]))
    return 10.0 * (off**2).sum() + 5.0 * ((torch.diagonal(c) - 1) ** 2).sum()


def test_dip_penalty_and_gradient_use_the_global_batch(ddp_results) -> None:
    g = torch.Generator().manual_seed(3)
    mu_all = torch.randn(B_GLOBAL, Z, generator=g, dtype=torch.float32)
    logvar_all = 0.3 * torch.randn(B_GLOBAL, Z, generator=g)
    # value: numpy, float64, independent of the code under test
    m, lv = mu_all.double().numpy(), logvar_all.double().numpy()
    cov = np.cov(m, rowvar=False, bias=True) + np.diag(np.exp(lv).mean(0))
    off = cov - np.diag(np.diag(cov))
    expected = 10.0 * (off**2).sum() + 5.0 * ((np.diag(cov) - 1) ** 2).sum()
    # gradient of the single-process penalty on the concatenated batch
    mu_ref, lv_ref = mu_all.clone().requires_grad_(), logvar_all.clone().requires_grad_()
    _independent_penalty(mu_ref, lv_ref).backward()
    for rank, res in enumerate(ddp_results):
        rows = slice(rank * B_GLOBAL // WORLD, (rank + 1) * B_GLOBAL // WORLD)
        got = res["gather"]
        assert got["penalty"] == pytest.approx(expected, rel=1e-5)
        # every rank computes the same P, and the gather's backward sums the W copies: W * dP/dmu[rows]
        torch.testing.assert_close(got["mu_grad"], WORLD * mu_ref.grad[rows], rtol=GATHER_RTOL, atol=GATHER_ATOL)
        torch.testing.assert_close(got["logvar_grad"], WORLD * lv_ref.grad[rows], rtol=GATHER_RTOL, atol=GATHER_ATOL)


def test_epoch_metrics_are_averaged_over_ranks(ddp_results) -> None:
    for rank, res in enumerate(ddp_results):
        assert res["metrics"]["train_epoch/a"] == pytest.approx(1.5)
        assert res["metrics"]["val_epoch/b"] == float(rank)


def test_select_handlers_keeps_writers_on_rank_zero(tmp_path: Path) -> None:
    from custom.engines.distributed import EpochMetricsAllReduce, rank_path, select_handlers
    from custom.engines.handlers import NonFiniteGuard

    fake = {
        n: type(n, (), {})()
        for n in (
            "ResumeHandler",
            "EpochAverager",
            "ValidationHandler",
            "TidyCSVWriter",
            "TrainingCheckpoints",
            "DashboardWriter",
            "StatsHandler",
            "TensorBoardStatsHandler",
        )
    }
    guard = NonFiniteGuard(log_path=str(tmp_path / "nonfinite_steps.jsonl"), ckpt_dir=str(tmp_path / "ckpt"))
    handlers = [
        fake["ResumeHandler"],
        fake["EpochAverager"],
        fake["ValidationHandler"],
        guard,
        None,
        fake["TidyCSVWriter"],
        fake["TrainingCheckpoints"],
        fake["DashboardWriter"],
        fake["StatsHandler"],
        fake["TensorBoardStatsHandler"],
    ]
    names0 = [type(h).__name__ for h in select_handlers(handlers, rank=0)]
    assert names0 == [
        "ResumeHandler",
        "EpochAverager",
        "EpochMetricsAllReduce",
        "ValidationHandler",
        "NonFiniteGuard",
        "TidyCSVWriter",
        "TrainingCheckpoints",
        "DashboardWriter",
        "StatsHandler",
        "TensorBoardStatsHandler",
    ]
    sel1 = select_handlers(handlers, rank=1)
    assert [type(h).__name__ for h in sel1] == [
        "ResumeHandler",
        "EpochAverager",
        "EpochMetricsAllReduce",
        "NonFiniteGuard",
    ]
    assert isinstance(sel1[2], EpochMetricsAllReduce)
    assert sel1[3].log_path == tmp_path / "nonfinite_steps.rank1.jsonl" and sel1[3].ckpt_dir is None
    assert guard.ckpt_dir == tmp_path / "ckpt"  # rank 0's guard (the original object) is untouched
    assert rank_path("a/b.jsonl", 0) == "a/b.jsonl" and rank_path("a/b.jsonl", 3) == str(Path("a/b.rank3.jsonl"))


@pytest.mark.parametrize("bundle", ["vae_baseline", "dipvae"])
def test_torchrun_bundle_smoke(bundle: str, tiny_cohort: Path, tmp_path: Path) -> None:
    """The real layered config under torchrun, 2 CPU ranks (gloo), 1 epoch with validation on rank 0."""
    cfg = REPO / "bundles" / bundle / "configs"
    out = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(WORLD),
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        f"['{cfg / 'train.json'}','{cfg / 'multi_gpu_train.json'}']",
        "--dataset_dir",
        str(tiny_cohort),
        "--output_dir",
        str(out),
        "--ckpt_dir",
        str(out / "models"),
        "--epochs",
        "1",
        "--val_interval",
        "1",
        *TINY,
    ]
    if bundle == "dipvae":
        cmd += ["--lambda_start_epoch", "0"]  # the penalty (and its all-gather) is active in the smoke run
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    if proc.returncode != 0 and "terminate called without an active exception" in proc.stderr:
        # Known flake (about 1 run in 5 on a loaded 2-core host): a gloo rank aborts during interpreter teardown
        # *after* training, validation and checkpointing completed. Rerun once; a real failure fails twice.
        proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [1]  # one writer: rank 0
    assert rows[0]["val_epoch/loss"] not in ("", "nan")
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (out / "checkpoints" / "last.pt").exists() and (out / "models" / "model.pt").exists()
    ckpt = torch.load(out / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    assert not any(k.startswith("module.") for k in ckpt["network"])  # the bare network is saved, not the DDP wrapper
    assert not list(out.rglob("*rank1*"))  # nothing non-finite, so no per-rank log either
    if bundle == "dipvae":
        assert float(rows[0]["train_epoch/cov_penalty"]) > 0
