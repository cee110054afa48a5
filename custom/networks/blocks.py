"""Building blocks shared by the 3D encoder and decoders: conv-norm-act units and the residual block.

Every convolution that feeds a GroupNorm has ``bias=False`` (the norm's shift makes a bias redundant) and
every ReLU works in place; both save memory traffic, which dominates 3D CNN step time (design.md §7).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["as_triple", "check_groups", "conv_norm_act", "BasicResBlock3D", "ResizeConvBlock3D"]


def as_triple(size: int | Sequence[int]) -> tuple[int, int, int]:
    """Return ``size`` as a 3-tuple of ints (an int means an isotropic size)."""
    if isinstance(size, int):
        return (size, size, size)
    out = tuple(int(s) for s in size)
    if len(out) != 3:
        raise ValueError(f"expected an int or 3 values for a 3D size, got {size!r}")
    return out  # type: ignore[return-value]


def check_groups(channels: int, num_groups: int) -> None:
    """Raise a clear error when GroupNorm cannot split ``channels`` into ``num_groups`` groups."""
    if channels % num_groups != 0:
        raise ValueError(f"GroupNorm: {channels} channels are not divisible by num_groups={num_groups}")


def conv_norm_act(
    in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, num_groups: int = 8
) -> nn.Sequential:
    """Conv3d (no bias, 'same' padding for odd kernels) -> GroupNorm -> in-place ReLU."""
    check_groups(out_channels, num_groups)
    return nn.Sequential(
        nn.Conv3d(in_channels, out_channels, kernel_size, stride, kernel_size // 2, bias=False),
        nn.GroupNorm(num_groups, out_channels),
        nn.ReLU(inplace=True),
    )


class BasicResBlock3D(nn.Module):
    """Basic residual block (He et al. 2016) with GroupNorm: two 3x3x3 convs and an identity or 1x1x1 shortcut.

    ``y = ReLU(GN(conv(ReLU(GN(conv(x))))) + shortcut(x))``; the shortcut is a strided 1x1x1 conv + GN when the
    stride or the channel count changes.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first conv (and of the projection shortcut).
        num_groups: GroupNorm groups.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, num_groups: int = 8) -> None:
        super().__init__()
        check_groups(out_channels, num_groups)
        self.conv1 = nn.Conv3d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm1 = nn.GroupNorm(num_groups, out_channels)
        self.conv2 = nn.Conv3d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = nn.GroupNorm(num_groups, out_channels)
        self.act = nn.ReLU(inplace=True)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv3d(in_channels, out_channels, 1, stride, bias=False), nn.GroupNorm(num_groups, out_channels)
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.norm1(self.conv1(x)))
        y = self.norm2(self.conv2(y))
        # In place: GroupNorm's backward needs its input, not its output, so overwriting y is safe.
        y += self.shortcut(x)
        return self.act(y)


class ResizeConvBlock3D(nn.Module):
    """Resize-convolution upsampling (Odena et al. 2016): x2 upsample -> Conv3d 3x3x3 -> GroupNorm -> ReLU.

    Avoids the checkerboard artefacts of transposed convolutions; used by the spatial broadcast decoder.
    ``forward(x, coords)`` concatenates optional extra channels (the decoder's coordinate grid at the upsampled
    resolution) between the resize and the convolution.

    Args:
        in_channels: input channels of the convolution (including any concatenated coordinate channels).
        out_channels: output channels.
        num_groups: GroupNorm groups.
        mode: ``"nearest"`` (cheaper) or ``"trilinear"`` interpolation for the x2 resize.
    """

    def __init__(self, in_channels: int, out_channels: int, num_groups: int = 8, mode: str = "nearest") -> None:
        super().__init__()
        if mode not in ("nearest", "trilinear"):
            raise ValueError(f"upsample mode must be 'nearest' or 'trilinear', got {mode!r}")
        self.up = nn.Upsample(scale_factor=2, mode=mode, align_corners=False if mode == "trilinear" else None)
        self.conv = conv_norm_act(in_channels, out_channels, 3, 1, num_groups)

    def forward(self, x: torch.Tensor, coords: torch.Tensor | None = None) -> torch.Tensor:
        x = self.up(x)
        if coords is not None:
            x = torch.cat([x, coords.to(x.dtype).expand(x.shape[0], -1, -1, -1, -1)], dim=1)
        return self.conv(x)
