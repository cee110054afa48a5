"""Linear mixed-effects model of ln V over time (statsmodels ``MixedLM``) and its BLUP forecasts.

Model (Laird and Ware, Biometrics 1982), subject i, scan j, ``t`` in years since the subject's first scan:

    y_ij = ln V_ij = (beta0 + b0_i) + (beta1 + b1_i) t_ij + e_ij,   b_i ~ N(0, D),  e_ij ~ N(0, s^2).

``beta``, ``D`` and ``s^2`` are fitted (REML) on the training subjects' full trajectories by statsmodels. A new
subject's random effects are predicted from its observed scans only, by the BLUP

    b_hat = D Z^T (Z D Z^T + s^2 I)^{-1} (y - X beta),   Var(b | y) = D - D Z^T (Z D Z^T + s^2 I)^{-1} Z D,

and a measured ln V at ``t*`` is forecast as ``x* beta + z* b_hat`` with variance ``z* Var(b|y) z*^T + s^2``
(``beta`` treated as known). These are the formulas statsmodels uses for ``random_effects`` of fitted subjects.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf

from custom.forecast.frames import forecast_frame
from custom.forecast.task import ForecastTask, check_cohort


def blup(z: np.ndarray, resid: np.ndarray, cov_re: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """BLUP of random effects and their conditional covariance: ``(b_hat, Var(b | y))`` (formulas above)."""
    v = z @ cov_re @ z.T + scale * np.eye(len(z))
    gain = cov_re @ z.T @ np.linalg.inv(v)
    return gain @ resid, cov_re - gain @ z @ cov_re


def relative_times(df: pd.DataFrame) -> np.ndarray:
    """Years since each subject's first scan of ``df`` (rows sorted by subject and time)."""
    return (df["time_years"] - df.groupby("subject_id")["time_years"].transform("min")).to_numpy(dtype=float)


class MixedEffectsLogVolume:
    """Random intercept and slope of ln V over time by subject (statsmodels MixedLM, REML); BLUP forecasts."""

    name = "MixedEffectsLogVolume"

    def fit(self, cohort: pd.DataFrame) -> "MixedEffectsLogVolume":
        df = check_cohort(cohort, "the training cohort")
        data = pd.DataFrame(
            {"y": np.log(df["volume_ml"].to_numpy()), "t": relative_times(df), "subject_id": df["subject_id"]}
        )
        model = smf.mixedlm("y ~ t", data, groups=data["subject_id"], re_formula="~t")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # statsmodels' convergence chatter; convergence is checked below
            self.result_ = model.fit(reml=True, method=["lbfgs", "powell"])
        if not self.result_.converged:
            raise RuntimeError("statsmodels MixedLM did not converge on the training cohort")
        self.beta_ = self.result_.fe_params.to_numpy(dtype=float)
        self.cov_re_ = np.asarray(self.result_.cov_re, dtype=float)
        self.scale_ = float(self.result_.scale)
        return self

    def predict(self, task: ForecastTask) -> pd.DataFrame:
        obs = task.observed
        t0 = obs.groupby("subject_id")["time_years"].min()
        groups = {s: g for s, g in obs.groupby("subject_id", sort=False)}
        tg = task.targets
        mean = np.empty(len(tg))
        sd = np.empty(len(tg))
        slope = np.empty(len(tg))
        for sid, idx in tg.groupby("subject_id", sort=False).indices.items():
            g = groups[sid]
            t = g["time_years"].to_numpy() - t0[sid]
            z = np.stack([np.ones_like(t), t], axis=1)
            b, vb = blup(z, np.log(g["volume_ml"].to_numpy()) - z @ self.beta_, self.cov_re_, self.scale_)
            ts = tg["time_years"].to_numpy()[idx] - t0[sid]
            zs = np.stack([np.ones_like(ts), ts], axis=1)
            mean[idx] = zs @ (self.beta_ + b)
            sd[idx] = np.sqrt(np.einsum("ij,jk,ik->i", zs, vb, zs) + self.scale_)
            slope[idx] = self.beta_[1] + b[1]
        out = forecast_frame(tg, self.name, mean, sd_log=sd)
        out["pred_slope_log_per_year"] = slope
        return out
