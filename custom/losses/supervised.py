"""Exp3: semi-supervised alignment of latent sub-spaces with segmentation-derived factors (partial labels)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

__all__ = ["PartitionSupervision"]


class PartitionSupervision(nn.Module):
    """Regress named groups of latent means onto standardised tumour factors, on the labelled rows only.

    For each group g (e.g. ``"vol"``, ``"loc"``, ``"shape"``) with latent coordinates P_g and factor columns F_g:

        L_g = mean_{b in labelled_g} || mu[b, P_g] - (f[b, F_g] - m[F_g]) / s[F_g] ||^2,
        sup_loss = scale * sum_g w_g * L_g,

    the supervised latent-partition idea of the seed's Exp3 (``||z_vol - log V||^2``, ``||z_loc - c||^2``), akin to
    the partially supervised VAEs of Kingma et al. (2014) / Locatello et al. (2020, "Disentangling factors of
    variation using few labels"). A row counts as labelled for group g when all of its F_g factors are finite, so
    cases without segmentation (NaN factors) train only the VAE part. When no row of a group is labelled, L_g is
    an exact 0 that still depends on ``mu`` (zero gradient, graph intact), and nothing synchronises host and device.

    Factor columns index the factor table (``custom.data.factors.FACTOR_NAMES`` order); ``factor_mean`` /
    ``factor_std`` are per factor column (length >= max column + 1), typically training-set statistics; ``None``
    means no standardisation. Computed in fp32.

    Args:
        partition: group name -> latent coordinates, e.g. ``{"vol": [0], "loc": [1, 2, 3], "shape": [4, 5, 6]}``.
        factor_index: group name -> factor columns, same lengths as ``partition``.
        weights: group name -> weight w_g (groups missing here get weight 1).
        factor_mean: per-column means, or ``None``.
        factor_std: per-column standard deviations, or ``None``.
        scale: multiplies ``sup_loss``. The reconstruction term is a sum over C x D x H x W voxels, so its pull on
            mu grows with the image size; exp3.json sets ``scale = D H W / 32^3`` so that ``weights`` mean the same
            balance at 32^3, 64^3 and 128^3 (weights 1000 at 128^3 without it left z_vol at R² 0.08).

    ``forward(mu [B, Z], factors [B, F])`` returns ``{"sup_loss", "sup_<group>" for each group}`` (unweighted L_g).
    """

    def __init__(
        self,
        partition: Mapping[str, Sequence[int]],
        factor_index: Mapping[str, Sequence[int]],
        weights: Mapping[str, float] | None = None,
        factor_mean: Sequence[float] | None = None,
        factor_std: Sequence[float] | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        if set(partition) != set(factor_index):
            raise ValueError(f"partition groups {sorted(partition)} != factor_index groups {sorted(factor_index)}")
        weights = dict(weights or {})
        unknown = set(weights) - set(partition)
        if unknown:
            raise ValueError(f"weights name unknown groups {sorted(unknown)}")
        if not float(scale) > 0:
            raise ValueError(f"scale must be > 0, got {scale}")
        self.scale = float(scale)
        self.groups = tuple(partition)
        self.weights = {g: float(weights.get(g, 1.0)) for g in self.groups}
        for g in self.groups:
            if len(partition[g]) != len(factor_index[g]) or not partition[g]:
                raise ValueError(f"group {g!r}: {len(partition[g])} latent coords vs {len(factor_index[g])} factors")
            self.register_buffer(f"latent_{g}", torch.as_tensor(list(partition[g]), dtype=torch.long), persistent=False)
            self.register_buffer(
                f"factor_{g}", torch.as_tensor(list(factor_index[g]), dtype=torch.long), persistent=False
            )
        n_cols = 1 + max(max(v) for v in factor_index.values())
        mean = torch.zeros(n_cols) if factor_mean is None else torch.as_tensor(list(factor_mean), dtype=torch.float32)
        std = torch.ones(n_cols) if factor_std is None else torch.as_tensor(list(factor_std), dtype=torch.float32)
        if mean.numel() < n_cols or std.numel() < n_cols:
            raise ValueError(f"factor_mean/factor_std need at least {n_cols} entries")
        if not bool((std > 0).all()):
            raise ValueError("factor_std must be > 0")
        self.register_buffer("factor_mean", mean, persistent=False)
        self.register_buffer("factor_std", std, persistent=False)

    def forward(self, mu: torch.Tensor, factors: torch.Tensor) -> dict[str, torch.Tensor]:
        mu = mu.float()
        factors = factors.to(device=mu.device, dtype=torch.float32)
        out: dict[str, torch.Tensor] = {}
        total = mu.new_zeros(())
        for g in self.groups:
            cols = getattr(self, f"factor_{g}")
            target = (factors[:, cols] - self.factor_mean[cols]) / self.factor_std[cols]
            labelled = torch.isfinite(target).all(dim=1)
            target = torch.where(labelled[:, None], target, torch.zeros_like(target))
            sq = (mu[:, getattr(self, f"latent_{g}")] - target).square().sum(dim=1)
            loss_g = (sq * labelled).sum() / labelled.sum().clamp(min=1)
            out[f"sup_{g}"] = loss_g
            total = total + self.weights[g] * loss_g
        out["sup_loss"] = self.scale * total
        return out
