"""3D transposed-convolution decoder p(x|z): linear projection to a small feature volume, then x2 up-sampling."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import as_triple, check_groups

__all__ = ["ConvTransposeDecoder3D"]


class ConvTransposeDecoder3D(nn.Module):
    """Linear -> ``channels[0]`` x (s / 2^n)^3 -> n x [ConvTranspose3d(k4, s2, p1) + GroupNorm + ReLU] -> Conv3d 3x3x3.

    With the default ``channels=(256, 256, 128, 64, 32, 32)`` there are n = 5 up-sampling blocks, so the linear
    layer produces 256 x 4^3 at 128^3 (256 x 1^3 at 32^3) and every spatial dimension must be a multiple of 32.
    The output is linear (no activation): the images are z-scored, i.e. real-valued, and the reconstruction loss
    is a Gaussian likelihood on them.

    Args:
        z_dim: latent dimension Z.
        out_channels: image channels (4 modalities).
        spatial_size: output size (D, H, W) or an int.
        channels: channels of the initial feature volume followed by each up-sampling block's output.
        num_groups: GroupNorm groups.
        activation_checkpointing: recompute each up-sampling block in backward (training only).

    Example:
        >>> dec = ConvTransposeDecoder3D(z_dim=16, spatial_size=32)
        >>> dec(torch.zeros(2, 16)).shape
        torch.Size([2, 4, 32, 32, 32])
    """

    def __init__(
        self,
        z_dim: int = 128,
        out_channels: int = 4,
        spatial_size: int | Sequence[int] = (128, 128, 128),
        channels: Sequence[int] = (256, 256, 128, 64, 32, 32),
        num_groups: int = 8,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if len(channels) < 2:
            raise ValueError(f"channels needs at least 2 entries (initial + one block), got {channels}")
        self.spatial_size = as_triple(spatial_size)
        factor = 2 ** (len(channels) - 1)
        if any(s % factor for s in self.spatial_size):
            raise ValueError(
                f"spatial_size {self.spatial_size} must be divisible by {factor} "
                f"(2 ** number of up-sampling blocks, from channels={channels})"
            )
        self.activation_checkpointing = bool(activation_checkpointing)
        self.initial_shape = (channels[0], *(s // factor for s in self.spatial_size))
        self.fc = nn.Linear(z_dim, prod(self.initial_shape))
        blocks = []
        for cin, cout in zip(channels[:-1], channels[1:]):
            check_groups(cout, num_groups)
            blocks.append(
                nn.Sequential(
                    nn.ConvTranspose3d(cin, cout, 4, 2, 1, bias=False),
                    nn.GroupNorm(num_groups, cout),
                    nn.ReLU(inplace=True),
                )
            )
        self.blocks = nn.ModuleList(blocks)
        self.out = nn.Conv3d(channels[-1], out_channels, 3, 1, 1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Return ``x_hat`` of shape ``[B, out_channels, *spatial_size]`` for ``z`` of shape ``[B, z_dim]``."""
        h = self.fc(z).view(z.shape[0], *self.initial_shape)
        for block in self.blocks:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(block, h, use_reentrant=False)
            else:
                h = block(h)
        return self.out(h)
