"""Per-epoch schedules for the KL weight beta and the KL capacity C.

Every schedule is a small frozen dataclass called with the 1-based Ignite epoch (``engine.state.epoch``) and
returning a Python float. Epoch 0 (Ignite's value before the first epoch starts) is treated as epoch 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["CyclicalBeta", "LinearBeta", "ConstantBeta", "LinearCapacity"]


@dataclass(frozen=True)
class CyclicalBeta:
    """Cyclical KL annealing (Fu et al. 2019, NAACL, "Cyclical Annealing Schedule").

    With T = ``total_epochs``, M = ``n_cycles``, R = ``ratio``:
    ``tau = ((t - 1) mod ceil(T / M)) / (T / M)``; ``beta = beta_max * tau / R`` if ``tau <= R`` else ``beta_max``.
    At T=160, M=4, R=0.5 each 40-epoch cycle ramps beta from 0 (epoch 1, 41, ...) to beta_max at epoch 21 and
    holds it to epoch 40. Past T the formula keeps cycling.
    """

    beta_max: float = 1.0
    total_epochs: int = 160
    n_cycles: int = 4
    ratio: float = 0.5

    def __post_init__(self) -> None:
        if self.total_epochs < 1 or self.n_cycles < 1 or not 0 < self.ratio <= 1 or self.beta_max < 0:
            raise ValueError(f"invalid cyclical schedule {self}")

    def __call__(self, epoch: int) -> float:
        t = max(int(epoch), 1)
        period = self.total_epochs / self.n_cycles
        tau = ((t - 1) % math.ceil(period)) / period
        return self.beta_max * tau / self.ratio if tau <= self.ratio else self.beta_max


@dataclass(frozen=True)
class LinearBeta:
    """Linear KL warm-up (Bowman et al. 2016): ``beta = beta_max * clip((t - start) / warmup_epochs, 0, 1)``.

    Epochs ``t <= start`` give 0, epoch ``start + 1`` gives ``beta_max / warmup_epochs`` and epochs from
    ``start + warmup_epochs`` on give ``beta_max``; ``warmup_epochs = 0`` jumps to ``beta_max`` after ``start``.
    """

    beta_max: float = 1.0
    warmup_epochs: int = 10
    start: int = 0

    def __post_init__(self) -> None:
        if self.warmup_epochs < 0 or self.start < 0 or self.beta_max < 0:
            raise ValueError(f"invalid linear schedule {self}")

    def __call__(self, epoch: int) -> float:
        t = max(int(epoch), 1)
        if self.warmup_epochs == 0:
            return self.beta_max if t > self.start else 0.0
        return self.beta_max * min(max((t - self.start) / self.warmup_epochs, 0.0), 1.0)


@dataclass(frozen=True)
class ConstantBeta:
    """A fixed beta (beta = 1 is the plain ELBO; beta > 1 the beta-VAE of Higgins et al. 2017)."""

    beta: float = 1.0

    def __call__(self, epoch: int) -> float:
        return self.beta


@dataclass(frozen=True)
class LinearCapacity:
    """KL capacity C rising linearly from 0 at epoch 1 to ``c_max`` at ``total_epochs`` (Burgess et al. 2018).

    ``C = c_max * clip((t - 1) / (total_epochs - 1), 0, 1)`` (``c_max`` from epoch 1 when ``total_epochs == 1``),
    held at ``c_max`` afterwards. Used with ``VAELoss(capacity_gamma > 0)``.
    """

    c_max: float = 25.0
    total_epochs: int = 100

    def __post_init__(self) -> None:
        if self.total_epochs < 1 or self.c_max < 0:
            raise ValueError(f"invalid capacity schedule {self}")

    def __call__(self, epoch: int) -> float:
        t = max(int(epoch), 1)
        if self.total_epochs == 1:
            return self.c_max
        return self.c_max * min((t - 1) / (self.total_epochs - 1), 1.0)
