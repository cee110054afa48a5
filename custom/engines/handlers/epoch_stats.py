"""Per-epoch means of the training step's loss terms, kept on the device until the epoch ends; plus epoch timing.

Adding the step outputs on the device avoids a host sync per iteration; one ``.item()`` per term
happens at ``EPOCH_COMPLETED``. Skipped (non-finite) steps are excluded from the means.

Timing (the scaling table of ``benchmarks/scaling.py`` reads these columns):

- ``train_epoch/seconds``: wall time from ``EPOCH_STARTED`` to ``EPOCH_COMPLETED`` of this rank, with a
  ``torch.cuda.synchronize()`` at both ends when the engine runs on CUDA, so queued kernels are counted in the
  epoch that launched them (two syncs per epoch, none per iteration).
- ``train_epoch/volumes_per_s``: ``local volumes x world size / seconds``. Local volumes are counted at
  ``ITERATION_COMPLETED`` from the batch's leading dimension (``batch["image"].shape[0]``, a Python int: no
  host-device sync); every rank processes the same number of volumes (``DistributedSampler(even_divisible=True)``,
  ``drop_last``), so ``x world size`` is the global count. Skipped (non-finite) steps count: their volumes were
  processed.
- ``train_epoch/peak_gpu_gib``: ``torch.cuda.max_memory_allocated()`` / 2^30 of this rank's device over the epoch
  (peak statistics reset at ``EPOCH_STARTED``); omitted when the engine does not run on CUDA.

Under DDP, :class:`custom.engines.distributed.EpochMetricsAllReduce` (attached right after this handler) replaces
every ``train_epoch/*`` value by its mean over the ranks: the logged seconds, volumes/s and peak GiB are then
means of the per-rank values.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from custom.engines.distributed import rank_and_world

#: metric names (after the prefix) that measure time or memory, not the model: they differ between identical runs
TIMING_METRICS: tuple[str, ...] = ("seconds", "volumes_per_s", "peak_gpu_gib")


def batch_volumes(batch: Any) -> int:
    """Number of volumes in a training batch without touching the data: ``batch["image"].shape[0]`` for a dict
    batch, the leading dimension of a tensor, ``len`` of a list/tuple (a decollated batch); 0 when unknown."""
    if isinstance(batch, Mapping):
        batch = batch.get("image")
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.dim() > 0 else 0
    if isinstance(batch, Sequence) and not isinstance(batch, (str, bytes)):
        return len(batch)
    return 0


def _cuda_device(engine: Engine) -> torch.device | None:
    """The CUDA device the engine runs on (``engine.state.device``), or None when it runs elsewhere."""
    device = getattr(engine.state, "device", None)
    if device is None:
        return None
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return None
    return device


class EpochAverager:
    """Writes ``engine.state.metrics["train_epoch/<term>"]`` (mean over finite steps of the epoch) and the epoch's
    ``seconds``, ``volumes_per_s`` and (on CUDA) ``peak_gpu_gib`` (see the module docstring)."""

    def __init__(self, prefix: str = "train_epoch/") -> None:
        self.prefix = prefix
        self._sums: dict[str, torch.Tensor] = {}
        self._count: torch.Tensor | None = None
        self._volumes = 0
        self._t0: float | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _reset(self, engine: Engine) -> None:
        self._sums, self._count, self._volumes = {}, None, 0
        device = _cuda_device(engine)
        if device is not None:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
        self._t0 = time.perf_counter()

    def _accumulate(self, engine: Engine) -> None:
        self._volumes += batch_volumes(engine.state.batch)
        out = engine.state.output
        if not isinstance(out, dict):
            return
        finite = out.get("finite")
        w = finite.float() if isinstance(finite, torch.Tensor) else torch.tensor(1.0)
        self._count = w if self._count is None else self._count + w
        for key, value in out.items():
            if key == "finite" or not isinstance(value, torch.Tensor) or value.numel() != 1:
                continue
            v = torch.where(w > 0, value.float(), torch.zeros_like(value, dtype=torch.float32))
            self._sums[key] = v if key not in self._sums else self._sums[key] + v

    def _publish(self, engine: Engine) -> None:
        self._publish_timing(engine)
        if self._count is None:
            return
        n = float(self._count)
        for key, total in self._sums.items():
            engine.state.metrics[self.prefix + key] = float(total) / n if n > 0 else float("nan")
        engine.state.metrics[self.prefix + "steps_skipped"] = float(engine.state.epoch_length or 0) - n

    def _publish_timing(self, engine: Engine) -> None:
        if self._t0 is None:  # attached mid-epoch: no start time
            return
        device = _cuda_device(engine)
        if device is not None:
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - self._t0
        metrics = engine.state.metrics
        metrics[self.prefix + "seconds"] = seconds
        metrics[self.prefix + "volumes_per_s"] = (
            self._volumes * rank_and_world()[1] / seconds if seconds > 0 else float("nan")
        )
        if device is not None:
            metrics[self.prefix + "peak_gpu_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
