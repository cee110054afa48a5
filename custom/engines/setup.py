"""Network preparation for training: device placement, channels-last, ``torch.compile``, DDP."""

from __future__ import annotations

import logging

import torch
from torch import nn

logger = logging.getLogger(__name__)


def prepare_network(
    network: nn.Module,
    device: torch.device | str,
    compile: bool = False,
    channels_last: bool = False,
    ddp: bool = False,
) -> nn.Module:
    """Move ``network`` to ``device`` and optionally convert to channels-last, compile, and DDP-wrap it.

    ``cudnn.benchmark`` is switched on for CUDA (3D convolutions and transposed convolutions pick much
    faster algorithms). Compilation is skipped with a warning on CPU-only hosts without a C++ toolchain.
    The returned module is what the trainer calls; evaluators should use the unwrapped ``network``.
    """
    from custom.utils import as_bool

    compile, channels_last, ddp = as_bool(compile), as_bool(channels_last), as_bool(ddp)
    device = torch.device(device)
    network = network.to(device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if channels_last:
        network = network.to(memory_format=torch.channels_last_3d)
    if ddp:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        network = DistributedDataParallel(network, device_ids=ids)
    if compile:
        network = torch.compile(network)
    return network


def configure_threads(torch_threads: int | None = None) -> int:
    """Set torch's intra-op thread count (config id ``torch_threads``) and return the count in effect.

    ``None`` keeps torch's default (one thread per core the process may use). The training loader is a
    ``ThreadDataLoader`` with ``num_workers: 0`` (one background thread over the cached dataset; ``num_workers`` is
    the thread count of the one-off preprocessing cache), so the step's kernels and the loader's per-volume
    augmentation share these threads; on a small CPU, ``torch_threads`` below the core count leaves a core to the
    loader thread.
    """
    if torch_threads is not None:
        n = int(torch_threads)
        if n < 1:
            raise ValueError(f"torch_threads must be >= 1 or null (torch's default), got {torch_threads!r}")
        torch.set_num_threads(n)
    n = torch.get_num_threads()
    logger.info("torch intra-op threads: %d (cores available: %s)", n, _cores())
    return n


def _cores() -> int | None:
    import os

    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count()
