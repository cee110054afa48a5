"""DIP-VAE-II covariance matching (Kumar et al. 2018, ICLR, arXiv:1711.00848), with an autograd-aware DDP gather."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from custom.utils import as_bool

from .elbo import VAELoss

__all__ = ["dip_covariance", "dip_penalty", "gather_for_dip", "DIPVAELoss"]


def dip_covariance(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Covariance of the aggregate posterior q(z): ``Cov_batch(mu) + diag(mean_batch(exp(logvar)))``, ``[Z, Z]``.

    DIP-VAE-II (Kumar et al. 2018, eq. 6): Cov_q(z) = Cov_p(x)[mu(x)] + E_p(x)[Sigma(x)]. ``Cov_batch`` is the
    biased (1/B) batch covariance, matching the expectation in the paper and defined for B = 1. Computed in fp32
    with autocast disabled, whatever the input dtype.
    """
    with torch.autocast(device_type=mu.device.type, enabled=False):
        mu, logvar = mu.float(), logvar.float()
        centred = mu - mu.mean(0, keepdim=True)
        cov_mu = centred.T @ centred / mu.shape[0]
        return cov_mu + torch.diag(logvar.exp().mean(0))


def dip_penalty(
    mu: torch.Tensor,
    logvar: torch.Tensor,
    lambda_od: float,
    lambda_d: float,
    exempt_dims: Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DIP-VAE-II penalty ``lambda_od * sum_{i!=j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2`` (Kumar et al. 2018).

    ``exempt_dims``: pairs (i, j) with *both* i and j in this set are left out of the off-diagonal sum. Exp3 passes
    its supervised coordinates: their targets (log volume, surface area, extents) correlate by construction (r ~ 0.9
    in the cohort), so penalising their covariance only fights the supervision; covariances between a supervised and
    a free coordinate, and among free ones, are still penalised.

    Returns:
        ``(penalty, offdiag_sq_sum, diag_sq_sum)`` as fp32 scalars, where ``offdiag_sq_sum = sum_{i!=j} Cov_ij^2``
        over the penalised pairs and ``diag_sq_sum = sum_i (Cov_ii - 1)^2``.
    """
    cov = dip_covariance(mu, logvar)
    diag = torch.diagonal(cov)
    diag_sq = (diag - 1.0).square().sum()
    off = cov - torch.diag(diag)  # exact zeros on the diagonal: no cancellation
    if exempt_dims:
        keep = torch.ones_like(off)
        idx = torch.as_tensor(sorted(set(int(i) for i in exempt_dims)), device=off.device)
        keep[idx.unsqueeze(1), idx.unsqueeze(0)] = 0.0
        off = off * keep
    offdiag_sq = off.square().sum()
    return lambda_od * offdiag_sq + lambda_d * diag_sq, offdiag_sq, diag_sq


def gather_for_dip(mu: torch.Tensor, logvar: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every rank's ``mu``/``logvar`` along the batch when ``torch.distributed`` runs with world size > 1.

    Uses ``torch.distributed.nn.functional.all_gather``, whose backward sends each rank the gradient for its own
    rows, so the covariance penalty trains every encoder replica; a plain ``dist.all_gather`` returns tensors
    without a graph and gives the penalty no gradient (the seed's bug, design.md §6). All ranks must pass the same
    batch size (``DistributedSampler(even_divisible=True)``). Single process: returns the inputs unchanged.
    """
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return mu, logvar
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(mu), dim=0), torch.cat(all_gather(logvar), dim=0)


class DIPVAELoss(VAELoss):
    """Negative ELBO (:class:`VAELoss`) plus ``lambda_scale`` times the DIP-VAE-II covariance penalty.

    ``loss = VAELoss.loss + lambda_scale * (lambda_od * sum_{i!=j} Cov_ij^2 + lambda_d * sum_i (Cov_ii - 1)^2)``,
    with Cov from :func:`dip_covariance` on the (optionally all-gathered) batch; ``lambda_scale`` comes from
    :class:`custom.schedules.DIPLambdaSchedule` (the seed: 0 for 20 epochs, then a 40-epoch linear warm-up).
    Extra outputs: ``cov_penalty`` (the penalty before ``lambda_scale``), ``cov_offdiag``, ``cov_diag``,
    ``lambda_scale``.

    Args:
        lambda_od: weight of the off-diagonal term (seed: 10).
        lambda_d: weight of the diagonal term (seed: 5).
        gather: all-gather mu/logvar across DDP ranks for the covariance (no effect in a single process).
        **kwargs: :class:`VAELoss` arguments.
    """

    def __init__(
        self,
        lambda_od: float = 10.0,
        lambda_d: float = 5.0,
        gather: bool = True,
        exempt_dims: Sequence[int] | None = None,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.lambda_od = float(lambda_od)
        self.lambda_d = float(lambda_d)
        self.exempt_dims = [int(i) for i in exempt_dims] if exempt_dims else None
        self.gather = as_bool(gather)  # command-line overrides arrive as strings

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, lambda_od={self.lambda_od}, lambda_d={self.lambda_d}, gather={self.gather}"

    def forward(
        self,
        x: torch.Tensor,
        x_hat: torch.Tensor,
        mu: torch.Tensor,
        logvar: torch.Tensor,
        beta: float,
        *,
        lambda_scale: float = 1.0,
        capacity: float = 0.0,
        voxel_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """ELBO terms plus the covariance penalty scaled by ``lambda_scale`` (keyword-only, like ``capacity``)."""
        out = super().forward(x, x_hat, mu, logvar, beta, capacity=capacity, voxel_weight=voxel_weight)
        mu_all, logvar_all = gather_for_dip(mu, logvar) if self.gather else (mu, logvar)
        penalty, offdiag, diag = dip_penalty(mu_all, logvar_all, self.lambda_od, self.lambda_d, self.exempt_dims)
        out["loss"] = out["loss"] + float(lambda_scale) * penalty
        out.update(
            cov_penalty=penalty,
            cov_offdiag=offdiag,
            cov_diag=diag,
            lambda_scale=torch.full((), float(lambda_scale), dtype=torch.float32, device=penalty.device),
        )
        return out
