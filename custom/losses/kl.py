"""KL divergence of a diagonal-Gaussian posterior from N(0, I), and the free-bits floor on it."""

from __future__ import annotations

import torch

__all__ = ["kl_per_dim", "free_bits_kl", "FREE_BITS_MODES"]

FREE_BITS_MODES: tuple[str, ...] = ("batch_mean", "per_sample", "none")


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Closed-form KL(N(mu, exp(logvar)) || N(0, 1)) per sample and latent dimension, in fp32.

    ``KL_bj = 0.5 * (mu_bj^2 + exp(logvar_bj) - 1 - logvar_bj)`` (Kingma & Welling 2014, appendix B).

    Args:
        mu: posterior means ``[B, Z]``.
        logvar: posterior log-variances ``[B, Z]``.

    Returns:
        ``[B, Z]`` float32 tensor of non-negative KL values (nats).
    """
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar)


def free_bits_kl(kl_bz: torch.Tensor, lam: float, mode: str = "batch_mean") -> torch.Tensor:
    """KL summed over latent dimensions with a per-dimension floor of ``lam`` nats (free bits), averaged over the batch.

    - ``"batch_mean"`` (Pelsmaeker & Aziz 2020): ``sum_j max(mean_b KL_bj, lam)``; a dimension escapes the KL
      pressure only while its *batch-average* KL is below ``lam``, which suits small batches.
    - ``"per_sample"`` (Kingma et al. 2016): ``mean_b sum_j max(KL_bj, lam)``.
    - ``"none"``: ``mean_b sum_j KL_bj`` (the plain KL term; ``lam`` ignored).

    Clamped entries carry no gradient, so the optimiser stops pushing a dimension's KL below the floor;
    with ``lam = 0`` every mode equals ``"none"`` because KL >= 0.

    Args:
        kl_bz: per-sample, per-dimension KL ``[B, Z]`` (from :func:`kl_per_dim`).
        lam: the floor in nats per dimension.
        mode: one of :data:`FREE_BITS_MODES`.

    Returns:
        scalar float32 tensor.
    """
    kl_bz = kl_bz.float()
    if mode == "batch_mean":
        return torch.clamp(kl_bz.mean(0), min=lam).sum()
    if mode == "per_sample":
        return torch.clamp(kl_bz, min=lam).sum(1).mean()
    if mode == "none":
        return kl_bz.sum(1).mean()
    raise ValueError(f"free-bits mode must be one of {FREE_BITS_MODES}, got {mode!r}")
