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


class _VAEView(nn.Module):
    """Base of the wrappers: holds the VAE as ``self.vae`` and loads either state-dict layout.

    ``models/model.pt`` holds the bare VAE's weights (``encoder.*``, ``decoder.*``); ``load_state_dict`` adds the
    ``vae.`` prefix when it is missing, so ``monai.bundle ckpt_export network_def ...``, ``CheckpointLoader`` and
    MONAI Label load model.pt into a wrapper; a checkpoint of other sizes fails with one sentence naming the
    first tensor that differs and the fix (instead of PyTorch's list of size mismatches).
    """

    def __init__(self, vae: VAE3D) -> None:
        super().__init__()
        self.vae = vae

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):  # type: ignore[override]
        if state_dict and not any(k.startswith("vae.") for k in state_dict):
            state_dict = {f"vae.{k}": v for k, v in state_dict.items()}
        own = self.state_dict()
        wrong = [k for k, v in state_dict.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
        if wrong:
            k = wrong[0]
            raise RuntimeError(
                f"the checkpoint was trained with other sizes than this network: {k} has shape "
                f"{tuple(state_dict[k].shape)} in the checkpoint, {tuple(own[k].shape)} here ({len(wrong)} tensors "
                "differ); point --ckpt_dir at the training run's models/ folder (its model_config.json holds the "
                "trained spatial_size, z_dim and decoder switches) or pass the sizes it was trained with"
            )
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


class ReconstructionNet(_VAEView):
    """``x -> decode(mu(x))``: the deterministic (posterior-mean) reconstruction, shape like ``x``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, _ = self.vae.encode(x)
        return self.vae.decode(mu)


class EncoderNet(_VAEView):
    """``x -> cat([mu, logvar], dim=1)``, shape ``[B, 2Z]`` (split with ``out.chunk(2, dim=1)``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mu, logvar = self.vae.encode(x)
        return torch.cat([mu, logvar], dim=1)


class DecoderNet(_VAEView):
    """``z -> x_hat``: decode latent codes ``[B, Z]`` (e.g. latent-ODE forecasts) to images."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.vae.decode(z)
