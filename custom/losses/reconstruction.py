"""Gaussian reconstruction term -log p(x|z) with a fixed sigma, per modality."""

from __future__ import annotations

import torch

__all__ = ["gaussian_reconstruction", "RECON_REDUCTIONS"]

RECON_REDUCTIONS: tuple[str, ...] = ("sum", "mean")


def gaussian_reconstruction(
    x: torch.Tensor,
    x_hat: torch.Tensor,
    reduction: str = "sum",
    sigma: float = 1.0,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reconstruction loss of ``x_hat`` against ``x`` (``[B, C, D, H, W]``), total and per channel, in fp32.

    - ``"sum"``: the Gaussian negative log-likelihood up to its constant,
      ``mean_b sum_{c,v} (x_bcv - x_hat_bcv)^2 / (2 sigma^2)``; this is the term whose balance with a KL *summed*
      over latent dimensions makes the ELBO (Kingma & Welling 2014). ``per_modality[c]`` is channel c's share and
      ``sum_c per_modality == total``.
    - ``"mean"``: the seed's ``F.mse_loss(x_hat, x)``, ``mean_{b,c,v} (x - x_hat)^2`` (``sigma`` unused);
      ``per_modality[c]`` is channel c's MSE and ``total == mean_c per_modality``. Hence
      ``sum = mean * C*D*H*W / (2 sigma^2)``: adding a *summed* KL to the *mean* reconstruction weights each voxel's
      likelihood by 1 / (C*D*H*W) relative to the KL, i.e. an effective beta of C*D*H*W / (2 sigma^2) ~ 4.2e6 at
      4 x 128^3 — the reason the seed's posterior collapsed (design.md §6).

    Args:
        x: target image.
        x_hat: reconstruction, same shape (any float dtype; cast to fp32).
        reduction: ``"sum"`` or ``"mean"``.
        sigma: the decoder's fixed standard deviation (``"sum"`` only).
        mask: optional weights broadcastable to ``x`` (e.g. a brain mask ``[B, 1, D, H, W]``); ``None`` = all
            voxels. With ``"sum"`` masked-out voxels add nothing; with ``"mean"`` the mean runs over the mask.

    Returns:
        ``(total, per_modality)``: a scalar and a ``[C]`` tensor, both float32.
    """
    if x.shape != x_hat.shape:
        raise ValueError(f"x {tuple(x.shape)} and x_hat {tuple(x_hat.shape)} must have the same shape")
    sq = (x_hat.float() - x.float()).square()
    spatial = tuple(range(2, x.ndim))
    if mask is not None:
        w = mask.to(device=sq.device, dtype=sq.dtype).expand_as(sq)
        sq = sq * w
    if reduction == "sum":
        per_modality = sq.sum(dim=spatial).mean(0) / (2.0 * sigma**2)
        return per_modality.sum(), per_modality
    if reduction == "mean":
        if mask is None:
            per_modality = sq.mean(dim=(0, *spatial))
            return per_modality.mean(), per_modality
        dims = (0, *spatial)
        per_modality = sq.sum(dim=dims) / w.sum(dim=dims).clamp(min=1e-12)
        return sq.sum() / w.sum().clamp(min=1e-12), per_modality
    raise ValueError(f"reduction must be one of {RECON_REDUCTIONS}, got {reduction!r}")
