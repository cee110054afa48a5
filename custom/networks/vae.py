"""The 3D VAE: an encoder to q(z|x), the reparameterisation trick, a decoder to p(x|z); and its config factory."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from custom.utils import as_bool

from .blocks import as_triple
from .decoder import ConvTransposeDecoder3D
from .encoder import ResNetEncoder3D
from .sbd import SpatialBroadcastDecoder3D

__all__ = ["VAE3D", "ResNetVAE"]


class VAE3D(nn.Module):
    """Variational auto-encoder (Kingma & Welling 2014) from any encoder ``x -> (mu, logvar)`` and decoder ``z -> x``.

    ``forward`` returns a tuple, which MONAI inferers and ``verify_net_in_out`` cannot handle: wrap it with
    :mod:`custom.networks.wrappers` for those.

    Args:
        encoder: module returning ``(mu, logvar)``, each ``[B, Z]``.
        decoder: module mapping ``z [B, Z]`` to ``x_hat``.
    """

    def __init__(self, encoder: nn.Module, decoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior parameters ``(mu, logvar)`` of q(z|x), each ``[B, Z]``."""
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruction ``x_hat`` (the mean of the Gaussian p(x|z))."""
        return self.decoder(z)

    def reparameterize(self, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
        """``z = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, I)`` in training mode; ``mu`` in eval mode."""
        if not self.training:
            return mu
        return torch.addcmul(mu, torch.randn_like(mu), torch.exp(0.5 * logvar))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(x_hat, mu, logvar, z)``."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar)
        return self.decode(z), mu, logvar, z


class ResNetVAE(VAE3D):
    """Config-friendly VAE: :class:`ResNetEncoder3D` + a transposed-conv or spatial broadcast decoder.

    Bundle configs instantiate it with ``"_target_": "custom.networks.ResNetVAE"``; ``spatial_size`` may be an
    int or a list (JSON). ``use_sbd`` switches the decoder to :class:`SpatialBroadcastDecoder3D` (the seed's
    ``model.use_sbd``). ``activation_checkpointing`` recomputes encoder stages / decoder blocks in the backward pass.

    ``decoder_output_layer`` (transposed-conv decoder only, see :class:`ConvTransposeDecoder3D`): ``"transposed"``
    (default) makes the decoder's last up-sampling its linear output layer, so no full-resolution multi-channel
    feature map exists (fwd+bwd of one 128^3 volume ~505 -> ~370 GFLOP; the SBD is untouched). Networks trained
    before this default are rebuilt with ``decoder_output_layer="conv"`` and ``decoder_channels=(256, 256, 128,
    64, 32, 32)``. ``decoder_base`` keeps the decoder's 4^3 start at every size (:func:`decoder_channels_for`).

    Example:
        >>> vae = ResNetVAE(spatial_size=[32, 32, 32], z_dim=16)
        >>> x_hat, mu, logvar, z = vae(torch.zeros(2, 4, 32, 32, 32))
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 4,
        spatial_size: int | Sequence[int] = (128, 128, 128),
        z_dim: int = 128,
        widths: Sequence[int] = (32, 64, 128, 256),
        strides: Sequence[int] = (1, 2, 2, 2),
        blocks_per_stage: int = 2,
        num_groups: int = 8,
        posterior_logvar_min: float = -6.0,
        use_sbd: bool = False,
        sbd_grid: int = 8,
        sbd_coords_every_stage: bool = False,
        activation_checkpointing: bool = False,
        head_channels: int = 32,
        decoder_channels: Sequence[int] = (256, 256, 128, 64, 32),
        sbd_channels: Sequence[int] = (256, 128, 64, 32, 16),
        sbd_upsample_mode: str = "nearest",
        decoder_base: int | None = 4,
        decoder_output_layer: str = "transposed",
    ) -> None:
        size = as_triple(spatial_size)
        decoder_channels = decoder_channels_for(size, decoder_channels, decoder_base, decoder_output_layer)
        encoder = ResNetEncoder3D(
            in_channels=in_channels,
            z_dim=z_dim,
            widths=widths,
            strides=strides,
            blocks_per_stage=blocks_per_stage,
            num_groups=num_groups,
            head_channels=head_channels,
            spatial_size=size,
            posterior_logvar_min=posterior_logvar_min,
            activation_checkpointing=activation_checkpointing,
        )
        decoder: nn.Module
        if as_bool(use_sbd):
            decoder = SpatialBroadcastDecoder3D(
                z_dim=z_dim,
                out_channels=out_channels,
                spatial_size=size,
                grid=sbd_grid,
                channels=sbd_channels,
                coords_every_stage=as_bool(sbd_coords_every_stage),
                num_groups=num_groups,
                upsample_mode=sbd_upsample_mode,
                activation_checkpointing=activation_checkpointing,
            )
        else:
            decoder = ConvTransposeDecoder3D(
                z_dim=z_dim,
                out_channels=out_channels,
                spatial_size=size,
                channels=decoder_channels,
                num_groups=num_groups,
                activation_checkpointing=activation_checkpointing,
                output_layer=decoder_output_layer,
            )
        super().__init__(encoder, decoder)
        self.z_dim = int(z_dim)
        self.spatial_size = size


def decoder_channels_for(
    size: Sequence[int], channels: Sequence[int], base: int | None, output_layer: str = "transposed"
) -> tuple[int, ...]:
    """Trim the transposed-conv decoder's ``channels`` so it always starts from ``base``^3 (4^3: "linear -> 256 x 4^3").

    The number of up-samplings from ``base``^3 to the smallest side ``s`` is n_up = log2(s / base); the decoder
    has n_up - 1 normal blocks with ``output_layer="transposed"`` (its output ConvTranspose3d is the last
    up-sampling) and n_up with ``"conv"``. The first entry (the initial volume's channels) is kept and the *last*
    ``blocks`` entries follow it: ``(channels[0],) + channels[len(channels) - blocks:]``.

    Why: at 32^3 the full 128^3 list would start from a single voxel (1^3), where GroupNorm and the first
    transposed convolutions see no spatial layout and the decoder learned to ignore z in our CPU runs. With the
    default ``(256, 256, 128, 64, 32)`` and ``"transposed"``: (256, 64, 32) at 32^3 (3 up-samplings), (256, 128,
    64, 32) at 64^3, the full list at 128^3. With ``"conv"`` and ``(256, 256, 128, 64, 32, 32)``: (256, 64, 32,
    32) at 32^3, as before the ``"transposed"`` default. ``base=None``, a size that is not ``base`` times a power
    of two, or a list too short for n_up keeps the list as given.
    """
    channels = tuple(int(c) for c in channels)
    if base is None:
        return channels
    smallest = min(int(s) for s in size)
    n_up = 0
    while base * 2**n_up < smallest:
        n_up += 1
    blocks = n_up - 1 if output_layer == "transposed" else n_up
    if base * 2**n_up != smallest or n_up < 1 or blocks > len(channels) - 1:
        return channels
    return (channels[0],) + channels[len(channels) - blocks :]
