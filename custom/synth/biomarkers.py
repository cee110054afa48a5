"""Imaging biomarkers per subject and the logistic model that ties them to the rapid-growth class.

Biomarkers (drawn first, then painted into every scan of the subject):

- ``calcification``: none | partial | heavy, P = 0.60 / 0.25 / 0.15;
- ``t2_signal`` (tumour T2 signal relative to grey matter): hypo | iso | hyper, depending on calcification
  (calcified meningiomas are mostly T2-hypointense): none 0.20 / 0.45 / 0.35, partial 0.45 / 0.35 / 0.20,
  heavy 0.75 / 0.20 / 0.05;
- ``edema_extent``: reach of the peritumoural edema in units of the tumour's equivalent radius (0 = none);
  present with probability 0.10 / 0.25 / 0.40 for hypo / iso / hyper T2 signal, then ~ U(0.2, 0.8).

Rapid growth (AIMSS, Lee et al., J. Neurosurg. 2017: >= 2 cm^3/yr) follows a logistic model in the AIMSS
indicators, with the AIMSS odds ratios as defaults::

    logit P(rapid) = b0 + ln(OR_calc) [no calcification] + ln(OR_edema) [edema] + ln(OR_T2) [T2 iso/hyper]

``b0`` is solved so that the expected rapid share over the biomarker distribution above equals
``rapid_share`` (AIMSS: 59 of 232 tumours, 25.4 %). With biomarkers off, ``P(rapid) = rapid_share`` for
every subject (the control cohort: growth independent of appearance).
"""

from __future__ import annotations

import functools
import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
from scipy.optimize import brentq

CALCIFICATION_LEVELS: tuple[str, str, str] = ("none", "partial", "heavy")
T2_LEVELS: tuple[str, str, str] = ("hypo", "iso", "hyper")
CALCIFICATION_PROBS: tuple[float, float, float] = (0.60, 0.25, 0.15)
#: P(t2_signal | calcification), rows in CALCIFICATION_LEVELS order, columns in T2_LEVELS order.
T2_PROBS_GIVEN_CALCIFICATION: dict[str, tuple[float, float, float]] = {
    "none": (0.20, 0.45, 0.35),
    "partial": (0.45, 0.35, 0.20),
    "heavy": (0.75, 0.20, 0.05),
}
#: P(edema present | t2_signal).
EDEMA_PROB_GIVEN_T2: dict[str, float] = {"hypo": 0.10, "iso": 0.25, "hyper": 0.40}
EDEMA_EXTENT_RANGE: tuple[float, float] = (0.2, 0.8)


@dataclass(frozen=True)
class EffectSizes:
    """Odds ratios of rapid growth per biomarker indicator (AIMSS defaults) and the overall rapid share."""

    or_no_calcification: float = 3.87
    or_edema: float = 2.74
    or_t2_iso_hyper: float = 3.76
    rapid_share: float = 0.254

    def __post_init__(self) -> None:
        for name in ("or_no_calcification", "or_edema", "or_t2_iso_hyper"):
            if not getattr(self, name) > 0:
                raise ValueError(f"effect size {name} must be a positive odds ratio, got {getattr(self, name)}")
        if not 0.0 < self.rapid_share < 1.0:
            raise ValueError(f"rapid_share must be in (0, 1), got {self.rapid_share}")

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class Biomarkers:
    """One subject's imaging biomarkers."""

    calcification: str
    t2_signal: str
    edema_extent: float

    def __post_init__(self) -> None:
        if self.calcification not in CALCIFICATION_LEVELS:
            raise ValueError(f"calcification must be one of {CALCIFICATION_LEVELS}, got {self.calcification!r}")
        if self.t2_signal not in T2_LEVELS:
            raise ValueError(f"t2_signal must be one of {T2_LEVELS}, got {self.t2_signal!r}")
        if not self.edema_extent >= 0:
            raise ValueError(f"edema_extent must be >= 0, got {self.edema_extent}")

    def indicators(self) -> tuple[int, int, int]:
        """AIMSS indicators: (no calcification, edema present, T2 iso/hyperintense)."""
        return (int(self.calcification == "none"), int(self.edema_extent > 0), int(self.t2_signal != "hypo"))


def _categorical(rng: np.random.Generator, levels: tuple[str, ...], probs: tuple[float, ...]) -> str:
    return levels[int(rng.choice(len(levels), p=np.asarray(probs) / sum(probs)))]


def sample_biomarkers(rng: np.random.Generator) -> Biomarkers:
    """Calcification, then T2 signal given calcification, then edema given T2 signal (see module doc)."""
    calc = _categorical(rng, CALCIFICATION_LEVELS, CALCIFICATION_PROBS)
    t2 = _categorical(rng, T2_LEVELS, T2_PROBS_GIVEN_CALCIFICATION[calc])
    present = rng.random() < EDEMA_PROB_GIVEN_T2[t2]
    extent = float(rng.uniform(*EDEMA_EXTENT_RANGE)) if present else 0.0
    return Biomarkers(calcification=calc, t2_signal=t2, edema_extent=extent)


def indicator_distribution() -> list[tuple[tuple[int, int, int], float]]:
    """Exact distribution of the AIMSS indicators under :func:`sample_biomarkers` (cells with P > 0)."""
    cells: dict[tuple[int, int, int], float] = {}
    for (ci, calc), (ti, t2), edema in itertools.product(enumerate(CALCIFICATION_LEVELS), enumerate(T2_LEVELS), (0, 1)):
        pe = EDEMA_PROB_GIVEN_T2[t2]
        p = CALCIFICATION_PROBS[ci] * T2_PROBS_GIVEN_CALCIFICATION[calc][ti] * (pe if edema else 1 - pe)
        key = (int(calc == "none"), edema, int(t2 != "hypo"))
        cells[key] = cells.get(key, 0.0) + p
    return sorted(cells.items())


def _log_odds(effects: EffectSizes) -> np.ndarray:
    return np.log([effects.or_no_calcification, effects.or_edema, effects.or_t2_iso_hyper])


@functools.lru_cache(maxsize=64)
def rapid_intercept(effects: EffectSizes) -> float:
    """``b0`` with ``sum_cells P(cell) sigmoid(b0 + x . ln OR) = rapid_share`` (bisection, Brent's method)."""
    beta = _log_odds(effects)
    cells = indicator_distribution()

    def excess(b0: float) -> float:
        return sum(p / (1.0 + math.exp(-(b0 + float(np.dot(x, beta))))) for x, p in cells) - effects.rapid_share

    return float(brentq(excess, -30.0, 30.0, xtol=1e-12))


def rapid_probability(markers: Biomarkers, effects: EffectSizes, biomarkers_on: bool = True) -> float:
    """P(rapid growth | biomarkers): the logistic model above, or ``rapid_share`` when biomarkers are off."""
    if not biomarkers_on:
        return effects.rapid_share
    eta = rapid_intercept(effects) + float(np.dot(markers.indicators(), _log_odds(effects)))
    return 1.0 / (1.0 + math.exp(-eta))
