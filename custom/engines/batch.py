"""Functions that move a MONAI batch dict onto the training device and read its metadata."""

from __future__ import annotations

from typing import Any

import torch


def batch_to_device(
    batch: dict[str, Any],
    device: torch.device,
    keys: tuple[str, ...] = ("image", "factors"),
    non_blocking: bool = True,
    channels_last: bool = False,
) -> dict[str, Any]:
    """Return a shallow copy of ``batch`` with the tensors under ``keys`` on ``device``.

    MetaTensors are turned into plain tensors (``as_tensor``) so that compiled networks and
    autocast see ordinary tensors; metadata stays on the CPU-side batch.
    """
    out = dict(batch)
    for key in keys:
        value = batch.get(key)
        if isinstance(value, torch.Tensor):
            value = value.as_tensor() if hasattr(value, "as_tensor") else value
            value = value.to(device=device, non_blocking=non_blocking)
            if channels_last and key == "image" and value.ndim == 5:
                value = value.contiguous(memory_format=torch.channels_last_3d)
            out[key] = value
    return out


def batch_case_ids(batch: dict[str, Any]) -> list[str]:
    """Case ids of a collated batch (``case_id`` list from the datalist), or ``["?"]`` when absent."""
    ids = batch.get("case_id")
    if ids is None:
        return ["?"]
    if isinstance(ids, str):
        return [ids]
    return [str(i) for i in ids]


def autocast_context(device: torch.device, enabled: bool) -> torch.autocast:
    """bf16 autocast on CUDA; fp16 is never used (no GradScaler needed).

    On the CPU autocast stays off whatever ``amp`` says: CPU bf16 is slower than fp32 for these 3D
    convolutions and its backward produced non-finite gradients in our runs.
    """
    use = bool(enabled) and device.type == "cuda"
    return torch.autocast(device_type="cuda" if device.type == "cuda" else "cpu", dtype=torch.bfloat16, enabled=use)
