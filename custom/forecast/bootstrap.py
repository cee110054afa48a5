"""Subject-level bootstrap (Efron and Tibshirani 1993): resample subjects with replacement, keep all their rows.

A resample is a vector of multinomial counts ``c_i`` (how often subject ``i`` is drawn, ``sum c_i = n``). Then

* mean of a row quantity ``x``: ``sum_r c_{s(r)} x_r / sum_r c_{s(r)}`` (rows ``r`` of subject ``s(r)``);
* median: the weighted median of ``x_r`` with weights ``c_{s(r)}`` (smallest value whose cumulative weight reaches
  half the total).

* Spearman correlation of per-subject pairs ``(x_i, y_i)``: the Pearson correlation, weighted by ``c_i``, of the
  mid-ranks of the resampled values: ``rank(x_i) = #{drawn j : x_j < x_i} + (#{drawn j : x_j = x_i} + 1) / 2``
  (the average ranks ``scipy.stats.rankdata`` gives the repeated sample); NaN when a resample's x or y is constant.

The 95 % interval is the percentile interval (2.5 and 97.5 percentiles of the resampled statistic).

Every resample is computed at once from the ``[n_boot, n_subjects]`` count matrix with array operations (BLAS
products for means, one cumulative sum over the sorted rows for medians); the results equal those of the
explicit loop over resamples that repeats each drawn subject's rows (tests/test_forecast_report.py).
"""

from __future__ import annotations

import numpy as np


def resample_counts(n_subjects: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n_subjects]`` multinomial counts of subjects drawn with replacement."""
    return rng.multinomial(n_subjects, np.full(n_subjects, 1.0 / n_subjects), size=n_boot)


def _as_float(counts: np.ndarray) -> np.ndarray:
    return counts if counts.dtype == np.float64 else counts.astype(np.float64)


def boot_means(x: np.ndarray, subject: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Resampled means of each column of ``x`` ``[n_rows, m]``: ``[n_boot, m]`` (one matrix product)."""
    x = np.asarray(x, dtype=float)
    x2 = x.reshape(len(x), -1)
    n = counts.shape[1]
    sums = np.zeros((n, x2.shape[1]))
    np.add.at(sums, subject, x2)
    rows = np.bincount(subject, minlength=n).astype(float)
    c = _as_float(counts)
    num, den = c @ sums, c @ rows
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(den[:, None] > 0, num / np.where(den > 0, den, 1.0)[:, None], np.nan)
    return out if x.ndim == 2 else out[:, 0]


def boot_mean(x: np.ndarray, subject: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Resampled means of row values ``x`` (``subject``: row -> subject index into ``counts``' columns)."""
    return boot_means(np.asarray(x, dtype=float), subject, counts)


def boot_median(x: np.ndarray, subject: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Resampled weighted medians of row values ``x`` (weights = the subject's draw count)."""
    x = np.asarray(x, dtype=float)
    order = np.argsort(x, kind="stable")
    # [n_rows, n_boot] weights of the sorted rows, cumulated down the rows (int32: counts are at most n_subjects)
    w = np.ascontiguousarray(counts.T, dtype=np.int32)[subject[order]]
    cum = np.cumsum(w, axis=0, out=w)
    total = cum[-1].astype(float)
    # first sorted row whose cumulative weight reaches half the total = number of rows below half
    idx = np.count_nonzero(cum < 0.5 * total, axis=0)
    out = x[order][np.minimum(idx, len(x) - 1)]
    return np.where(total > 0, out, np.nan)


def _mid_ranks(v: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``[n_boot, n]`` mid-ranks of values ``v`` (one per subject) in the resamples of counts ``c``."""
    uniq, group = np.unique(v, return_inverse=True)
    per_group = np.zeros((c.shape[0], len(uniq)))
    np.add.at(per_group.T, group, c.T)
    below = np.cumsum(per_group, axis=1) - per_group
    return below[:, group] + (per_group[:, group] + 1.0) / 2.0


def boot_spearman(x: np.ndarray, y: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Resampled Spearman correlations of per-subject pairs ``(x_i, y_i)`` (subject ``i`` = column ``i``)."""
    c = _as_float(counts)
    rx, ry = _mid_ranks(np.asarray(x, dtype=float), c), _mid_ranks(np.asarray(y, dtype=float), c)
    n = c.sum(axis=1, keepdims=True)
    mx, my = (c * rx).sum(axis=1, keepdims=True) / n, (c * ry).sum(axis=1, keepdims=True) / n
    dx, dy = rx - mx, ry - my
    sxy, sxx, syy = (c * dx * dy).sum(axis=1), (c * dx * dx).sum(axis=1), (c * dy * dy).sum(axis=1)
    tiny = 1e-12 * n[:, 0] ** 3
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where((sxx > tiny) & (syy > tiny), sxy / np.sqrt(sxx * syy), np.nan)


def percentile_ci(samples: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Percentile interval of bootstrap ``samples`` (NaNs ignored)."""
    s = samples[np.isfinite(samples)]
    if s.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)
