"""Split-conformal intervals and growth probabilities against hand-computed quantiles and a Gaussian problem."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

from custom.forecast.conformal import ConformalVolumeIntervals, horizon_bin_index, merge_horizon_bins, reliability_table


def frames(log_pred: np.ndarray, log_true: np.ndarray, k: int = 2, horizon: float = 1.0, v_last: float = 1.0):
    n = len(log_pred)
    sid = [f"S{i}" for i in range(n)]
    forecast = pd.DataFrame(
        dict(subject_id=sid, k_obs=k, t_last_obs=1.0, time_years=1.0 + horizon, horizon_years=horizon,
             pred_volume_ml=np.exp(log_pred), last_obs_volume_ml=v_last)
    )  # fmt: skip
    truth = pd.DataFrame(dict(subject_id=sid, k_obs=k, time_years=1.0 + horizon, volume_ml=np.exp(log_true)))
    return forecast, truth


def test_finite_sample_quantile_by_hand():
    # residuals 1..19 (n = 19): the level-c score is the ceil((n + 1) c)-th smallest: 18 at 90 %, 16 at 80 %
    resid = np.arange(1, 20, dtype=float)
    f, t = frames(np.zeros(19), resid * np.where(np.arange(19) % 2, 1, -1))
    cal = ConformalVolumeIntervals(normalise="none").fit(f, t)
    assert cal.quantile(0.9, 2) == 18.0
    assert cal.quantile(0.8, 2) == 16.0
    new, _ = frames(np.array([0.5]), np.array([0.0]))
    out = cal.transform(new)
    assert np.log(out["lo90_ml"].iloc[0]) == pytest.approx(0.5 - 18.0)
    assert np.log(out["hi80_ml"].iloc[0]) == pytest.approx(0.5 + 16.0)
    # 19 scores cannot give a 96 % interval (ceil(20 * 0.96) = 20 > 19): infinite
    assert ConformalVolumeIntervals(levels=(0.96,), normalise="none").fit(f, t).quantile(0.96, 2) == np.inf


def test_gaussian_coverage_over_repetitions():
    rng = np.random.default_rng(0)
    cover = {0.8: [], 0.9: []}
    for _ in range(200):
        f, t = frames(np.zeros(100), rng.normal(0, 0.2, 100))
        cal = ConformalVolumeIntervals(normalise="none").fit(f, t)
        tf, tt = frames(np.zeros(200), rng.normal(0, 0.2, 200))
        out = cal.transform(tf)
        v = tt["volume_ml"].to_numpy()
        for lv in cover:
            name = f"{round(100 * lv)}"
            cover[lv].append(np.mean((out[f"lo{name}_ml"] <= v) & (v <= out[f"hi{name}_ml"])))
    # split conformal: E[coverage] lies in [c, c + 1/(n+1)]; 200 x 200 test points: se about 0.002
    for lv, c in cover.items():
        assert lv - 0.01 <= np.mean(c) <= lv + 1 / 101 + 0.01


def test_normalised_scores_use_horizon_and_k_bins():
    rng = np.random.default_rng(1)
    h = rng.uniform(0.2, 4.0, 4000)
    f, t = frames(np.zeros(4000), rng.normal(0, 0.1, 4000) * np.sqrt(0.25 + h**2))
    f["horizon_years"] = h
    cal = ConformalVolumeIntervals(normalise="horizon", horizon_edges=None).fit(f, t)
    # scores are standard normal: the 90 % quantile of |N(0,1)| is 1.645 (times 0.1)
    assert cal.quantile(0.9, 2) == pytest.approx(0.1 * norm.ppf(0.95), rel=0.05)
    with pytest.raises(ValueError, match="k_obs=\\[1\\]"):
        cal.transform(frames(np.zeros(1), np.zeros(1), k=1)[0])


def test_growth_probabilities_match_the_gaussian():
    rng = np.random.default_rng(2)
    f, t = frames(np.zeros(5000), rng.normal(0, 0.2, 5000))
    cal = ConformalVolumeIntervals(normalise="none").fit(f, t)
    pred = np.array([0.0, 0.1, 0.3])
    out = cal.transform(frames(pred, pred, v_last=1.0)[0])
    assert np.allclose(out["p_growth15"], 1 - norm.cdf((np.log(1.15) - pred) / 0.2), atol=0.02)
    assert np.allclose(out["p_prog40"], 1 - norm.cdf((np.log(1.40) - pred) / 0.2), atol=0.02)


def test_reliability_table_by_hand():
    t = reliability_table(np.array([0.05, 0.08, 0.55, 0.95]), np.array([0, 1, 1, 1]), n_bins=10)
    assert t["bin"].tolist() == [0, 5, 9]
    assert t["observed"].tolist() == [0.5, 1.0, 1.0]
    assert t["p_mean"].iloc[0] == pytest.approx(0.065)


def test_merge_horizon_bins_by_hand():
    # bins (-inf,1] (1,2] (2,3] (3,inf) hold 5, 1, 0, 4 horizons
    h = np.array([0.5] * 5 + [1.5] + [3.5] * 4)
    assert merge_horizon_bins(h, (1, 2, 3), 1) == (1.0, 3.0)  # the empty (2,3] joins its smaller neighbour (1,2]
    assert merge_horizon_bins(h, (1, 2, 3), 4) == (1.0,)  # then (1,3] holds 1 < 4 and joins (3,inf): 5 and 5
    assert merge_horizon_bins(h, (1, 2, 3), 5) == (1.0,)
    assert merge_horizon_bins(h, (1, 2, 3), 6) == ()
    assert horizon_bin_index(np.array([1.0, 1.01, 9.0]), (1.0, 2.0)).tolist() == [0, 1, 2]


def test_mondrian_horizon_bins_fix_marginal_coverage_per_bin():
    # ln V - ln V_hat ~ N(0, s_b^2) with an sd that grows with the horizon bin b; unnormalised scores. Pooled over
    # the bins, the level-c quantile q solves mean_b (2 Phi(q / s_b) - 1) = c, so bin b is covered 2 Phi(q/s_b) - 1:
    # above c near, below c far. Per-bin (Mondrian) quantiles cover every bin at c.
    from scipy.optimize import brentq

    rng = np.random.default_rng(3)
    horizons, sds = np.array([0.5, 1.5, 2.5, 4.5]), np.array([0.05, 0.10, 0.15, 0.30])

    def draw(n_per_bin: int):
        h = np.repeat(horizons, n_per_bin)
        f, t = frames(np.zeros(h.size), rng.normal(0, 1, h.size) * np.repeat(sds, n_per_bin))
        f["horizon_years"] = h
        return f, t

    cal_f, cal_t = draw(3000)
    test_f, test_t = draw(20000)
    v = test_t["volume_ml"].to_numpy()
    h = test_f["horizon_years"].to_numpy()
    marginal = ConformalVolumeIntervals(normalise="none", horizon_edges=None).fit(cal_f, cal_t).transform(test_f)
    mondrian = ConformalVolumeIntervals(normalise="none", horizon_edges=(1, 2, 3)).fit(cal_f, cal_t).transform(test_f)
    for lv in (0.8, 0.9):
        name = f"{round(100 * lv)}"
        q = brentq(lambda x: np.mean(2 * norm.cdf(x / sds) - 1) - lv, 1e-6, 10)
        expected = 2 * norm.cdf(q / sds) - 1
        assert expected[0] > lv + 0.09 and expected[-1] < lv - 0.15  # the marginal miss is large at both ends
        for b, hb in enumerate(horizons):
            at = h == hb
            cov_m = np.mean((marginal[f"lo{name}_ml"][at] <= v[at]) & (v[at] <= marginal[f"hi{name}_ml"][at]))
            cov_c = np.mean((mondrian[f"lo{name}_ml"][at] <= v[at]) & (v[at] <= mondrian[f"hi{name}_ml"][at]))
            assert cov_m == pytest.approx(expected[b], abs=0.02)
            assert cov_c == pytest.approx(lv, abs=0.02)
    # growth probabilities come from the same per-bin predictive system: P(ln V > ln 1.15) per bin's Gaussian
    p = mondrian.groupby("horizon_years")["p_growth15"].first().to_numpy()
    assert np.allclose(p, 1 - norm.cdf(np.log(1.15) / sds), atol=0.02)
