"""Single-tensor views of a VAE for MONAI inferers, ``verify_net_in_out``, ``ckpt_export`` tracing and MONAI Label.

A VAE's ``forward`` returns a tuple, which MONAI's inferers do not decollate and ``verify_net_in_out`` cannot
``.shape``; these wrappers share the VAE's parameters (no copy) and return one deterministic tensor each, so they
are ``torch.jit.trace``-able with outputs equal to eager mode.
"""

from __future__ import annotations

import torch
from torch import nn

from .vae import VAE3D

__all__ = ["ReconstructionNet", "EncoderNet", "DecoderNet"]


class ReconstructionNet(nn.Module):
    """``x -> decode(mu(x))``: the deterministic (posterior-mean) reconstruction, shape like ``x``."""

    def __init__(self, vae: VAE3D) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vae.encode(x)
        return self.vae.decode(mu)


class EncoderNet(nn.Module):
    """``x -> cat([mu, logvar], dim=1)``, shape ``[B, 2Z]`` (split with ``out.chunk(2, dim=1)``)."""

    def __init__(self, vae: VAE3D) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.vae.encode(x)
        return torch.cat([mu, logvar], dim=1)


class DecoderNet(nn.Module):
    """``z -> x_hat``: decode latent codes ``[B, Z]`` (e.g. latent-ODE forecasts) to images."""

    def __init__(self, vae: VAE3D) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)
