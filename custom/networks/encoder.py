"""3D ResNet encoder to a diagonal-Gaussian posterior q(z|x) = N(mu, diag(exp(logvar))) that keeps spatial layout.

The final feature map is flattened (not globally pooled) so that *where* things are (tumour position) survives
into the latent code; the seed's Exp1 encoder "downsamples to a compact 8^3 feature volume then flattens".
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from .blocks import BasicResBlock3D, as_triple, check_groups, conv_norm_act

__all__ = ["ResNetEncoder3D"]


class ResNetEncoder3D(nn.Module):
    """Stride-2 stem, residual stages, 1x1x1 head, flatten, two linear heads (mu, logvar).

    Shape walk at the defaults and 128^3 input: stem 4->32 ch at 64^3; stages (32,64,128,256) with strides
    (1,2,2,2) -> 256 ch at 8^3; head 1x1x1 conv -> 32 ch at 8^3 -> flatten (16384) -> Linear -> mu, logvar [B, z_dim].
    The total down-sampling factor is ``2 * prod(strides)`` (16 at the defaults); every spatial dimension must be a
    multiple of it.

    The two linear heads run in fp32 even under autocast: mu and logvar feed the KL and covariance statistics, and
    the heads cost a negligible share of the FLOPs. ``logvar`` is clamped below at ``posterior_logvar_min``
    (a posterior variance floor, exp(-6) ~ 2.5e-3 by default) to keep exp(logvar) and 1/variance finite.

    Args:
        in_channels: image channels (4 modalities).
        z_dim: latent dimension Z.
        widths: output channels of each residual stage.
        strides: stride of the first block of each stage.
        blocks_per_stage: residual blocks per stage.
        num_groups: GroupNorm groups.
        head_channels: channels of the 1x1x1 conv before flattening.
        spatial_size: input size (D, H, W) or an int; fixes the size of the linear heads.
        posterior_logvar_min: lower clamp of logvar.
        activation_checkpointing: recompute each stage in backward (training only) to save activation memory.

    Example:
        >>> enc = ResNetEncoder3D(z_dim=16, spatial_size=32)
        >>> mu, logvar = enc(torch.zeros(2, 4, 32, 32, 32))  # each [2, 16]
    """

    def __init__(
        self,
        in_channels: int = 4,
        z_dim: int = 128,
        widths: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (1, 2, 2, 2),
        blocks_per_stage: int = 2,
        num_groups: int = 8,
        head_channels: int = 32,
        spatial_size: int | Sequence[int] = (128, 128, 128),
        posterior_logvar_min: float = -6.0,
        activation_checkpointing: bool = False,
    ) -> None:
        super().__init__()
        widths, strides = tuple(int(w) for w in widths), tuple(int(s) for s in strides)
        if len(widths) != len(strides) or not widths:
            raise ValueError(f"widths {widths} and strides {strides} must be non-empty and of equal length")
        if blocks_per_stage < 1:
            raise ValueError(f"blocks_per_stage must be >= 1, got {blocks_per_stage}")
        self.spatial_size = as_triple(spatial_size)
        self.downsample = 2 * prod(strides)
        if any(s % self.downsample for s in self.spatial_size):
            raise ValueError(
                f"spatial_size {self.spatial_size} must be divisible by the encoder's down-sampling factor "
                f"{self.downsample} (= 2 * prod(strides={strides}))"
            )
        check_groups(head_channels, num_groups)
        self.z_dim = int(z_dim)
        self.posterior_logvar_min = float(posterior_logvar_min)
        self.activation_checkpointing = bool(activation_checkpointing)

        self.stem = conv_norm_act(in_channels, widths[0], 3, 2, num_groups)
        stages, cin = [], widths[0]
        for width, stride in zip(widths, strides):
            blocks = [BasicResBlock3D(cin, width, stride, num_groups)]
            blocks += [BasicResBlock3D(width, width, 1, num_groups) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            cin = width
        self.stages = nn.ModuleList(stages)
        self.head = conv_norm_act(cin, head_channels, 1, 1, num_groups)
        self.feature_shape = (head_channels, *(s // self.downsample for s in self.spatial_size))
        n_features = prod(self.feature_shape)
        self.fc_mu = nn.Linear(n_features, self.z_dim)
        self.fc_logvar = nn.Linear(n_features, self.z_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each ``[B, z_dim]`` in fp32, for ``x`` of shape ``[B, C, *spatial_size]``."""
        if not torch.jit.is_tracing() and tuple(x.shape[2:]) != self.spatial_size:
            raise ValueError(f"encoder built for spatial size {self.spatial_size}, got input of shape {tuple(x.shape)}")
        h = self.stem(x)
        for stage in self.stages:
            if self.activation_checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(stage, h, use_reentrant=False)
            else:
                h = stage(h)
        h = self.head(h).flatten(1)
        with torch.autocast(device_type=h.device.type, enabled=False):
            h = h.float()
            mu = self.fc_mu(h)
            logvar = torch.clamp(self.fc_logvar(h), min=self.posterior_logvar_min)
        return mu, logvar
