"""Split-conformal intervals for ln V at every target time, and growth probabilities from the same calibration.

Calibration (Vovk et al. 2005; Lei et al., JASA 2018): on validation-subject forecasts, the normalised
nonconformity score of a forecast is ``alpha = |ln V - ln V_hat| / sigma``; with the scores of the ``n``
calibration forecasts sorted, the level-``c`` interval of a new forecast is ``ln V_hat +- alpha_(q) sigma`` with
``q = ceil((n + 1) c)`` (the finite-sample corrected quantile; infinite when ``q > n``). Scores are pooled per
``k_obs`` (Mondrian conformal: each k gets its own quantile). The order statistic is taken here rather than from
crepes' ``ConformalRegressor``: crepes 0.9.1 indexes ``int((1 - c)(n + 1)) - 1`` into the descending scores, which
floating point truncates one step too far when ``(1 - c)(n + 1)`` is an integer (c = 0.9, n = 19 gives the 19th
instead of the 18th smallest score: conservative, but not the stated quantile).

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
``p_prog40 = 1 - P(ln V <= ln(1.40 V_last))``, ``V_last`` the measured volume of the last observed scan.

Exchangeability holds between subjects, not between the target scans of one subject: coverage is marginal over a
random subject's target scans (every target of a calibration subject enters the calibration set).
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
    """Split-conformal ln V intervals at ``levels`` and growth probabilities (see the module docstring).

    Example:
        >>> cal = ConformalVolumeIntervals(levels=(0.8, 0.9)).fit(val_forecast, val_truth)
        >>> test_forecast = cal.transform(test_forecast)  # adds lo80_ml, hi80_ml, ..., p_growth15, p_prog40
    """

    def __init__(
        self, levels: Sequence[float] = (0.8, 0.9), normalise: str = "auto", h0: float = HORIZON_OFFSET_YEARS
    ) -> None:
        if normalise not in NORMALISERS:
            raise ValueError(f"normalise must be one of {NORMALISERS}, got {normalise!r}")
        if not all(0.0 < lv < 1.0 for lv in levels):
            raise ValueError(f"conformal levels must lie in (0, 1), got {list(levels)}")
        self.levels = tuple(float(lv) for lv in levels)
        self.normalise = normalise
        self.h0 = float(h0)

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
        bins = df["k_obs"].to_numpy(dtype=int)
        self.k_values_ = sorted(set(bins.tolist()))
        self.n_calib_ = {k: int(np.sum(bins == k)) for k in self.k_values_}
        self.scores_ = {k: np.sort(np.abs(resid[bins == k]) / sigma[bins == k]) for k in self.k_values_}
        self.cps_ = ConformalPredictiveSystem().fit(resid, sigmas=sigma, bins=bins)
        return self

    def quantile(self, level: float, k_obs: int) -> float:
        """The calibrated normalised score ``alpha_(ceil((n+1) level))`` of ``k_obs`` (inf when too few scores)."""
        a = self.scores_[k_obs]
        q = int(np.ceil((len(a) + 1) * level - 1e-9))  # tolerance: (n + 1) c is often an integer up to rounding
        return float(a[q - 1]) if q <= len(a) else float("inf")

    def transform(self, forecast: pd.DataFrame, last_obs_volume_ml: np.ndarray | None = None) -> pd.DataFrame:
        """Forecast with ``lo{L}_ml, hi{L}_ml`` per level and ``p_growth15, p_prog40`` added.

        ``last_obs_volume_ml`` (row-aligned) is needed when the frame has no ``last_obs_volume_ml`` column.
        """
        check_forecast(forecast)
        unseen = sorted(set(forecast["k_obs"].astype(int)) - set(self.k_values_))
        if unseen:
            raise ValueError(f"no calibration forecasts for k_obs={unseen}")
        out = forecast.copy()
        y_hat = np.log(out["pred_volume_ml"].to_numpy(dtype=float))
        sigma = self._sigma(out)
        bins = out["k_obs"].to_numpy(dtype=int)
        for lv in self.levels:
            q = np.zeros(len(bins))
            for k in self.k_values_:
                q[bins == k] = self.quantile(lv, k)
            half = q * sigma
            out[f"lo{level_name(lv)}_ml"] = np.exp(y_hat - half)
            out[f"hi{level_name(lv)}_ml"] = np.exp(y_hat + half)
        if last_obs_volume_ml is None:
            if "last_obs_volume_ml" not in out:
                raise ValueError("growth probabilities need last_obs_volume_ml (a column or the argument)")
            last_obs_volume_ml = out["last_obs_volume_ml"].to_numpy(dtype=float)
        v_last = np.asarray(last_obs_volume_ml, dtype=float)
        for col, ratio in (("p_growth15", GROWTH15), ("p_prog40", PROG40)):
            cdf = self.cps_.predict(y_hat, sigmas=sigma, bins=bins, y=np.log(ratio * v_last), smoothing=False)
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
