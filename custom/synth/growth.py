"""Meningioma growth law (Gompertz), per-subject parameter sampling and irregular scan times.

Gompertz growth ``dV/dt = a V ln(K / V)`` has the closed form ``V(t) = K exp(ln(V0 / K) e^{-a t})``;
equivalently ``d lnV/dt = a (ln K - ln V)`` is linear in log-volume. It fits meningioma volumetric
follow-up best at group level (Nakasu et al., Acta Neurochir. 2011; Zeidman et al., J. Neurosurg. 2008).
Classes follow the natural-history literature: most grow, about a quarter are stable, a few shrink
(calcified); volumetric measurement noise is a few percent (design.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Median growth rate a (1/yr) per growth mode.
GROWTH_RATE_MEDIAN: dict[str, float] = {"realistic": 0.07, "fast": 0.5}
#: (class name, probability, (low, high) range of K / V0).
GROWTH_CLASSES: tuple[tuple[str, float, tuple[float, float]], ...] = (
    ("grower", 0.65, (3.0, 10.0)),
    ("plateau", 0.25, (1.0, 1.2)),
    ("shrinker", 0.10, (0.6, 0.9)),
)
V0_MEDIAN_ML: float = 5.0
V0_LOG_SD: float = 0.7
V_RANGE_ML: tuple[float, float] = (0.5, 40.0)  # range of V0
K_MAX_ML: float = 120.0  # carrying capacity cap: the tumour must fit inside the skull
VOLUME_NOISE_SD: float = 0.05  # multiplicative (log-normal) volumetric noise
GAP_RANGE_YEARS: tuple[float, float] = (0.5, 2.0)


def gompertz_volume(t: np.ndarray | float, v0: float, a: float, k: float) -> np.ndarray:
    """Closed-form Gompertz volume ``V(t) = K exp(ln(V0/K) exp(-a t))`` (same unit as v0, k)."""
    t = np.asarray(t, dtype=np.float64)
    return k * np.exp(np.log(v0 / k) * np.exp(-a * t))


@dataclass(frozen=True)
class GrowthParams:
    """One subject's Gompertz parameters: V0 and K in mL, a in 1/yr, and the class they were drawn from."""

    v0_ml: float
    a_per_year: float
    k_ml: float
    growth_class: str

    def volume(self, t_years: np.ndarray | float) -> np.ndarray:
        return gompertz_volume(t_years, self.v0_ml, self.a_per_year, self.k_ml)


def sample_growth(rng: np.random.Generator, mode: str = "realistic") -> GrowthParams:
    """Draw V0 ~ lognormal(median 5 mL), a ~ lognormal(median per ``mode``), class and K / V0 ratio."""
    if mode not in GROWTH_RATE_MEDIAN:
        raise ValueError(f"growth must be one of {sorted(GROWTH_RATE_MEDIAN)}, got {mode!r}")
    v0 = float(np.clip(V0_MEDIAN_ML * np.exp(rng.normal(0.0, V0_LOG_SD)), *V_RANGE_ML))
    a = float(GROWTH_RATE_MEDIAN[mode] * np.exp(rng.normal(0.0, 0.3)))
    u = rng.random()
    cum = 0.0
    name, ratio_range = GROWTH_CLASSES[-1][0], GROWTH_CLASSES[-1][2]
    for cls, p, rr in GROWTH_CLASSES:
        cum += p
        if u < cum:
            name, ratio_range = cls, rr
            break
    k = v0 * float(rng.uniform(*ratio_range))
    if name == "grower":
        k = max(min(k, K_MAX_ML), 1.5 * v0)
    return GrowthParams(v0_ml=v0, a_per_year=a, k_ml=float(k), growth_class=name)


def sample_scan_times(rng: np.random.Generator, n: int) -> np.ndarray:
    """Irregular follow-up: t0 = 0 then gaps ~ U(0.5, 2) years."""
    gaps = rng.uniform(*GAP_RANGE_YEARS, size=max(n - 1, 0))
    return np.concatenate([[0.0], np.cumsum(gaps)])


def noisy_volume(rng: np.random.Generator, volume_ml: float, sd: float = VOLUME_NOISE_SD) -> float:
    """Volume actually drawn: ``V exp(eps)``, eps ~ N(0, sd^2) (about 5 % multiplicative noise)."""
    return float(volume_ml * np.exp(rng.normal(0.0, sd)))
