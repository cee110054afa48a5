"""Spatial Broadcast Decoder (Watters et al. 2019, arXiv:1901.07017) in 3D with resize-conv up-sampling.

z is tiled over a ``grid^3`` volume and concatenated with three coordinate channels (linspace(-1, 1) along D, H
and W), so the decoder needs not learn positions and z is free to encode *what* rather than *where*. In 3D MRI with
a fixed anatomy this can let the decoder paint a coordinate-driven template and ignore z (the seed's collapse
mode): keep it as an option (``use_sbd``), not the default.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import log2

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import ResizeConvBlock3D, as_triple, conv_norm_act

__all__ = ["coordinate_grid", "SpatialBroadcastDecoder3D"]


def coordinate_grid(shape: Sequence[int]) -> torch.Tensor:
    """Coordinate channels for a volume of ``shape = (D, H, W)``: a float32 tensor ``[1, 3, D, H, W]``.

    Channel 0 equals ``linspace(-1, 1, D)`` along D (constant over H, W), channel 1 ``linspace(-1, 1, H)`` along
    H, channel 2 ``linspace(-1, 1, W)`` along W (a size-1 axis gets -1).
    """
    axes = [torch.linspace(-1.0, 1.0, int(n)) for n in shape]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=0).unsqueeze(0)


class SpatialBroadcastDecoder3D(nn.Module):
    """Tile z to grid^3 + coordinates -> conv -> resize-conv x2 stages -> Conv3d 3x3x3 to ``out_channels``.

    The number of x2 stages is n = log2(spatial_size / grid) (the same power of two on every axis); the broadcast
    conv has ``channels[0]`` outputs and stage k has ``channels[k]`` (k = 1..n). ``channels`` may be longer than
    needed: the entries after ``channels[n]`` are unused, so the default ``(256, 128, 64, 32, 16)`` fits 128^3 with
    grid 8 (n = 4) and smaller volumes use its first n + 1 widths. The output is linear (no activation).

    Args:
        z_dim: latent dimension Z.
        out_channels: image channels.
        spatial_size: output size (D, H, W) or an int.
        grid: broadcast grid size (int or 3 values).
        channels: widths of the broadcast conv and the up-sampling stages.
        coords_every_stage: also concatenate the coordinate grid (at each stage's resolution) before every
            stage's conv, as in Watters et al.'s deeper variants.
        num_groups: GroupNorm groups.
        upsample_mode: ``"nearest"`` (default, cheaper; resize-conv per Odena et al. 2016) or ``"trilinear"``.
        activation_checkpointing: recompute each stage in backward (training only).

    Example:
        >>> dec = SpatialBroadcastDecoder3D(z_dim=16, spatial_size=32, grid=8)
        >>> dec(torch.zeros(2, 16)).shape
        torch.Size([2, 4, 32, 32, 32])
    """

    def __init__(
        self,
        z_dim: int = 128,
        out_channels: int = 4,
        spatial_size: int | Sequence[int] = (128, 128, 128),
        grid: int | Sequence[int] = 8,
        channels: Sequence[int] = (256, 128, 64, 32, 16),
        coords_every_stage: bool = False,
        num_groups: int = 8,
        upsample_mode: str = "nearest",
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.spatial_size, self.grid = as_triple(spatial_size), as_triple(grid)
        ratios = {s / g for s, g in zip(self.spatial_size, self.grid)}
        n_up = log2(ratios.pop()) if len(ratios) == 1 else -1.0
        if n_up < 0 or n_up != int(n_up):
            raise ValueError(
                f"spatial_size {self.spatial_size} must be grid {self.grid} times the same power of two on every axis"
            )
        n_up = int(n_up)
        channels = tuple(int(c) for c in channels)
        if len(channels) < n_up + 1:
            raise ValueError(f"{n_up} up-sampling stages need at least {n_up + 1} channel entries, got {channels}")
        channels = channels[: n_up + 1]
        self.z_dim = int(z_dim)
        self.coords_every_stage = bool(coords_every_stage)
        self.activation_checkpointing = bool(activation_checkpointing)
        self.register_buffer("coords", coordinate_grid(self.grid), persistent=False)
        self.broadcast_conv = conv_norm_act(self.z_dim + 3, channels[0], 3, 1, num_groups)
        extra = 3 if self.coords_every_stage else 0
        self.stages = nn.ModuleList(
            ResizeConvBlock3D(cin + extra, cout, num_groups, upsample_mode)
            for cin, cout in zip(channels[:-1], channels[1:])
        )
        for k in range(1, n_up + 1) if self.coords_every_stage else ():
            self.register_buffer(f"coords_{k}", coordinate_grid(tuple(g * 2**k for g in self.grid)), persistent=False)
        self.out = nn.Conv3d(channels[-1], out_channels, 3, 1, 1)

    coordinate_grid = staticmethod(coordinate_grid)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return ``x_hat`` of shape ``[B, out_channels, *spatial_size]`` for ``z`` of shape ``[B, z_dim]``."""
        b = z.shape[0]
        tiled = z[:, :, None, None, None].expand(b, self.z_dim, *self.grid)
        h = torch.cat([tiled, self.coords.to(z.dtype).expand(b, -1, -1, -1, -1)], dim=1)
        h = self.broadcast_conv(h)
        for k, stage in enumerate(self.stages, start=1):
            coords = getattr(self, f"coords_{k}") if self.coords_every_stage else None
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(stage, h, coords, use_reentrant=False)
            else:
                h = stage(h, coords)
        return self.out(h)
