"""Meningioma growth law (Gompertz), growth modes, law sampling given the rapid-growth class, scan schedules.

Gompertz growth ``dV/dt = a V ln(K / V)`` has the closed form ``V(t) = K exp(ln(V0 / K) e^{-a t})``;
equivalently ``d lnV/dt = a (ln K - ln V)`` is linear in log-volume. It fits meningioma volumetric
follow-up best at group level (Strand et al., Neuro-Oncol. Adv. 2023; Nakasu et al., Acta Neurochir. 2011).
With ``g = ln(K / V0)`` the instantaneous relative growth rate at diagnosis is ``a g`` and the tumour is past
its inflection point (``V = K / e``) when ``g < 1`` (Nakasu 2011: most incidental tumours are).

Each growth mode (:class:`GrowthMode`) gives the class mix (grower / plateau / shrinker), the distributions
of V0, a and g per class and a small *atypical* group of growers that grow quasi-exponentially over follow-up
(large ``g``, small ``a``: ``d lnV/dt = a (g - ...)`` stays near ``a g``; Nakasu 2011). Two labels are
computed from the true law over :data:`LABEL_HORIZON_YEARS` (the prospective 5-year schedule of
Behbahani et al. 2019), independent of the schedule actually drawn:

- rapid growth (AIMSS, Lee et al., J. Neurosurg. 2017): ``(V(T) - V0) / T >= 2 mL/yr``;
- relative growth rate ``RGR = ln(V(T) / V0) / T`` (per year; Strand 2023 report it in %/yr).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Window (years) over which the rapid-growth label and the relative growth rate are computed from the law.
LABEL_HORIZON_YEARS: float = 5.0
#: AIMSS rapid growth threshold on the absolute growth rate (mL = cm^3 per year).
RAPID_THRESHOLD_ML_PER_YEAR: float = 2.0
K_MAX_ML: float = 120.0  # carrying capacity cap of ordinary growers: the tumour must fit inside the skull
#: Multiplicative (log-normal) volumetric measurement noise: repeat-volumetry SD 4.1 % (Oya et al. 2011).
VOLUME_NOISE_SD: float = 0.041
GAP_RANGE_YEARS: tuple[float, float] = (0.5, 2.0)
#: Prospective follow-up schedule (years): Behbahani et al. 2019.
PROTOCOL_YEARS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)
PROTOCOL_JITTER_YEARS: float = 0.04  # about +-2 weeks around each planned visit (the first stays at 0)
SCHEDULES: tuple[str, ...] = ("irregular", "protocol")
GROWTH_CLASS_NAMES: tuple[str, str, str] = ("grower", "plateau", "shrinker")
MAX_DRAWS: int = 10_000  # rejection sampling of a law with the requested rapid label


@dataclass(frozen=True)
class GrowthMode:
    """Distributions of one growth mode (all log-normal parameters are (median, sd of the log)).

    ``class_probs`` (grower, plateau, shrinker); ordinary growers: ``g = ln(K/V0)`` log-normal, capped so
    ``K <= K_MAX_ML`` and floored at ``grower_g_min``; plateau ``g ~ U(plateau_g)``; shrinker ``K/V0 ~ U``;
    a log-normal for all but atypical laws; ``atypical_share`` of growers are atypical with
    ``g ~ U(atypical_g)`` and initial relative rate ``a g ~ U(atypical_rate0)``.
    """

    name: str
    class_probs: tuple[float, float, float]
    v0_median_ml: float
    v0_log_sd: float
    v0_range_ml: tuple[float, float]
    a_median: float
    a_log_sd: float
    a_range: tuple[float, float]
    grower_g_median: float
    grower_g_log_sd: float
    grower_g_min: float
    plateau_g: tuple[float, float]
    shrinker_ratio: tuple[float, float]
    atypical_share: float
    atypical_g: tuple[float, float]
    atypical_rate0: tuple[float, float]

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


#: ``realistic``: Strand 2023 class mix (59 / 27 / 14 %) and relative growth rates of growers (median
#: 6.1 %/yr, IQR 2.4-16 %/yr over about 5 years), most growers past the inflection point (Nakasu 2011), V0
#: set so the law's own rapid share among growers (~44 %) gives about AIMSS's 25.4 % rapid tumours overall.
#: ``fast``: the earlier demo law (a ~ 0.5/yr, K/V0 3-10, 65 / 25 / 10 %), for short demos that must show change.
GROWTH_MODES: dict[str, GrowthMode] = {
    "realistic": GrowthMode(
        name="realistic",
        class_probs=(0.59, 0.27, 0.14),
        v0_median_ml=20.0,
        v0_log_sd=0.8,
        v0_range_ml=(0.5, 60.0),
        a_median=0.2,
        a_log_sd=1.4,
        a_range=(0.005, 3.0),
        grower_g_median=0.55,
        grower_g_log_sd=1.2,
        grower_g_min=0.1,
        plateau_g=(0.0, 0.15),
        shrinker_ratio=(0.6, 0.9),
        atypical_share=0.10,
        atypical_g=(4.0, 6.0),
        atypical_rate0=(0.18, 0.50),
    ),
    "fast": GrowthMode(
        name="fast",
        class_probs=(0.65, 0.25, 0.10),
        v0_median_ml=5.0,
        v0_log_sd=0.7,
        v0_range_ml=(0.5, 40.0),
        a_median=0.5,
        a_log_sd=0.3,
        a_range=(0.05, 3.0),
        grower_g_median=float(np.log(5.5)),
        grower_g_log_sd=0.35,
        grower_g_min=float(np.log(1.5)),
        plateau_g=(0.0, float(np.log(1.2))),
        shrinker_ratio=(0.6, 0.9),
        atypical_share=0.07,
        atypical_g=(4.0, 6.0),
        atypical_rate0=(0.4, 0.8),
    ),
}
#: Median growth rate a (1/yr) per growth mode (kept for callers of the first generator).
GROWTH_RATE_MEDIAN: dict[str, float] = {k: m.a_median for k, m in GROWTH_MODES.items()}


def gompertz_volume(t: np.ndarray | float, v0: float, a: float, k: float) -> np.ndarray:
    """Closed-form Gompertz volume ``V(t) = K exp(ln(V0/K) exp(-a t))`` (same unit as v0, k)."""
    t = np.asarray(t, dtype=np.float64)
    return k * np.exp(np.log(v0 / k) * np.exp(-a * t))


@dataclass(frozen=True)
class GrowthParams:
    """One subject's Gompertz parameters: V0 and K in mL, a in 1/yr, the class they were drawn from and
    whether the law is of the atypical (quasi-exponential) kind."""

    v0_ml: float
    a_per_year: float
    k_ml: float
    growth_class: str
    atypical: bool = False

    def volume(self, t_years: np.ndarray | float) -> np.ndarray:
        return gompertz_volume(t_years, self.v0_ml, self.a_per_year, self.k_ml)

    def absolute_growth_rate(self, horizon: float = LABEL_HORIZON_YEARS) -> float:
        """``(V(T) - V0) / T`` in mL/yr."""
        return float((self.volume(horizon) - self.v0_ml) / horizon)

    def relative_growth_rate(self, horizon: float = LABEL_HORIZON_YEARS) -> float:
        """``ln(V(T) / V0) / T`` per year (x 100 for %/yr)."""
        return float(np.log(self.volume(horizon) / self.v0_ml) / horizon)

    def rapid(self, horizon: float = LABEL_HORIZON_YEARS) -> bool:
        """AIMSS rapid growth: absolute growth rate over the horizon ``>= 2 mL/yr``."""
        return self.absolute_growth_rate(horizon) >= RAPID_THRESHOLD_ML_PER_YEAR

    def past_inflection(self) -> bool:
        """``V0 > K / e`` (``ln(K / V0) < 1``): the growth rate ``dV/dt`` is already falling at diagnosis."""
        return bool(np.log(self.k_ml / self.v0_ml) < 1.0)


def get_mode(mode: str) -> GrowthMode:
    if mode not in GROWTH_MODES:
        raise ValueError(f"growth must be one of {sorted(GROWTH_MODES)}, got {mode!r}")
    return GROWTH_MODES[mode]


def _lognormal(rng: np.random.Generator, median: float, log_sd: float) -> float:
    return float(median * np.exp(rng.normal(0.0, log_sd)))


def sample_law(rng: np.random.Generator, mode: GrowthMode, growth_class: str, atypical: bool = False) -> GrowthParams:
    """Draw one Gompertz law of ``growth_class`` from ``mode`` (``atypical`` only for growers)."""
    v0 = float(np.clip(_lognormal(rng, mode.v0_median_ml, mode.v0_log_sd), *mode.v0_range_ml))
    a = float(np.clip(_lognormal(rng, mode.a_median, mode.a_log_sd), *mode.a_range))
    if growth_class == "grower" and atypical:
        g = float(rng.uniform(*mode.atypical_g))
        a = float(rng.uniform(*mode.atypical_rate0)) / g
    elif growth_class == "grower":
        g = _lognormal(rng, mode.grower_g_median, mode.grower_g_log_sd)
        g = max(min(g, float(np.log(K_MAX_ML / v0))), mode.grower_g_min)
    elif growth_class == "plateau":
        g = float(rng.uniform(*mode.plateau_g))
    elif growth_class == "shrinker":
        g = float(np.log(rng.uniform(*mode.shrinker_ratio)))
    else:
        raise ValueError(f"growth_class must be one of {GROWTH_CLASS_NAMES}, got {growth_class!r}")
    return GrowthParams(
        v0_ml=v0, a_per_year=a, k_ml=float(v0 * np.exp(g)), growth_class=growth_class, atypical=atypical
    )


def sample_class(rng: np.random.Generator, probs: tuple[float, float, float]) -> str:
    """Categorical draw over :data:`GROWTH_CLASS_NAMES` with ``probs``."""
    u, cum = rng.random(), 0.0
    for name, p in zip(GROWTH_CLASS_NAMES, probs):
        cum += p
        if u < cum:
            return name
    return GROWTH_CLASS_NAMES[-1]


def sample_growth(rng: np.random.Generator, mode: str = "realistic") -> GrowthParams:
    """Unconditional law of ``mode``: class from the mode's mix, atypical with the mode's share of growers."""
    m = get_mode(mode)
    cls = sample_class(rng, m.class_probs)
    atypical = cls == "grower" and rng.random() < m.atypical_share
    return sample_law(rng, m, cls, atypical)


def class_probs_given_rapid(mode: GrowthMode, rapid_share: float) -> tuple[float, float, float]:
    """Class mix among non-rapid subjects so that the overall mix stays ``mode.class_probs``.

    Rapid subjects are growers, so with overall rapid share ``r`` and class probabilities ``p``:
    ``P(grower | not rapid) = (p_grower - r) / (1 - r)`` and ``P(c | not rapid) = p_c / (1 - r)`` otherwise.
    """
    pg, pp, ps = mode.class_probs
    if not 0.0 <= rapid_share < pg:
        raise ValueError(f"rapid_share must be in [0, {pg}) (the grower share of growth mode {mode.name!r})")
    return ((pg - rapid_share) / (1 - rapid_share), pp / (1 - rapid_share), ps / (1 - rapid_share))


def sample_law_given_rapid(rng: np.random.Generator, mode: GrowthMode, rapid: bool, rapid_share: float) -> GrowthParams:
    """A law whose AIMSS label (:meth:`GrowthParams.rapid`) equals ``rapid``.

    Rapid subjects are growers; non-rapid ones take the class mix of :func:`class_probs_given_rapid`; the
    law (atypical flag included) is then drawn from the class's distribution restricted to the requested label
    (rejection sampling), so when ``rapid_share`` equals the mode's own rapid share the mixture over subjects
    is the unconditional law distribution of the mode.
    """
    cls = "grower" if rapid else sample_class(rng, class_probs_given_rapid(mode, rapid_share))
    for _ in range(MAX_DRAWS):
        atypical = cls == "grower" and rng.random() < mode.atypical_share
        law = sample_law(rng, mode, cls, atypical)
        if law.rapid() == rapid:
            return law
    raise RuntimeError(f"growth mode {mode.name!r} gave no {cls} law with rapid={rapid} in {MAX_DRAWS} draws")


#: Visits drawn per subject before cutting to the requested number (keeps shorter cohorts prefixes of longer ones).
MAX_TIMEPOINTS: int = 16


def sample_scan_times(rng: np.random.Generator, n: int, schedule: str = "irregular") -> np.ndarray:
    """Scan times in years, the first at 0.

    ``irregular``: gaps ~ U(0.5, 2) years. ``protocol``: the first ``n`` visits of 0, 0.5, 1, 1.5, 2, 3, 4, 5
    years (Behbahani et al. 2019), each after the first jittered by U(-0.04, 0.04) years.

    The draws are made for ``MAX_TIMEPOINTS`` visits and cut to ``n``, so a cohort with fewer timepoints holds the
    first visits of the same seed's longer cohort (the same subjects, followed for less time).
    """
    if n > MAX_TIMEPOINTS:
        raise ValueError(f"at most {MAX_TIMEPOINTS} timepoints per subject, asked for {n}")
    if schedule == "irregular":
        gaps = rng.uniform(*GAP_RANGE_YEARS, size=MAX_TIMEPOINTS - 1)[: max(n - 1, 0)]
        return np.concatenate([[0.0], np.cumsum(gaps)])
    if schedule == "protocol":
        if n > len(PROTOCOL_YEARS):
            raise ValueError(f"schedule 'protocol' has {len(PROTOCOL_YEARS)} visits, asked for {n} timepoints")
        jitter = rng.uniform(-PROTOCOL_JITTER_YEARS, PROTOCOL_JITTER_YEARS, size=MAX_TIMEPOINTS)[:n]
        jitter[0] = 0.0
        return np.asarray(PROTOCOL_YEARS[:n]) + jitter
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")


def noisy_volume(rng: np.random.Generator, volume_ml: float, sd: float = VOLUME_NOISE_SD) -> float:
    """Volume actually drawn: ``V exp(eps)``, eps ~ N(0, sd^2) (about 4 % multiplicative noise)."""
    return float(volume_ml * np.exp(rng.normal(0.0, sd)))
