"""Split-conformal intervals for ln V at every target time, and growth probabilities from the same calibration.

Calibration (Vovk et al. 2005; Lei et al., JASA 2018): on validation-subject forecasts, the normalised
nonconformity score of a forecast is ``alpha = |ln V - ln V_hat| / sigma``; with the scores of the ``n``
calibration forecasts of a category sorted, the level-``c`` interval of a new forecast of that category is
``ln V_hat +- alpha_(q) sigma`` with ``q = ceil((n + 1) c)`` (the finite-sample corrected quantile; infinite when
``q > n``). The order statistic is taken here rather than from crepes' ``ConformalRegressor``: crepes 0.9.1 indexes
``int((1 - c)(n + 1)) - 1`` into the descending scores, which floating point truncates one step too far when
``(1 - c)(n + 1)`` is an integer (c = 0.9, n = 19 gives the 19th instead of the 18th smallest score: conservative,
but not the stated quantile).

Categories (Mondrian conformal, Vovk et al. 2005 ch. 4; Bostrom and Johansson 2020): every score belongs to the
category ``(k_obs, horizon bin)``, and each category gets its own quantile, so that coverage holds conditionally on
the category (for every k_obs and every horizon bin), not only marginally over all horizons. Pooling all horizons
of a k_obs (``horizon_edges=None``) over-covers near horizons and under-covers far ones whenever the normalised
error still grows with the horizon. The horizon bins are ``(-inf, e1], (e1, e2], ..., (e_m, inf)`` in years after
the last observed scan, default edges ``HORIZON_EDGES_YEARS = (1, 2, 3, 4, 5)``: yearly bins, whose unions are the
report's horizon bins (<= 1, 1-2, > 2 years), so coverage holds in each of those too; on a yearly follow-up
schedule the last scan of every subject has a bin of its own. Per k_obs, a bin holding fewer than
``min_scores`` (default 30) calibration scores is merged with its neighbour that holds fewer scores (the only
neighbour at either end), repeated until every bin holds ``min_scores`` or one bin is left; the merged edges per
k_obs are kept in ``bin_edges_`` and ``n_calib_`` holds the scores per category. 30 scores put the 90 % quantile at
the 28th of 30 (``ceil(31 * 0.9)``), the fewest for which both levels have a finite quantile with one score of
slack.

Difficulty ``sigma`` (``normalise``):

* ``"pred_sd"``: the method's own predictive sd of ln V (``pred_sd_log``);
* ``"horizon"``: ``sqrt(h0^2 + h^2)``, ``h`` the horizon in years (``h0`` = 0.5 yr, the error of a forecast at
  ``h = 0`` relative to one a year out);
* ``"none"``: 1 (plain split conformal);
* ``"auto"`` (default): ``pred_sd`` where the forecast has a finite ``pred_sd_log``, else ``horizon``.

Growth probabilities come from crepes' ``ConformalPredictiveSystem`` on the signed scores
``(ln V - ln V_hat) / sigma`` (Vovk et al., Machine Learning 2019), unsmoothed:
``P(ln V <= y) = (#{j : ln V_hat + sigma alpha_j <= y} + 1) / (n + 1)``; then
``p_growth15 = 1 - P(ln V <= ln(1.15 V_last))`` (an upper bound on ``P(V > 1.15 V_last)`` by ``1/(n+1)``) and
``p_prog40 = 1 - P(ln V <= ln(1.40 V_last))``, ``V_last`` the measured volume of the last observed scan. The
predictive system uses the same categories as the intervals (one predictive distribution per (k_obs, horizon bin)).

Exchangeability holds between subjects, not between the target scans of one subject: coverage is marginal over a
random subject's target scans of the category (every target of a calibration subject enters the calibration set;
within a category a subject contributes at most as many scores as it has targets there, two for the default bins on
the protocol schedule).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from crepes import ConformalPredictiveSystem

from custom.forecast.frames import check_forecast

#: Growth thresholds of the probabilities: > 15 % growth, and RANO meningioma progression (+40 % volume).
GROWTH15, PROG40 = 1.15, 1.40
#: Horizon offset h0 (years) of the ``"horizon"`` difficulty sqrt(h0^2 + h^2).
HORIZON_OFFSET_YEARS = 0.5
NORMALISERS = ("auto", "pred_sd", "horizon", "none")
#: Default horizon bin edges (years after the last observed scan) of the Mondrian categories, and the fewest
#: calibration scores a bin keeps before it is merged with a neighbour.
HORIZON_EDGES_YEARS: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 5.0)
MIN_SCORES_PER_BIN = 30


def merge_horizon_bins(horizons: np.ndarray, edges: Sequence[float], min_scores: int) -> tuple[float, ...]:
    """Edges left after merging bins ``(-inf, e1], ..., (e_m, inf)`` holding fewer than ``min_scores`` horizons.

    The bin with the fewest horizons below ``min_scores`` is merged with its neighbour holding fewer (ties: the
    nearer horizons, i.e. the left one), until every bin holds ``min_scores`` or one bin is left.
    """
    e = sorted(float(x) for x in edges)
    h = np.asarray(horizons, dtype=float)

    def counts(ed: list[float]) -> np.ndarray:
        return np.bincount(np.searchsorted(ed, h, side="left"), minlength=len(ed) + 1)

    c = counts(e)
    while len(e) and c.min() < min_scores:
        i = int(np.argmin(c))
        if i == 0:
            j = 1
        elif i == len(c) - 1:
            j = i - 1
        else:
            j = i - 1 if c[i - 1] <= c[i + 1] else i + 1
        del e[min(i, j)]  # the edge between bins i and j
        c = counts(e)
    return tuple(e)


def horizon_bin_index(horizons: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Index of the bin ``(-inf, e1], (e1, e2], ..., (e_m, inf)`` of each horizon."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(horizons, dtype=float), side="left")


def level_name(level: float) -> str:
    """Column stem of a level: 0.8 -> ``"80"``."""
    return f"{round(100 * level):d}"


def join_truth(forecast: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Forecast rows with the truth's measured ``volume_ml`` (and other truth columns) on the same target scan.

    Joins on ``subject_id, k_obs, time_years`` when the truth has ``k_obs``, else on ``subject_id, time_years``;
    raises ``ValueError`` when a forecast row has no truth row.
    """
    keys = ["subject_id", "k_obs", "time_years"] if "k_obs" in truth.columns else ["subject_id", "time_years"]
    tr = truth.drop_duplicates(keys)
    extra = [c for c in tr.columns if c not in forecast.columns or c in keys]
    merged = forecast.merge(tr[extra], on=keys, how="left", validate="many_to_one", indicator=True)
    missing = merged["_merge"] != "both"
    if missing.any():
        row = merged.loc[missing].iloc[0]
        raise ValueError(f"no truth row for subject {row['subject_id']} at time {row['time_years']} (k_obs per row)")
    return merged.drop(columns="_merge")


class ConformalVolumeIntervals:
    """Mondrian split-conformal ln V intervals at ``levels`` and growth probabilities (see the module docstring).

    Args:
        levels: interval levels in (0, 1).
        normalise: difficulty ``sigma`` of the scores (``NORMALISERS``).
        h0: horizon offset of the ``"horizon"`` difficulty (years).
        horizon_edges: horizon bin edges of the categories (years after the last observed scan); ``None`` pools all
            horizons of a k_obs (marginal calibration).
        min_scores: fewest calibration scores per bin before it is merged with a neighbour.

    Example:
        >>> cal = ConformalVolumeIntervals(levels=(0.8, 0.9)).fit(val_forecast, val_truth)
        >>> test_forecast = cal.transform(test_forecast)  # adds lo80_ml, hi80_ml, ..., p_growth15, p_prog40
    """

    def __init__(
        self,
        levels: Sequence[float] = (0.8, 0.9),
        normalise: str = "auto",
        h0: float = HORIZON_OFFSET_YEARS,
        horizon_edges: Sequence[float] | None = HORIZON_EDGES_YEARS,
        min_scores: int = MIN_SCORES_PER_BIN,
    ) -> None:
        if normalise not in NORMALISERS:
            raise ValueError(f"normalise must be one of {NORMALISERS}, got {normalise!r}")
        if not all(0.0 < lv < 1.0 for lv in levels):
            raise ValueError(f"conformal levels must lie in (0, 1), got {list(levels)}")
        if int(min_scores) < 1:
            raise ValueError(f"min_scores must be a positive integer, got {min_scores!r}")
        self.levels = tuple(float(lv) for lv in levels)
        self.normalise = normalise
        self.h0 = float(h0)
        self.horizon_edges = tuple(sorted(float(e) for e in horizon_edges)) if horizon_edges is not None else ()
        self.min_scores = int(min_scores)

    def _sigma(self, forecast: pd.DataFrame) -> np.ndarray:
        mode = self.normaliser_
        if mode == "pred_sd":
            if "pred_sd_log" not in forecast:
                raise ValueError("normalise='pred_sd' needs a pred_sd_log column in the forecast")
            s = forecast["pred_sd_log"].to_numpy(dtype=float)
            if not np.all(np.isfinite(s) & (s > 0)):
                raise ValueError("normalise='pred_sd' needs a finite, positive pred_sd_log on every forecast row")
            return s
        if mode == "horizon":
            return np.sqrt(self.h0**2 + forecast["horizon_years"].to_numpy(dtype=float) ** 2)
        return np.ones(len(forecast))

    def categories(self, forecast: pd.DataFrame) -> np.ndarray:
        """Category code of each forecast row: ``(k_obs, horizon bin)`` numbered as in ``category_keys_``."""
        k = forecast["k_obs"].to_numpy(dtype=int)
        unseen = sorted(set(k.tolist()) - set(self.k_values_))
        if unseen:
            raise ValueError(f"no calibration forecasts for k_obs={unseen}")
        h = forecast["horizon_years"].to_numpy(dtype=float)
        code = np.empty(len(k), dtype=int)
        for kk in self.k_values_:
            at = k == kk
            code[at] = self._offset_[kk] + horizon_bin_index(h[at], self.bin_edges_[kk])
        return code

    def fit(self, calib_forecast: pd.DataFrame, calib_truth: pd.DataFrame) -> "ConformalVolumeIntervals":
        """Calibrate on validation-subject forecasts and their truth (measured ``volume_ml``)."""
        check_forecast(calib_forecast, "calibration forecast")
        if self.normalise == "auto":
            s = calib_forecast["pred_sd_log"] if "pred_sd_log" in calib_forecast else pd.Series(dtype=float)
            self.normaliser_ = "pred_sd" if len(s) and np.all(np.isfinite(s.to_numpy(dtype=float))) else "horizon"
        else:
            self.normaliser_ = self.normalise
        df = join_truth(calib_forecast, calib_truth)
        resid = np.log(df["volume_ml"].to_numpy(dtype=float)) - np.log(df["pred_volume_ml"].to_numpy(dtype=float))
        sigma = self._sigma(df)
        k = df["k_obs"].to_numpy(dtype=int)
        h = df["horizon_years"].to_numpy(dtype=float)
        self.k_values_ = sorted(set(k.tolist()))
        self.bin_edges_ = {
            kk: merge_horizon_bins(h[k == kk], self.horizon_edges, self.min_scores) for kk in self.k_values_
        }
        self._offset_, self.category_keys_ = {}, []
        for kk in self.k_values_:
            self._offset_[kk] = len(self.category_keys_)
            lows = (-np.inf,) + self.bin_edges_[kk]
            highs = self.bin_edges_[kk] + (np.inf,)
            self.category_keys_ += [(kk, lo, hi) for lo, hi in zip(lows, highs)]
        cat = self.categories(df)
        self.scores_ = {c: np.sort(np.abs(resid[cat == c]) / sigma[cat == c]) for c in range(len(self.category_keys_))}
        self.n_calib_ = {self.category_keys_[c]: len(a) for c, a in self.scores_.items()}
        self.cps_ = ConformalPredictiveSystem().fit(resid, sigmas=sigma, bins=cat)
        return self

    def quantile(self, level: float, k_obs: int, horizon_years: float | None = None) -> float:
        """The calibrated normalised score ``alpha_(ceil((n+1) level))`` of the category of ``(k_obs, horizon)``.

        ``horizon_years`` may be left out when ``k_obs`` has one category. Infinite when the category holds too
        few scores for the level.
        """
        if k_obs not in self._offset_:
            raise ValueError(f"no calibration forecasts for k_obs={[k_obs]}")
        edges = self.bin_edges_[k_obs]
        if horizon_years is None and edges:
            raise ValueError(f"k_obs={k_obs} has {len(edges) + 1} horizon categories: pass horizon_years")
        b = int(horizon_bin_index(np.array([0.0 if horizon_years is None else horizon_years]), edges)[0])
        return self._quantile(level, self._offset_[k_obs] + b)

    def _quantile(self, level: float, category: int) -> float:
        a = self.scores_[category]
        q = int(np.ceil((len(a) + 1) * level - 1e-9))  # tolerance: (n + 1) c is often an integer up to rounding
        return float(a[q - 1]) if 1 <= q <= len(a) else float("inf")

    def transform(self, forecast: pd.DataFrame, last_obs_volume_ml: np.ndarray | None = None) -> pd.DataFrame:
        """Forecast with ``lo{L}_ml, hi{L}_ml`` per level and ``p_growth15, p_prog40`` added.

        ``last_obs_volume_ml`` (row-aligned) is needed when the frame has no ``last_obs_volume_ml`` column.
        """
        check_forecast(forecast)
        cat = self.categories(forecast)
        out = forecast.copy()
        y_hat = np.log(out["pred_volume_ml"].to_numpy(dtype=float))
        sigma = self._sigma(out)
        for lv in self.levels:
            q = np.array([self._quantile(lv, c) for c in range(len(self.category_keys_))])[cat]
            half = q * sigma
            out[f"lo{level_name(lv)}_ml"] = np.exp(y_hat - half)
            out[f"hi{level_name(lv)}_ml"] = np.exp(y_hat + half)
        if last_obs_volume_ml is None:
            if "last_obs_volume_ml" not in out:
                raise ValueError("growth probabilities need last_obs_volume_ml (a column or the argument)")
            last_obs_volume_ml = out["last_obs_volume_ml"].to_numpy(dtype=float)
        v_last = np.asarray(last_obs_volume_ml, dtype=float)
        for col, ratio in (("p_growth15", GROWTH15), ("p_prog40", PROG40)):
            cdf = self.cps_.predict(y_hat, sigmas=sigma, bins=cat, y=np.log(ratio * v_last), smoothing=False)
            out[col] = 1.0 - np.ravel(cdf)
        return out


def reliability_table(p: np.ndarray, outcome: np.ndarray, n_bins: int = 10) -> pd.DataFrame:
    """Reliability diagram data: per equal-width probability bin, mean forecast, observed frequency and count."""
    p = np.asarray(p, dtype=float)
    o = np.asarray(outcome, dtype=float)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    rows = [
        {
            "bin": b,
            "p_mean": float(p[idx == b].mean()),
            "observed": float(o[idx == b].mean()),
            "n": int((idx == b).sum()),
        }
        for b in range(n_bins)
        if np.any(idx == b)
    ]
    return pd.DataFrame(rows, columns=["bin", "p_mean", "observed", "n"])
