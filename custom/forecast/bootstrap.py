"""Subject-level bootstrap (Efron and Tibshirani 1993): resample subjects with replacement, keep all their rows.

A resample is a vector of multinomial counts ``c_i`` (how often subject ``i`` is drawn, ``sum c_i = n``). Then

* mean of a row quantity ``x``: ``sum_r c_{s(r)} x_r / sum_r c_{s(r)}`` (rows ``r`` of subject ``s(r)``);
* median: the weighted median of ``x_r`` with weights ``c_{s(r)}`` (smallest value whose cumulative weight reaches
  half the total).

The 95 % interval is the percentile interval (2.5 and 97.5 percentiles of the resampled statistic).
"""

from __future__ import annotations

import numpy as np


def resample_counts(n_subjects: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n_subjects]`` multinomial counts of subjects drawn with replacement."""
    return rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=n_boot)


def boot_mean(x: np.ndarray, subject: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Resampled means of row values ``x`` (``subject``: row -> subject index into ``counts``' columns)."""
    n = counts.shape[1]
    sums = np.bincount(subject, weights=x, minlength=n)
    rows = np.bincount(subject, minlength=n).astype(float)
    den = counts @ rows
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (counts @ sums) / np.where(den > 0, den, 1.0), np.nan)


def boot_median(x: np.ndarray, subject: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Resampled weighted medians of row values ``x`` (weights = the subject's draw count)."""
    order = np.argsort(x, kind="stable")
    w = counts[:, subject[order]].astype(float)
    cum = np.cumsum(w, axis=1)
    total = cum[:, -1:]
    idx = np.argmax(cum >= 0.5 * total, axis=1)
    out = x[order][idx]
    return np.where(total[:, 0] > 0, out, np.nan)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaNs ignored)."""
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
