"""Measured-volume forecast baselines: what a clinician with the observed scans' segmentations could do.

Each baseline sees only the measured volumes (``volume_ml``) of a subject's observed scans and, for its population
part, the full measured trajectories of the training subjects. ``fit(train_cohort_rows)`` then
``predict(task) -> forecast frame`` (see :mod:`custom.forecast.frames`). Times are years since the first scan.

* ``LOCF``: ln V(t) = ln V_last (last observation carried forward).
* ``LogLinear``: least-squares line in ln V through the observed scans; with one observed scan the slope is the
  training subjects' median per-subject least-squares slope (a population slope).
* ``EBGompertz``: per-subject Gompertz MAP fit (:mod:`custom.forecast.gompertz_map`) under an empirical-Bayes
  prior on ``(ln a, g = ln K - ln V0)`` learned from per-subject fits of the training subjects' full trajectories
  (under the broad prior ``BROAD_PRIOR``); noise sd = pooled residual sd of those fits (a first pass on at most
  ``FIRST_PASS_SUBJECTS`` subjects at noise sd 0.05 sets the weight of the broad prior; the second pass on all
  subjects uses its noise estimate). Centre: the median of the fits. Spread (``prior_method``):

  - ``"mom"`` (default): moment deconvolution (``deconvolved_prior``). A point fit is the true parameter plus
    estimation noise, ``Var(u_hat) = Var(u) + E Var(u_hat | u)``, so the population variance is the squared robust
    sd (1.4826 MAD) of the fits minus the median first-stage Laplace posterior variance, floored at
    ``MIN_SD_LOG_A``/``MIN_SD_GAP`` (where a is barely identified, e.g. slow growth, the floor pins ln a at the
    population median and g carries the subject's growth);
  - ``"mad"``: the robust sd of the fits, estimation noise included (wider);
  - ``"em"``: a correlated Gaussian ``N(mu, Sigma)`` of ``(ln a, g)`` by Laplace-EM maximum marginal likelihood
    (``laplace_em_prior``; about ten times the fitting time).

  On 5,000-subject law cohorts (protocol schedule 0-5 years, last scan 4.5 years after the second), last-scan
  mean relative error at k_obs = 2, mad -> mom: growth ``fast`` 22.1 -> 22.3 % (growers 20.3 -> 20.7 %),
  ``realistic`` 23.6 -> 21.7 % (growers 21.3 -> 18.9 %); k_obs = 1 is unchanged (one scan: the forecast is the
  prior centre). The Gaussian EM prior forecast fast growers worse (23.6 %): the growth classes make ``g``
  trimodal, which a single Gaussian fits poorly.
* ``ReducedGompertz`` (Vaghi et al., PLoS Comput Biol 2020): the same, with the population-level coupling
  ``g = c0 + c1 ln a`` (robust Huber regression over the training fits, statsmodels RLM) in place of an
  individual ``g``: the single individual growth parameter is ``a`` (``y0``, the initial log volume, is an
  individual nuisance fitted to the observed scans, as the initial condition is in Vaghi's model).
* ``MixedEffectsLogVolume``: statsmodels MixedLM, see :mod:`custom.forecast.mixed`.
* ``Oracle``: the true law ``V(t) = K exp(ln(V0/K) e^{-a t})`` from ``true_V0_ml, true_a_per_year, true_K_ml``
  (synthetic cohorts only): the floor set by measurement noise. Not a measured-volume baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import statsmodels.api as sm

from custom.forecast.frames import forecast_frame
from custom.forecast.gompertz_map import GompertzFit, GompertzPrior, fit_gompertz_map
from custom.forecast.mixed import MixedEffectsLogVolume, relative_times
from custom.forecast.task import ForecastTask, check_cohort

#: Broad prior of the first-stage (population-learning) fits: ln a ~ N(ln 0.2, 2^2), g ~ N(0.5, 3^2).
BROAD_PRIOR: dict[str, float] = {"mu_log_a": float(np.log(0.2)), "sd_log_a": 2.0, "mu_gap": 0.5, "sd_gap": 3.0}
#: Floors of the learned prior sds and of the noise sd (a population of identical, noise-free curves).
MIN_SD_LOG_A, MIN_SD_GAP, MIN_NOISE_SD = 0.02, 0.01, 1e-4
#: Noise sd of the first pass, before it is estimated from the data, and how many subjects that pass fits.
FIRST_PASS_NOISE_SD, FIRST_PASS_SUBJECTS = 0.05, 500
#: Population-prior estimators of EBGompertz: "mad" (median / 1.4826 MAD of the first-stage fits) and "em"
#: (Laplace-EM maximum marginal likelihood from there, ``laplace_em_prior``); EM iterations, tolerance, subjects.
PRIOR_METHODS: tuple[str, ...] = ("mom", "mad", "em")
EM_MAX_ITER, EM_TOL, EM_SUBJECTS = 20, 1e-3, 1500


def _subject_arrays(df: pd.DataFrame) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(subject_id, years since first scan, ln V) per subject of a checked cohort frame."""
    t_rel = relative_times(df)
    y = np.log(df["volume_ml"].to_numpy(dtype=float))
    return [(str(s), t_rel[idx], y[idx]) for s, idx in df.groupby("subject_id", sort=False).indices.items()]


def _observed_arrays(task: ForecastTask) -> dict[str, tuple[float, np.ndarray, np.ndarray]]:
    """subject -> (first scan time, years since first scan, ln V) of the task's observed scans."""
    out = {}
    for sid, g in task.observed.groupby("subject_id", sort=False):
        t = g["time_years"].to_numpy(dtype=float)
        out[str(sid)] = (float(t[0]), t - t[0], np.log(g["volume_ml"].to_numpy(dtype=float)))
    return out


def laplace_em_prior(
    subjects: list[tuple[str, np.ndarray, np.ndarray]],
    start: GompertzPrior,
    max_iter: int = EM_MAX_ITER,
    tol: float = EM_TOL,
) -> tuple[GompertzPrior, list[dict[str, float]]]:
    """Gaussian population prior of ``u = (ln a, g)`` by EM with the Laplace approximation of the E-step.

    The hierarchical model is ``u_i ~ N(mu, Sigma)``, ``y_ij = y(t_ij; y0_i, u_i) + e_ij``, ``e ~ N(0, s^2)``
    (``s`` fixed at ``start.noise_sd``, y0 flat). The E-step approximates each subject's posterior of ``u_i`` under
    the current ``(mu, Sigma)`` by ``N(m_i, C_i)``: its MAP fit and the ``(ln a, g)`` block of the Laplace covariance
    (:func:`fit_gompertz_map`). The M-step maximises the expected complete-data log-likelihood,

        mu <- mean_i m_i,    Sigma <- mean_i [(m_i - mu)(m_i - mu)^T + C_i]

    (Dempster, Laird and Rubin, JRSS-B 1977; with the Laplace E-step as in the first-order / Laplace methods of
    nonlinear mixed-effects models, Lindstrom and Bates, Biometrics 1990; Lavielle, Mixed Effects Models for the
    Population Approach, 2014; the population approach to tumour growth of Benzekry et al. 2014 and Vaghi et al.
    2020). Unlike the spread of the point fits, which is ``Sigma`` plus the average estimation noise, the ``C_i``
    term deconvolves: ``Sigma`` is the spread of the true parameters. Iterates from ``start`` until the largest
    change of ``(mu, sds, rho)`` is below ``tol`` or ``max_iter`` passes.

    Returns:
        the prior, and the trace (one dict per iteration: mu_log_a, sd_log_a, mu_gap, sd_gap, corr).
    """
    prior, trace = start, []
    for _ in range(max_iter):
        fits = [fit_gompertz_map(t, y, prior) for _, t, y in subjects]
        m = np.array([[f.log_a, f.gap] for f in fits])
        c = np.array([f.cov[1:3, 1:3] for f in fits])
        mu = m.mean(axis=0)
        d = m - mu
        sigma = (d.T @ d) / len(m) + c.mean(axis=0)
        sd = np.sqrt(np.maximum(np.diag(sigma), [MIN_SD_LOG_A**2, MIN_SD_GAP**2]))
        rho = float(np.clip(sigma[0, 1] / (sd[0] * sd[1]), -0.99, 0.99))
        new = GompertzPrior(
            mu_log_a=float(mu[0]),
            sd_log_a=float(sd[0]),
            mu_gap=float(mu[1]),
            sd_gap=float(sd[1]),
            noise_sd=start.noise_sd,
            corr=rho,
        )
        old = np.array([prior.mu_log_a, prior.sd_log_a, prior.mu_gap, prior.sd_gap, prior.corr])
        cur = np.array([new.mu_log_a, new.sd_log_a, new.mu_gap, new.sd_gap, new.corr])
        trace.append(dict(zip(("mu_log_a", "sd_log_a", "mu_gap", "sd_gap", "corr"), cur.tolist())))
        prior = new
        if np.max(np.abs(cur - old)) < tol:
            break
    return prior, trace


def deconvolved_prior(prior: GompertzPrior, posterior_var: np.ndarray) -> GompertzPrior:
    """Method-of-moments deconvolution of the robust spread: ``sd^2 = sd_fit^2 - v`` per parameter (floored).

    With ``u_hat_i = u_i + eps_i``, ``Var(u_hat) = Var(u) + E Var(eps)``; ``v`` (here the median over training
    subjects of the first-stage Laplace posterior variances of ``ln a`` and ``g``) estimates the second term.
    """
    sd_la = np.sqrt(max(prior.sd_log_a**2 - float(posterior_var[0]), MIN_SD_LOG_A**2))
    sd_g = np.sqrt(max(prior.sd_gap**2 - float(posterior_var[1]), MIN_SD_GAP**2))
    return GompertzPrior(
        mu_log_a=prior.mu_log_a, sd_log_a=float(sd_la), mu_gap=prior.mu_gap, sd_gap=float(sd_g), noise_sd=prior.noise_sd
    )


def _robust_sd(x: np.ndarray) -> float:
    """1.4826 median absolute deviation (a consistent estimate of the sd of a normal)."""
    return float(1.4826 * np.median(np.abs(x - np.median(x))))


class LOCF:
    """Last observation carried forward: ln V(t) = ln V of the last observed scan."""

    name = "LOCF"

    def fit(self, cohort: pd.DataFrame) -> "LOCF":
        return self

    def predict(self, task: ForecastTask) -> pd.DataFrame:
        return forecast_frame(task.targets, self.name, np.log(task.targets["last_obs_volume_ml"].to_numpy()))


class LogLinear:
    """Least-squares line of ln V over time through the observed scans; population slope when k_obs = 1."""

    name = "LogLinear"

    def fit(self, cohort: pd.DataFrame) -> "LogLinear":
        slopes = [np.polyfit(t, y, 1)[0] for _, t, y in _subject_arrays(check_cohort(cohort)) if len(t) >= 2]
        if not slopes:
            raise ValueError("LogLinear needs training subjects with at least 2 scans for its population slope")
        self.population_slope_ = float(np.median(slopes))
        return self

    def predict(self, task: ForecastTask) -> pd.DataFrame:
        obs = _observed_arrays(task)
        tg = task.targets
        pred = np.empty(len(tg))
        slope = np.empty(len(tg))
        for sid, idx in tg.groupby("subject_id", sort=False).indices.items():
            t_first, t, y = obs[sid]
            if len(t) >= 2:
                b1, b0 = np.polyfit(t, y, 1)
            else:
                b1, b0 = self.population_slope_, y[0]
            pred[idx] = b0 + b1 * (tg["time_years"].to_numpy()[idx] - t_first)
            slope[idx] = b1
        out = forecast_frame(tg, self.name, pred)
        out["pred_slope_log_per_year"] = slope
        return out


class EBGompertz:
    """Per-subject Gompertz MAP fit in ln V under an empirical-Bayes population prior (module docstring)."""

    name = "EBGompertz"
    reduced = False

    def __init__(self, noise_sd: float | None = None, prior_method: str = "mom") -> None:
        if prior_method not in PRIOR_METHODS:
            raise ValueError(f"prior_method must be one of {PRIOR_METHODS}, got {prior_method!r}")
        self.noise_sd = noise_sd
        self.prior_method = prior_method

    def _first_stage(self, subjects: list[tuple[str, np.ndarray, np.ndarray]], noise_sd: float) -> list[GompertzFit]:
        prior = GompertzPrior(noise_sd=noise_sd, **BROAD_PRIOR)
        return [fit_gompertz_map(t, y, prior) for _, t, y in subjects]

    def fit(self, cohort: pd.DataFrame) -> "EBGompertz":
        subjects = [s for s in _subject_arrays(check_cohort(cohort, "the training cohort")) if len(s[1]) >= 3]
        if len(subjects) < 2:
            raise ValueError(f"{self.name} needs at least 2 training subjects with 3 or more scans")
        noise = self.noise_sd
        if noise is None:
            # pooled residual sd of a first pass (residual dof n_i - 3 per subject), then refit with it
            first = subjects[:FIRST_PASS_SUBJECTS]
            noise = self._pooled_noise(first, self._first_stage(first, FIRST_PASS_NOISE_SD))
        fits = self._first_stage(subjects, noise)
        if self.noise_sd is None:
            noise = self._pooled_noise(subjects, fits)
        la = np.array([f.log_a for f in fits])
        gap = np.array([f.gap for f in fits])
        self.first_stage_ = pd.DataFrame({"subject_id": [s[0] for s in subjects], "log_a": la, "gap": gap})
        self.prior_ = self._population_prior(la, gap, noise)
        if self.prior_method == "mom" and not self.reduced:
            post_var = np.array([np.diag(f.cov)[1:3] for f in fits])
            self.prior_ = deconvolved_prior(self.prior_, np.median(post_var, axis=0))
        if self.prior_method == "em" and not self.reduced:
            self.prior_, self.em_trace_ = laplace_em_prior(subjects[:EM_SUBJECTS], self.prior_)
        return self

    @staticmethod
    def _pooled_noise(subjects: list[tuple[str, np.ndarray, np.ndarray]], fits: list[GompertzFit]) -> float:
        ss = sum(float(np.sum((f.log_volume(t) - y) ** 2)) for (_, t, y), f in zip(subjects, fits) if len(t) > 3)
        dof = sum(len(t) - 3 for _, t, _ in subjects if len(t) > 3)
        if dof == 0:
            raise ValueError("the noise sd needs training subjects with 4 or more scans (or pass noise_sd=...)")
        return max(float(np.sqrt(ss / dof)), MIN_NOISE_SD)

    def _population_prior(self, la: np.ndarray, gap: np.ndarray, noise: float) -> GompertzPrior:
        return GompertzPrior(
            mu_log_a=float(np.median(la)),
            sd_log_a=max(_robust_sd(la), MIN_SD_LOG_A),
            mu_gap=float(np.median(gap)),
            sd_gap=max(_robust_sd(gap), MIN_SD_GAP),
            noise_sd=noise,
        )

    def predict(self, task: ForecastTask) -> pd.DataFrame:
        obs = _observed_arrays(task)
        tg = task.targets
        times = tg["time_years"].to_numpy()
        pred, sd, rate = np.empty(len(tg)), np.empty(len(tg)), np.empty(len(tg))
        for sid, idx in tg.groupby("subject_id", sort=False).indices.items():
            t_first, t, y = obs[sid]
            fit = fit_gompertz_map(t, y, self.prior_)
            pred[idx] = fit.log_volume(times[idx] - t_first)
            sd[idx] = fit.predictive_sd(times[idx] - t_first)
            rate[idx] = fit.a
        return forecast_frame(tg, self.name, pred, sd_log=sd, a_per_year=rate)


class ReducedGompertz(EBGompertz):
    """Reduced Gompertz (Vaghi et al. 2020): population coupling ``g = c0 + c1 ln a``, individual ``a`` (and y0)."""

    name = "ReducedGompertz"
    reduced = True

    def _population_prior(self, la: np.ndarray, gap: np.ndarray, noise: float) -> GompertzPrior:
        rlm = sm.RLM(gap, sm.add_constant(la), M=sm.robust.norms.HuberT()).fit()
        c0, c1 = (float(v) for v in rlm.params)
        return GompertzPrior(
            mu_log_a=float(np.median(la)),
            sd_log_a=max(_robust_sd(la), MIN_SD_LOG_A),
            mu_gap=float("nan"),
            sd_gap=float("nan"),
            noise_sd=noise,
            coupling=(c0, c1),
        )


class Oracle:
    """The subject's true Gompertz law (synthetic cohorts): ``ln V(t) = ln K + ln(V0/K) e^{-a t}``, t on the
    cohort's time axis (V0 is the law's volume at t = 0). Reads ``true_V0_ml, true_a_per_year, true_K_ml`` from the
    task's truth frame."""

    name = "Oracle"

    def fit(self, cohort: pd.DataFrame) -> "Oracle":
        return self

    def predict(self, task: ForecastTask) -> pd.DataFrame:
        tr = task.truth
        cols = ["true_V0_ml", "true_a_per_year", "true_K_ml"]
        if any(c not in tr or not np.all(np.isfinite(tr[c].to_numpy(dtype=float))) for c in cols):
            raise ValueError(f"the Oracle needs finite {cols} for every target subject (a synthetic cohort)")
        v0, a, k = (tr[c].to_numpy(dtype=float) for c in cols)
        t = task.targets["time_years"].to_numpy(dtype=float)
        pred = np.log(k) + np.log(v0 / k) * np.exp(-a * t)
        return forecast_frame(task.targets, self.name, pred, a_per_year=a)


#: Measured-volume baselines by name (the Oracle is not one: it knows the truth).
MEASURED_BASELINES: dict[str, type] = {
    "LOCF": LOCF,
    "LogLinear": LogLinear,
    "EBGompertz": EBGompertz,
    "ReducedGompertz": ReducedGompertz,
    "MixedEffectsLogVolume": MixedEffectsLogVolume,
}
