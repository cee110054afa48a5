"""The training-step hooks on a tiny CPU run: epoch means against a recomputation from snapshotted weights, the
profile summary (well-formed, CPU fields null with a reason) and the host reads of device scalars per step."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from torch import nn

from custom.engines.handlers import EpochAverager, StepProfiler
from custom.engines.handlers.profiler import idle_share, summarize_profile
from custom.engines.latent_buffer import TrainingLatents
from custom.engines.train_step import VAETrainStep
from custom.losses.elbo import VAELoss


class _TinyVAE(nn.Module):
    """A deterministic 2-latent VAE on 1 x 4^3 volumes (no dropout, no running statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(64, 4)
        self.dec = nn.Linear(2, 64)

    def forward(self, x: torch.Tensor):
        h = self.enc(x.flatten(1))
        mu, logvar = h[:, :2], h[:, 2:].clamp(-4, 4)
        return self.dec(mu).view_as(x), mu, logvar, mu


def _batches(n: int, nan_at: int | None = None) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        x = torch.randn(2, 1, 4, 4, 4, generator=g)
        if i == nan_at:
            x[0, 0, 0, 0, 0] = float("nan")
        out.append({"image": x, "factors": torch.randn(2, 3, generator=g), "subject_id": [f"s{i}a", f"s{i}b"]})
    return out


def _engine(latents: TrainingLatents | None = None) -> Engine:
    torch.manual_seed(0)
    step = VAETrainStep(grad_clip=5.0, latents=latents)
    engine = Engine(step)
    engine.network = _TinyVAE()
    engine.optimizer = torch.optim.AdamW(engine.network.parameters(), lr=1e-2, fused=True)  # as the bundles
    engine.loss_function = VAELoss(recon_reduction="sum", free_bits=0.0)
    engine.state.device = torch.device("cpu")
    engine.state.loss_kwargs = {"beta": 1.0}

    @engine.on(Events.STARTED)
    def _device(e: Engine) -> None:  # Engine.run resets the state's extra fields only at construction
        e.state.device = torch.device("cpu")
        e.state.loss_kwargs = {"beta": 1.0}

    return engine


def test_epoch_means_equal_a_recomputation_from_the_pre_step_weights() -> None:
    """train_epoch/loss and /kl_raw = mean over the finite steps of the loss recomputed, outside the step, from a
    copy of the weights taken before each step; the non-finite step is excluded and counted."""
    data = _batches(5, nan_at=2)
    latents = TrainingLatents()
    engine = _engine(latents)
    EpochAverager().attach(engine)
    latents.attach(engine)
    snapshots: list[nn.Module] = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: snapshots.append(copy.deepcopy(e.network)))
    engine.run(data, max_epochs=1)

    loss_fn = VAELoss(recon_reduction="sum", free_bits=0.0)
    losses, kls, mus = [], [], []
    for net, batch in zip(snapshots, data):
        with torch.no_grad():
            x_hat, mu, logvar, _ = net(batch["image"])
            terms = loss_fn(batch["image"], x_hat, mu, logvar, beta=1.0)
        mus.append(mu.numpy())
        if np.isfinite(terms["loss"].item()):
            losses.append(terms["loss"].item())
            kls.append(terms["kl_raw"].item())
    m = engine.state.metrics
    assert len(losses) == 4
    assert m["train_epoch/loss"] == pytest.approx(np.mean(losses), rel=1e-5)
    assert m["train_epoch/kl_raw"] == pytest.approx(np.mean(kls), rel=1e-5)
    assert m["train_epoch/steps_skipped"] == 1.0
    assert m["train_epoch/volumes_per_s"] > 0
    # the probes' fit set: every scan's mu with a finite row (the NaN voxel makes only its own scan's mu NaN)
    arrays = latents.arrays()
    assert arrays is not None
    expected = np.concatenate(mus)
    keep = np.isfinite(expected).all(axis=1)
    assert keep.sum() == 9
    np.testing.assert_allclose(arrays["mu"], expected[keep], rtol=1e-5, atol=1e-6)
    ids = np.asarray([s for b in data for s in b["subject_id"]])
    assert list(arrays["subject_id"]) == list(ids[keep])


def test_profile_summary_on_cpu(tmp_path: Path) -> None:
    """Epoch 2, iterations 2-3 profiled: both files written, CPU-only fields null with the reason, one host read of
    a device scalar per step (the finiteness check's ``bool``)."""
    engine = _engine()
    profiler = StepProfiler(steps=2, out_dir=str(tmp_path), epoch=2, skip=1, top=5)
    profiler.attach(engine)
    engine.run(_batches(4), max_epochs=2)

    summary = json.loads((tmp_path / "profile_summary.json").read_text())
    assert (tmp_path / "profile_summary.md").read_text().startswith("### Training-step profile")
    assert summary["steps"] == 2 and summary["epoch"] == 2
    assert (summary["first_iteration"], summary["last_iteration"]) == (2, 3)
    assert summary["gpu_idle_share"] is None and "CPU-only" in summary["gpu_idle_share_reason"]
    assert summary["host_syncs_per_step"]["sync_calls"] is None
    assert summary["host_syncs_per_step"]["memcpy_dtoh"] is None
    assert summary["host_syncs_per_step"]["scalar_reads"]["from_python"] == 1.0
    assert 1 <= len(summary["top_kernels"]) <= 5
    assert summary["top_kernels"][0]["ms_per_step"] >= summary["top_kernels"][-1]["ms_per_step"]


def test_profiler_off_attaches_nothing() -> None:
    engine = _engine()
    before = sum(len(engine._event_handlers[e]) for e in engine._event_handlers)
    StepProfiler(steps=None, out_dir="unused").attach(engine)
    assert sum(len(engine._event_handlers[e]) for e in engine._event_handlers) == before


def test_idle_share_by_hand() -> None:
    """Busy [0,2], [1,3], [5,6], [8,10] (us): union 3 + 1 + 2 = 6 over the window 0-10, idle 0.4; gaps 2 and 2."""
    out = idle_share([(5, 6), (0, 2), (1, 3), (8, 10)])
    assert out["idle_share"] == pytest.approx(0.4)
    assert out["busy_us"] == 6 and out["window_us"] == 10
    assert out["longest_gaps_us"] == [2.0, 2.0]


class _Event:
    def __init__(self, name: str, device: str, start: float, end: float, self_cpu: float = 0.0) -> None:
        self.name, self.self_cpu_time_total = name, self_cpu
        self.device_type = f"DeviceType.{device}"
        self.cpu_parent = None
        self.time_range = type("R", (), {"start": start, "end": end})()


def test_cuda_summary_counts_by_hand() -> None:
    """Two steps: kernels a (2 x 3 us) and b (1 x 4 us), one DtoH copy, two stream syncs, two scalar reads from
    Python and one inside another operator."""
    events = [
        _Event("a", "CUDA", 0, 3),
        _Event("b", "CUDA", 3, 7),
        _Event("Memcpy DtoH (Device -> Pinned)", "CUDA", 8, 9),
        _Event("a", "CUDA", 10, 13),
        _Event("cudaStreamSynchronize", "CPU", 0, 1),
        _Event("cudaStreamSynchronize", "CPU", 5, 6),
        _Event("aten::_local_scalar_dense", "CPU", 0, 1),
        _Event("aten::_local_scalar_dense", "CPU", 5, 6),
        _Event("aten::_local_scalar_dense", "CPU", 7, 8),
    ]
    events[-3].cpu_parent = _Event("aten::item", "CPU", 0, 1)
    events[-1].cpu_parent = _Event("aten::_fused_adamw_", "CPU", 7, 8)
    s = summarize_profile(events, steps=2, cuda=True)
    assert s["gpu_idle_share"] == pytest.approx(1 - 11 / 13)  # busy 0-7, 8-9, 10-13 over 0-13
    assert s["host_syncs_per_step"]["sync_calls"]["cudaStreamSynchronize"] == 1.0
    assert s["host_syncs_per_step"]["memcpy_dtoh"] == 0.5
    assert s["host_syncs_per_step"]["scalar_reads"] == {"from_python": 1.0, "all": 1.5}
    top = {r["name"]: r for r in s["top_kernels"]}
    assert top["a"]["ms_per_step"] == pytest.approx(0.003) and top["a"]["calls_per_step"] == 1.0
    assert top["b"]["ms_per_step"] == pytest.approx(0.002)
