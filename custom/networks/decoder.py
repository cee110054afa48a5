"""3D transposed-convolution decoder p(x|z): linear projection to a small feature volume, then x2 up-sampling."""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import as_triple, check_groups

__all__ = ["ConvTransposeDecoder3D", "OUTPUT_LAYERS"]

#: allowed values of ``output_layer``
OUTPUT_LAYERS: tuple[str, ...] = ("transposed", "conv")


class ConvTransposeDecoder3D(nn.Module):
    """Linear -> ``channels[0]`` x (s / 2^n)^3 -> [ConvTranspose3d(kernel 4, stride 2) + GroupNorm + ReLU] -> output.

    There are ``len(channels) - 1`` normal up-sampling blocks (``channels[i] -> channels[i + 1]``); the output
    layer is linear (no norm, no activation): the images are z-scored, i.e. real-valued, and the reconstruction
    loss is a Gaussian likelihood on them. Two output layers:

    - ``"transposed"`` (default): the last up-sampling *is* the output layer, ``ConvTranspose3d(channels[-1],
      out_channels, 4, 2, 1, bias=True)``, so there are n = ``len(channels)`` up-samplings. With the default
      ``channels=(256, 256, 128, 64, 32)`` the path is 4^3 -> 8 -> 16 -> 32 -> 64 (normal blocks) -> 128 (output
      ConvT) at 128^3. No full-resolution multi-channel feature map exists: at 128^3 the old layout's last block
      (32 channels at 128^3, with a memory-bound GroupNorm) and its 3x3x3 output conv were ~29% of the FLOPs of a
      training step (measured profile); dropping them takes a fwd+bwd pass of one volume from ~505 to ~370 GFLOP.
    - ``"conv"``: the previous layout, n = ``len(channels) - 1`` up-sampling blocks followed by ``Conv3d(channels[-1],
      out_channels, 3, 1, 1)``; with ``channels=(256, 256, 128, 64, 32, 32)`` it rebuilds networks (and loads
      checkpoints) trained before the ``"transposed"`` default.

    Every spatial dimension must be a multiple of 2^n (32 with the defaults; the linear layer then produces
    256 x 4^3 at 128^3 and 256 x 1^3 at 32^3).

    Args:
        z_dim: latent dimension Z.
        out_channels: image channels (4 modalities).
        spatial_size: output size (D, H, W) or an int.
        channels: channels of the initial feature volume followed by each normal up-sampling block's output.
        num_groups: GroupNorm groups.
        activation_checkpointing: recompute each normal up-sampling block in backward (training only).
        output_layer: ``"transposed"`` or ``"conv"`` (see above).

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
        channels: Sequence[int] = (256, 256, 128, 64, 32),
        num_groups: int = 8,
        activation_checkpointing: bool = False,
        output_layer: str = "transposed",
    ) -> None:
        super().__init__()
        channels = tuple(int(c) for c in channels)
        if output_layer not in OUTPUT_LAYERS:
            raise ValueError(f"output_layer must be one of {OUTPUT_LAYERS}, got {output_layer!r}")
        minimum = 1 if output_layer == "transposed" else 2
        if len(channels) < minimum:
            raise ValueError(
                f"channels needs at least {minimum} entries with output_layer={output_layer!r}, " f"got {channels}"
            )
        self.output_layer = output_layer
        self.spatial_size = as_triple(spatial_size)
        n_up = len(channels) - 1 + (1 if output_layer == "transposed" else 0)
        factor = 2**n_up
        if any(s % factor for s in self.spatial_size):
            raise ValueError(
                f"spatial_size {self.spatial_size} must be divisible by {factor} "
                f"(2 ** number of up-samplings, from channels={channels} and output_layer={output_layer!r})"
            )
        self.n_upsamplings = n_up
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
        self.out: nn.Module
        if output_layer == "transposed":
            self.out = nn.ConvTranspose3d(channels[-1], out_channels, 4, 2, 1, bias=True)
        else:
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
