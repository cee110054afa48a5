"""Functions that turn a single-process training config into a ``torchrun`` + DDP one (``multi_gpu_train.json``).

The multi-GPU layer of each encoder bundle (MONAI model-zoo pattern, design.md §5) only rewires ids of
``train.json``; the behaviour lives here:

- :func:`init_distributed` / :func:`cleanup_distributed`: process group from the ``torchrun`` environment
  (``nccl`` with one GPU per process on CUDA hosts, ``gloo`` with every rank on the CPU otherwise).
- :func:`rank_zero_first`: run a data-preparation function on rank 0 before the others (the synthetic cohort
  is generated once, not by every rank into the same folder).
- :func:`select_handlers`: the trainer handlers a rank attaches. Writers (checkpoints, CSV, TensorBoard,
  dashboard, console stats) and validation run on rank 0 only; schedules, epoch averaging and the non-finite
  guard run everywhere, plus :class:`EpochMetricsAllReduce` so that rank 0 logs means over the global batch.
- :func:`rank_zero_summary_writer`: a real ``SummaryWriter`` on rank 0, a no-op elsewhere (no stray event files).
- :func:`local_loss`: the loss without the DIP all-gather, for the evaluator that runs on rank 0 alone
  (a collective called by one rank would wait forever).

Why validation on rank 0 only is deadlock-free: evaluation has no collective (the evaluator calls the bare
network, not the DDP wrapper, and :func:`local_loss` gathers nothing). While rank 0 validates, the other ranks
start the next epoch and block in DDP's first gradient all-reduce until rank 0 joins; after the last epoch they
wait in the barrier of :func:`cleanup_distributed`. The process-group timeout (``timeout_minutes``) must
therefore exceed one validation pass.
"""

from __future__ import annotations

import copy
import datetime
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)

__all__ = [
    "DistInfo",
    "EpochMetricsAllReduce",
    "NullSummaryWriter",
    "RANK_ZERO_ONLY_HANDLERS",
    "cleanup_distributed",
    "init_distributed",
    "local_loss",
    "prepare_datalist_rank_zero_first",
    "rank_path",
    "rank_zero_first",
    "rank_zero_summary_writer",
    "select_handlers",
]

#: class names of trainer handlers that write artefacts or validate: attached on rank 0 only
RANK_ZERO_ONLY_HANDLERS: tuple[str, ...] = (
    "ValidationHandler",
    "TidyCSVWriter",
    "TrainingCheckpoints",
    "DashboardWriter",
    "StatsHandler",
    "TensorBoardStatsHandler",
    "StepProfiler",
)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: global ``rank``, ``local_rank`` on its node, ``world_size``, device."""

    rank: int
    local_rank: int
    world_size: int
    backend: str
    device: torch.device

    @property
    def is_rank_zero(self) -> bool:
        """True on the process that writes artefacts and validates."""
        return self.rank == 0


def init_distributed(backend: str | None = None, timeout_minutes: float = 60.0) -> DistInfo:
    """Initialise the default process group from the ``torchrun`` environment (idempotent) and return the rank info.

    ``backend=None`` picks ``nccl`` when CUDA is available (device ``cuda:<LOCAL_RANK>``, set as the current
    device before the group starts) and ``gloo`` otherwise (device ``cpu`` on every rank). Without torchrun's
    ``RANK``/``WORLD_SIZE`` variables and no existing group, returns a single-process ``DistInfo`` and starts
    nothing, so the layered config also runs as ``python -m monai.bundle run``.

    Args:
        backend: ``"nccl"``, ``"gloo"`` or None (choose from ``torch.cuda.is_available()``).
        timeout_minutes: collective timeout; longer than one validation pass on rank 0 (the other ranks wait
            for it in DDP's next all-reduce).
    """
    cuda = torch.cuda.is_available()
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return DistInfo(0, 0, 1, "none", device)
        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=float(timeout_minutes)))
    # ignite.distributed builds its own view of the group lazily, with a collective (new_group), the first time
    # anything asks it for the rank (ignite's Checkpoint does, on rank 0 only): build it now, on every rank
    import ignite.distributed as idist

    idist.sync()
    info = DistInfo(dist.get_rank(), local_rank, dist.get_world_size(), str(dist.get_backend()), device)
    logger.info(
        "distributed: rank %d/%d (local %d), backend %s, device %s",
        info.rank,
        info.world_size,
        info.local_rank,
        info.backend,
        info.device,
    )
    return info


def cleanup_distributed(barrier: bool = True) -> None:
    """Wait for every rank (rank 0 may still be validating or saving) and destroy the process group."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            dist.barrier()
        dist.destroy_process_group()
        import gc

        gc.collect()  # drop autograd contexts that still reference the process group before interpreter teardown


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) of the initialised process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_zero_first(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``func(*args, **kwargs)`` on rank 0, then (after a barrier) on the other ranks; return its result.

    For idempotent preparation that writes files (cohort generation, datalist building): rank 0 writes them,
    the others find them already there instead of racing rank 0 into the same folder.
    """
    rank, world = rank_and_world()
    if world == 1:
        return func(*args, **kwargs)
    result = func(*args, **kwargs) if rank == 0 else None
    dist.barrier()
    if rank != 0:
        result = func(*args, **kwargs)
    return result


def prepare_datalist_rank_zero_first(**kwargs: Any) -> str:
    """:func:`custom.data.dataset.prepare_datalist` through :func:`rank_zero_first` (same keyword arguments)."""
    from custom.data.dataset import prepare_datalist

    return rank_zero_first(prepare_datalist, **kwargs)


def rank_path(path: str | None, rank: int) -> str | None:
    """``path`` on rank 0; ``<stem>.rank<k><suffix>`` beside it on rank ``k`` (per-rank logs, no shared writes)."""
    if path is None or rank == 0:
        return path
    p = Path(path)
    return str(p.with_name(f"{p.stem}.rank{rank}{p.suffix}"))


class EpochMetricsAllReduce:
    """At ``EPOCH_COMPLETED``, replace each ``engine.state.metrics[<prefix>...]`` by its mean over the ranks.

    :class:`custom.engines.handlers.EpochAverager` averages the steps a rank saw; every rank runs the same number
    of steps (``DistributedSampler(even_divisible=True)`` and ``drop_last``) and skips the same steps (the
    gradients a skip decision depends on are all-reduced), so the mean of the rank means is the mean over the
    global batch. Attach it right after the averager and before any writer. Keys are reduced in sorted order
    (every rank must issue the same collectives); a key missing on some rank would deadlock, so the key list
    length is checked first.
    """

    def __init__(self, prefix: str = "train_epoch/") -> None:
        self.prefix = prefix

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        rank, world = rank_and_world()
        if world == 1:
            return
        keys = sorted(k for k in engine.state.metrics if k.startswith(self.prefix))
        device = engine.state.device if dist.get_backend() == "nccl" else torch.device("cpu")
        n = torch.tensor([len(keys)], dtype=torch.int64, device=device)
        n_max = n.clone()
        dist.all_reduce(n_max, op=dist.ReduceOp.MAX)
        if int(n_max) != len(keys):
            raise RuntimeError(f"rank {rank} has {len(keys)} '{self.prefix}' metrics, another rank {int(n_max)}")
        if not keys:
            return
        values = torch.tensor([float(engine.state.metrics[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
        for key, value in zip(keys, (values / world).tolist()):
            engine.state.metrics[key] = value


def select_handlers(
    handlers: Sequence[Any],
    rank: int,
    rank_zero_only: Sequence[str] = RANK_ZERO_ONLY_HANDLERS,
    reduce_after: str | None = "EpochAverager",
    reduce_prefix: str = "train_epoch/",
) -> list[Any]:
    """The trainer handlers rank ``rank`` attaches, in the order of ``handlers``.

    - ``None`` entries (components disabled in the config) are dropped.
    - On ranks > 0, handlers whose class name is in ``rank_zero_only`` are dropped, and a
      :class:`~custom.engines.handlers.NonFiniteGuard` logs to ``<log>.rank<k>.jsonl`` and saves no checkpoint
      (rank 0 saves it; the weights are identical on every rank).
    - When ``reduce_after`` names a handler class, an :class:`EpochMetricsAllReduce` is inserted right after it on
      every rank, so that the writers that follow (on rank 0) see global means.
    """
    out: list[Any] = []
    for handler in handlers:
        if handler is None:
            continue
        name = type(handler).__name__
        if rank > 0 and name in rank_zero_only:
            continue
        if rank > 0 and name == "NonFiniteGuard":
            handler = copy.copy(handler)
            if handler.log_path is not None:
                handler.log_path = Path(rank_path(str(handler.log_path), rank))
            handler.ckpt_dir = None
        out.append(handler)
        if reduce_after is not None and name == reduce_after:
            out.append(EpochMetricsAllReduce(reduce_prefix))
    return out


class NullSummaryWriter:
    """Stands in for ``SummaryWriter`` on ranks > 0: every method (``add_scalar``, ``flush``, ``close``...) does nothing."""

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("__"):
            raise AttributeError(name)
        return _noop


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def rank_zero_summary_writer(log_dir: str, rank: int) -> Any:
    """``torch.utils.tensorboard.SummaryWriter(log_dir)`` on rank 0 and a :class:`NullSummaryWriter` elsewhere.

    A ``SummaryWriter`` creates its event file when constructed, so only rank 0 may construct one.
    """
    if rank != 0:
        return NullSummaryWriter()
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=log_dir)


def local_loss(loss: torch.nn.Module) -> torch.nn.Module:
    """A shallow copy of ``loss`` with the DIP all-gather switched off (``gather = False``), for the evaluator.

    The evaluator runs on rank 0 alone; :class:`custom.losses.dip.DIPVAELoss` with ``gather=True`` would call
    an all-gather that the other ranks never join. Losses without a ``gather`` attribute are returned unchanged.
    """
    if not hasattr(loss, "gather"):
        return loss
    local = copy.copy(loss)
    local.gather = False
    return local
