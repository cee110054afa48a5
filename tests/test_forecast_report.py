"""Scoring: bootstrap against a known answer, Brier and strata by hand, paired differences, the CLI end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from forecast_law import law_cohort
from scipy.stats import spearmanr

from custom.forecast.bootstrap import boot_mean, boot_means, boot_median, boot_spearman, percentile_ci, resample_counts
from custom.forecast.report import score_forecasts, score_rows
from custom.forecast.strata import class_stratum, fastest_subjects, horizon_bin


def test_bootstrap_mean_ci_known_answer():
    # one row per subject, x ~ N(0, 1), n = 400: the 95 % CI of the mean is about +-1.96 / sqrt(400) = +-0.098
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, 400)
    counts = resample_counts(400, 2000, rng)
    lo, hi = percentile_ci(boot_mean(x, np.arange(400), counts))
    assert (hi - lo) / 2 == pytest.approx(1.96 * x.std(ddof=1) / 20, rel=0.1)
    assert lo < x.mean() < hi


def test_bootstrap_weights_by_hand():
    x = np.array([1.0, 2.0, 10.0, 4.0])
    subject = np.array([0, 0, 1, 2])
    counts = np.array([[2, 0, 1], [0, 3, 0]])
    # draw 1: subject 0 twice (rows 1, 2), subject 2 once (4): mean (2 * 3 + 4) / 5 = 2, median of 1,1,2,2,4 = 2
    assert np.allclose(boot_mean(x, subject, counts), [2.0, 10.0])
    assert np.allclose(boot_median(x, subject, counts), [2.0, 10.0])


def test_vectorised_bootstrap_equals_the_explicit_loop():
    # the explicit bootstrap: for each resample, repeat every drawn subject's rows and compute the statistic
    rng = np.random.default_rng(4)
    n_subj = 30
    subject = np.repeat(np.arange(n_subj), rng.integers(1, 5, n_subj))
    x = np.round(rng.normal(0, 1, (len(subject), 2)), 1)  # rounded: ties, as in coverage and Brier rows
    a, b = np.round(rng.normal(0, 1, n_subj), 1), rng.normal(0, 1, n_subj)
    b[:3] = b[3]  # ties in y too
    counts = resample_counts(n_subj, 300, np.random.default_rng(5))
    counts[0] = 0
    counts[0, 7] = n_subj  # a resample of one subject: its Spearman is undefined
    means, medians, rhos = [], [], []
    for c in counts:
        rows = np.concatenate([np.flatnonzero(subject == s) for s in np.repeat(np.arange(n_subj), c)])
        means.append(x[rows].mean(axis=0))
        xs = np.sort(x[rows, 0])
        medians.append(xs[(len(xs) - 1) // 2])  # lower median: the smallest value with half the weight below
        subj = np.repeat(np.arange(n_subj), c)
        constant = np.ptp(a[subj]) == 0 or np.ptp(b[subj]) == 0
        rhos.append(np.nan if constant else spearmanr(a[subj], b[subj]).statistic)
    assert np.allclose(boot_means(x, subject, counts), np.array(means), rtol=1e-12)
    assert np.allclose(boot_mean(x[:, 1], subject, counts.astype(float)), np.array(means)[:, 1], rtol=1e-12)
    assert np.array_equal(boot_median(x[:, 0], subject, counts), np.array(medians))
    assert np.allclose(boot_spearman(a, b, counts), np.array(rhos), rtol=1e-10, equal_nan=True)
    assert np.isnan(boot_spearman(a, b, counts)[0])


def test_strata_by_hand():
    assert class_stratum(pd.Series(["grower", "plateau", "shrinker", "atypical"])).tolist() == [
        "growers",
        "stable",
        "shrinkers",
        "atypical",
    ]
    rate = pd.Series(
        [0.1, 0.5, 0.3, 0.2, 0.9],
        index=pd.MultiIndex.from_tuples([(f"S{i}", 2) for i in range(5)], names=["subject_id", "k_obs"]),
    )
    assert fastest_subjects(rate, 0.2) == {("S4", 2)}
    assert fastest_subjects(rate, 0.4) == {("S4", 2), ("S1", 2)}
    assert horizon_bin(pd.Series([0.5, 1.0, 1.5, 2.0, 3.0])).tolist() == ["<=1y", "<=1y", "1-2y", "1-2y", ">2y"]


def tiny_forecasts():
    truth = pd.DataFrame(
        dict(subject_id=["A", "A", "B"], k_obs=2, time_years=[2.0, 3.0, 2.0], volume_ml=[10.0, 12.0, 5.0],
             true_volume_ml=np.nan, growth_class=["grower", "grower", "plateau"], true_a_per_year=np.nan,
             last_obs_volume_ml=[8.0, 8.0, 5.0], last_obs_true_volume_ml=np.nan)
    )  # fmt: skip
    base = truth[["subject_id", "k_obs", "time_years"]].assign(t_last_obs=1.0, last_obs_volume_ml=[8.0, 8.0, 5.0])
    base["horizon_years"] = base["time_years"] - 1.0
    good = base.assign(pred_volume_ml=[11.0, 12.0, 4.0], p_growth15=[0.9, 0.6, 0.2], p_prog40=[0.1, 0.7, 0.0])
    bad = base.assign(pred_volume_ml=[8.0, 8.0, 5.0])
    return truth, {"LOCF": bad, "EBGompertz": good}


def test_brier_and_errors_by_hand():
    truth, fc = tiny_forecasts()
    rows = score_rows(fc["EBGompertz"], truth, "EBGompertz")
    assert np.allclose(rows["rel_err"], [0.1, 0.0, 0.2])
    # events: 10 > 9.2 yes, 12 > 9.2 yes, 5 > 5.75 no; +40 %: 10 >= 11.2 no, 12 >= 11.2 yes, no
    assert np.allclose(rows["brier15"], [(0.9 - 1) ** 2, (0.6 - 1) ** 2, 0.2**2])
    assert np.allclose(rows["brier40"], [0.1**2, 0.3**2, 0.0])
    s = score_forecasts(fc, truth, n_boot=50)
    m = s["metrics"].set_index(["method", "stratum", "horizon", "metric"])["value"]
    assert m["EBGompertz", "all", "all", "mean_rel_err"] == pytest.approx(0.1)
    assert m["LOCF", "all", "all", "mean_rel_err"] == pytest.approx((0.2 + 4 / 12 + 0) / 3)
    assert m["EBGompertz", "all", "all", "brier_growth15"] == pytest.approx((0.01 + 0.16 + 0.04) / 3)
    assert m["EBGompertz", "all", "all", "brier_base_growth15"] == pytest.approx(2 / 3 * 1 / 3)
    assert m["EBGompertz", "growers", "last", "mean_rel_err"] == pytest.approx(0.0)
    p = s["paired"].set_index(["method", "stratum", "horizon"])
    assert p.loc[("LOCF", "all", "all"), "reference"] == "EBGompertz"
    assert p.loc[("LOCF", "all", "all"), "diff"] == pytest.approx((0.2 + 4 / 12) / 3 - 0.1)


def test_cli_end_to_end(tmp_path):
    from custom.__main__ import main

    law_cohort(60, seed=3, mode="fast", timepoints=5).to_csv(tmp_path / "cohort.csv", index=False)
    rc = main(["forecast-baselines", "--cohort", str(tmp_path / "cohort.csv"), "--out", str(tmp_path / "out"),
               "--n_boot", "20", "--methods", "LOCF,EBGompertz"])  # fmt: skip
    assert rc == 0
    report = (tmp_path / "out" / "report.md").read_text()
    assert "| EBGompertz |" in report and "Oracle" in report
    for name in ("metrics.csv", "paired.csv", "forecasts.csv", "error_by_horizon.png", "reliability.png"):
        assert (tmp_path / "out" / name).is_file()
    f = pd.read_csv(tmp_path / "out" / "forecasts.csv")
    assert {"lo80_ml", "hi90_ml", "p_growth15", "p_prog40"} <= set(f.columns)
    assert main(["forecast-baselines", "--cohort", str(tmp_path / "missing.csv"), "--out", str(tmp_path / "x")]) == 2


def test_parse_edges():
    from custom.forecast.cli import parse_edges

    assert parse_edges("2,1,3.5") == (1.0, 2.0, 3.5)
    assert parse_edges((1, 2)) == (1.0, 2.0) and parse_edges(4) == (4.0,)
    assert parse_edges("none") is None and parse_edges(None) is None
    with pytest.raises(ValueError, match="horizon_edges"):
        parse_edges("1,x")
