"""One subject's natural history: biomarkers, rapid-growth class, Gompertz law, scan times and measurement noise.

Drawn from the subject's own *history* stream, in this order, by both the image generator and the
table-only path (so the same seed gives the same laws, biomarkers, times and volumes with or without images):

1. biomarkers (:func:`custom.synth.biomarkers.sample_biomarkers`), optionally replaced by forced values;
2. rapid ~ Bernoulli(P(rapid | biomarkers)) (:func:`custom.synth.biomarkers.rapid_probability`);
3. the law given rapid (:func:`custom.synth.growth.sample_law_given_rapid`): its AIMSS label equals rapid;
4. scan times of the schedule; 5. one measurement-noise draw ``eps ~ N(0, sd^2)`` per scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from custom.synth.biomarkers import Biomarkers, EffectSizes, rapid_probability, sample_biomarkers
from custom.synth.growth import (
    MAX_TIMEPOINTS,
    VOLUME_NOISE_SD,
    GrowthParams,
    get_mode,
    sample_law_given_rapid,
    sample_scan_times,
)


@dataclass(frozen=True)
class SubjectHistory:
    """Ground truth of one subject that does not depend on the images."""

    markers: Biomarkers
    p_rapid: float
    law: GrowthParams
    times: np.ndarray  # years
    noise: np.ndarray  # log-volume measurement noise per scan

    @property
    def rapid(self) -> bool:
        return self.law.rapid()

    def target_volumes(self) -> np.ndarray:
        """Noise-free law volumes at the scan times (mL)."""
        return np.asarray(self.law.volume(self.times), dtype=np.float64)

    def drawn_volumes(self) -> np.ndarray:
        """Volumes the tumour is drawn at: ``V(t) exp(eps)`` (mL), before voxelisation."""
        return self.target_volumes() * np.exp(self.noise)

    def columns(self) -> dict[str, object]:
        """Per-subject cohort.csv columns of this history (repeated on every scan row)."""
        return {
            "true_V0_ml": self.law.v0_ml,
            "true_a_per_year": self.law.a_per_year,
            "true_K_ml": self.law.k_ml,
            "growth_class": self.law.growth_class,
            "calcification": self.markers.calcification,
            "t2_signal": self.markers.t2_signal,
            "edema_extent": self.markers.edema_extent,
            "rapid_growth": int(self.rapid),
            "rapid_probability": self.p_rapid,
            "atypical": int(self.law.atypical),
            "true_rgr_per_year": self.law.relative_growth_rate(),
            "true_agr_ml_per_year": self.law.absolute_growth_rate(),
            "past_inflection": int(self.law.past_inflection()),
        }


def sample_history(
    rng: np.random.Generator,
    timepoints: int,
    growth: str = "realistic",
    schedule: str = "irregular",
    biomarkers_on: bool = True,
    effects: EffectSizes | None = None,
    force: Biomarkers | None = None,
    noise_sd: float = VOLUME_NOISE_SD,
) -> SubjectHistory:
    """Draw one subject's history (see module doc); ``force`` replaces the drawn biomarkers."""
    effects = effects or EffectSizes()
    mode = get_mode(growth)
    markers = sample_biomarkers(rng)
    if force is not None:
        markers = force
    p = rapid_probability(markers, effects, biomarkers_on)
    rapid = bool(rng.random() < p)
    law = sample_law_given_rapid(rng, mode, rapid, effects.rapid_share)
    times = sample_scan_times(rng, timepoints, schedule)
    noise = rng.normal(0.0, noise_sd, size=MAX_TIMEPOINTS)[: len(times)]  # prefix-stable, as the times
    return SubjectHistory(markers=markers, p_rapid=p, law=law, times=times, noise=noise)
