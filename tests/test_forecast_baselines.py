"""Measured-volume baselines against exact answers on noise-free Gompertz curves and against statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.formula.api as smf
from forecast_law import PROTOCOL_TIMES

from custom.forecast.mixed import MixedEffectsLogVolume, blup
from custom.forecast.task import make_task
from custom.forecast.volumetry import LOCF, MEASURED_BASELINES, EBGompertz, LogLinear, Oracle, ReducedGompertz
from custom.synth.growth import gompertz_volume


def curves(params: list[tuple[float, float, float]], times=PROTOCOL_TIMES, prefix: str = "S") -> pd.DataFrame:
    """Noise-free cohort rows: (V0, a, K) per subject at ``times``."""
    rows = []
    for i, (v0, a, k) in enumerate(params):
        for j, t in enumerate(times):
            v = float(gompertz_volume(t, v0, a, k))
            rows.append(dict(subject_id=f"{prefix}{i}", timepoint=j, time_years=t, volume_ml=v, target_volume_ml=v,
                             true_V0_ml=v0, true_a_per_year=a, true_K_ml=k, growth_class="grower"))  # fmt: skip
    return pd.DataFrame(rows)


def population(n: int = 40, seed: int = 0) -> list[tuple[float, float, float]]:
    rng = np.random.default_rng(seed)
    v0 = np.exp(rng.normal(np.log(5), 0.5, n))
    return [(float(x), float(a), float(x * r)) for x, a, r in zip(v0, rng.uniform(0.3, 0.8, n), rng.uniform(2, 6, n))]


def test_make_task_frames_and_bad_input():
    c = curves([(2.0, 0.5, 10.0), (3.0, 0.4, 9.0)], times=(0.0, 1.0, 2.5))
    task = make_task(c, ["S0", "S1"], 2)
    assert task.targets["time_years"].tolist() == [2.5, 2.5]
    assert task.targets["horizon_years"].tolist() == [1.5, 1.5]
    assert task.targets["last_obs_volume_ml"].iloc[0] == pytest.approx(float(gompertz_volume(1.0, 2.0, 0.5, 10.0)))
    assert task.observed.groupby("subject_id").size().tolist() == [2, 2]
    assert make_task(c, ["S0"], 3).no_target_subjects == ["S0"]
    with pytest.raises(ValueError, match="fewer than k_obs=4"):
        make_task(c, ["S0"], 4)
    with pytest.raises(ValueError, match="not in the cohort"):
        make_task(c, ["nobody"], 1)
    bad = c.copy()
    bad.loc[0, "volume_ml"] = 0.0
    with pytest.raises(ValueError, match="zero or negative volume_ml"):
        make_task(bad, ["S0"], 1)


def test_locf_and_loglinear_exact():
    rows = []
    for i, r in enumerate((0.1, 0.2, 0.35)):  # ln V = ln 2 + r t: per-subject slopes 0.1, 0.2, 0.35 -> median 0.2
        rows += [dict(subject_id=f"T{i}", time_years=t, volume_ml=2.0 * np.exp(r * t)) for t in (0.0, 1.0, 3.0)]
    train = pd.DataFrame(rows)
    test = pd.DataFrame(
        [dict(subject_id="X", time_years=t, volume_ml=v) for t, v in ((0.0, 4.0), (0.5, 5.0), (2.0, 7.0), (3.0, 6.0))]
    )
    locf = LOCF().fit(train).predict(make_task(test, ["X"], 2))
    assert np.allclose(locf["pred_volume_ml"], [5.0, 5.0])
    ll = LogLinear().fit(train)
    assert ll.population_slope_ == pytest.approx(0.2)
    f2 = ll.predict(make_task(test, ["X"], 2))
    slope = (np.log(5.0) - np.log(4.0)) / 0.5
    assert np.allclose(np.log(f2["pred_volume_ml"]), np.log(4.0) + slope * np.array([2.0, 3.0]))
    f1 = ll.predict(make_task(test, ["X"], 1))
    assert np.allclose(np.log(f1["pred_volume_ml"]), np.log(4.0) + 0.2 * np.array([0.5, 2.0, 3.0]))


def test_eb_gompertz_recovers_a_and_k_noise_free():
    train = curves(population())
    m = EBGompertz().fit(train)
    assert m.prior_.noise_sd < 1e-3  # noise-free curves: the estimated noise sd hits its floor
    test = curves([(4.0, 0.6, 15.0)], prefix="X")
    task = make_task(test, ["X0"], 4)
    f = m.predict(task)
    assert f["pred_a_per_year"].iloc[0] == pytest.approx(0.6, rel=1e-3)
    assert np.allclose(f["pred_volume_ml"], task.truth["true_volume_ml"], rtol=1e-3)
    assert np.all(f["pred_sd_log"] > 0)


def test_eb_gompertz_prior_of_an_identical_population_forecasts_from_one_scan():
    v0s = [2.0, 3.0, 5.0, 8.0, 13.0]
    m = EBGompertz().fit(curves([(v, 0.5, 4.0 * v) for v in v0s]))
    assert np.exp(m.prior_.mu_log_a) == pytest.approx(0.5, rel=1e-4)
    assert m.prior_.mu_gap == pytest.approx(np.log(4.0), rel=1e-4)
    test = curves([(6.0, 0.5, 24.0)], prefix="X")
    f = m.predict(make_task(test, ["X0"], 1))
    expected = gompertz_volume(np.asarray(PROTOCOL_TIMES[1:]), 6.0, 0.5, 24.0)
    assert np.allclose(f["pred_volume_ml"], expected, rtol=1e-3)


def test_reduced_gompertz_learns_coupling_and_recovers_a():
    rng = np.random.default_rng(1)
    a = rng.uniform(0.3, 0.9, 30)
    gap = 0.5 - 0.8 * np.log(a)  # population coupling g = c0 + c1 ln a
    m = ReducedGompertz().fit(curves([(5.0, float(x), float(5.0 * np.exp(g))) for x, g in zip(a, gap)]))
    assert m.prior_.coupling == pytest.approx((0.5, -0.8), abs=1e-3)
    a_test = 0.45
    k_test = 3.0 * np.exp(0.5 - 0.8 * np.log(a_test))
    test = curves([(3.0, a_test, k_test)], prefix="X")
    f = m.predict(make_task(test, ["X0"], 3))
    assert f["pred_a_per_year"].iloc[0] == pytest.approx(a_test, rel=1e-3)
    assert np.allclose(f["pred_volume_ml"], make_task(test, ["X0"], 3).truth["true_volume_ml"], rtol=1e-3)


def test_oracle_is_the_true_law():
    test = curves([(4.0, 0.6, 15.0)], prefix="X")
    f = Oracle().predict(make_task(test, ["X0"], 2))
    assert np.allclose(f["pred_volume_ml"], gompertz_volume(np.asarray(PROTOCOL_TIMES[2:]), 4.0, 0.6, 15.0))


def noisy_linear(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        b0, b1 = rng.normal(1.5, 0.5), rng.normal(0.1, 0.05)
        for t in (0.0, 0.7, 1.5, 3.0):
            rows.append(
                dict(subject_id=f"M{i:03d}", time_years=t, volume_ml=float(np.exp(b0 + b1 * t + rng.normal(0, 0.05))))
            )
    return pd.DataFrame(rows)


def test_mixed_model_matches_statsmodels_and_its_blups():
    train = noisy_linear(60, 0)
    m = MixedEffectsLogVolume().fit(train)
    data = train.assign(y=np.log(train["volume_ml"]), t=train["time_years"])
    direct = smf.mixedlm("y ~ t", data, groups=data["subject_id"], re_formula="~t").fit(reml=True, method=["lbfgs"])
    assert np.allclose(m.beta_, direct.fe_params.to_numpy(), atol=1e-4)
    assert np.allclose(m.cov_re_, np.asarray(direct.cov_re), atol=1e-4)
    # the BLUP of a fitted subject from its own scans is statsmodels' random_effects of that subject
    g = data[data["subject_id"] == "M007"]
    z = np.stack([np.ones(len(g)), g["t"].to_numpy()], axis=1)
    b, _ = blup(z, g["y"].to_numpy() - z @ m.beta_, m.cov_re_, m.scale_)
    assert np.allclose(b, m.result_.random_effects["M007"].to_numpy(), atol=1e-6)


def test_blup_random_intercept_closed_form():
    # random intercept only: b_hat = n tau^2 / (n tau^2 + s^2) * mean(resid), Var = tau^2 s^2 / (n tau^2 + s^2)
    resid = np.array([0.3, 0.1, 0.5])
    tau2, s2 = 0.4, 0.1
    b, v = blup(np.ones((3, 1)), resid, np.array([[tau2]]), s2)
    assert b[0] == pytest.approx(3 * tau2 / (3 * tau2 + s2) * resid.mean())
    assert v[0, 0] == pytest.approx(tau2 * s2 / (3 * tau2 + s2))


def test_registry_names():
    assert set(MEASURED_BASELINES) == {"LOCF", "LogLinear", "EBGompertz", "ReducedGompertz", "MixedEffectsLogVolume"}


def test_laplace_em_recovers_a_gaussian_population():
    # (ln a, g) ~ N(mu, Sigma) with sds 0.3, 0.4 and correlation 0.5; 5 scans over 4 years, 5 % noise
    rng = np.random.default_rng(7)
    n, mu, sd, rho = 200, np.array([np.log(0.5), 1.5]), np.array([0.3, 0.4]), 0.5
    cov = np.outer(sd, sd) * np.array([[1.0, rho], [rho, 1.0]])
    u = rng.multivariate_normal(mu, cov, n)
    v0 = np.exp(rng.normal(np.log(5), 0.5, n))
    rows = []
    for i in range(n):
        for t in (0.0, 1.0, 2.0, 3.0, 4.0):
            v = float(gompertz_volume(t, v0[i], np.exp(u[i, 0]), v0[i] * np.exp(u[i, 1])))
            rows.append(dict(subject_id=f"P{i:03d}", time_years=t, volume_ml=v * np.exp(rng.normal(0, 0.05))))
    m = EBGompertz(noise_sd=0.05, prior_method="em").fit(pd.DataFrame(rows))
    p = m.prior_
    assert len(m.em_trace_) < 20  # converged
    # the sample of the 200 drawn u's is the answer the estimator can reach
    s_mu, s_sd, s_rho = u.mean(axis=0), u.std(axis=0), np.corrcoef(u.T)[0, 1]
    # the Laplace E-step is first order in a nonlinear model: its mean of ln a is biased by about 0.2 sd here
    assert p.mu_log_a == pytest.approx(s_mu[0], abs=0.08) and p.mu_gap == pytest.approx(s_mu[1], abs=0.05)
    assert p.sd_log_a == pytest.approx(s_sd[0], rel=0.2) and p.sd_gap == pytest.approx(s_sd[1], rel=0.15)
    assert p.corr == pytest.approx(s_rho, abs=0.15)
    # the correlation is the EM prior's alone; the moment deconvolution only narrows the point fits' spread
    mom = EBGompertz(noise_sd=0.05, prior_method="mom").fit(pd.DataFrame(rows)).prior_
    mad = EBGompertz(noise_sd=0.05, prior_method="mad").fit(pd.DataFrame(rows)).prior_
    assert mad.corr == 0.0 and mom.sd_log_a < mad.sd_log_a and mom.sd_gap <= mad.sd_gap
