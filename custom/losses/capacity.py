"""Controlled-capacity KL term of Burgess et al. (2018), "Understanding disentangling in beta-VAE"."""

from __future__ import annotations

import torch

__all__ = ["capacity_term"]


def capacity_term(kl: torch.Tensor, gamma: float, capacity: float | torch.Tensor) -> torch.Tensor:
    """``gamma * |KL - C|``: pulls the KL towards a target capacity C (nats) instead of towards 0.

    C is raised from 0 to C_max over training (:class:`custom.schedules.LinearCapacity`) so the code gains
    information gradually. Computed in fp32.

    Args:
        kl: the KL term (scalar tensor, nats).
        gamma: weight of the constraint (Burgess et al. use 1000 with a mean-free, summed likelihood).
        capacity: the current target C.
    """
    return gamma * (kl.float() - capacity).abs()
