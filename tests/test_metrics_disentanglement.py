"""Probes, DCI, SAP and MIG on constructed codes whose disentanglement is known by construction.

Codes (N = 200 scans of 100 subjects, K = 4 independent factors, Z = 8 latents):
- perfect: latent k = factor k + tiny noise, plus 4 pure-noise latents;
- rotated: the perfect code times a random rotation (same information, every factor spread out);
- random: latents independent of the factors.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from custom.metrics import (
    dci,
    dci_from_importance,
    linear_probe_r2,
    mig,
    mig_with_references,
    quantile_bins,
    sap,
    single_latent_r2,
)
from custom.metrics.probes import PROBE_ALPHAS, ridge_path_predict

N, K, Z = 200, 4, 8
NAMES = ["log_volume", "centroid_x", "sphericity", "extent_z"]


@pytest.fixture(scope="module")
def codes() -> dict:
    rng = np.random.default_rng(0)
    factors = rng.standard_normal((N, K))
    perfect = np.c_[factors + 0.01 * rng.standard_normal((N, K)), rng.standard_normal((N, Z - K))]
    return {
        "factors": factors,
        "groups": np.repeat([f"BraTS-MEN-{i:05d}" for i in range(N // 2)], 2),
        "perfect": perfect,
        "rotated": perfect @ special_ortho_group.rvs(Z, random_state=1),
        "random": rng.standard_normal((N, Z)),
    }


# ---------------------------------------------------------------- probes
def test_probe_linear_code_is_decodable(codes):
    rng = np.random.default_rng(5)
    mixing = rng.standard_normal((Z, K))
    out = linear_probe_r2(codes["rotated"], codes["rotated"] @ mixing, NAMES, codes["groups"])
    assert out["n_splits"] == 5
    assert min(out["r2"].values()) > 0.99 and out["mean_r2"] > 0.99
    json.dumps(out)


def test_probe_random_wide_code_does_not_overfit():
    rng = np.random.default_rng(6)
    mu, factors = rng.standard_normal((60, 64)), rng.standard_normal((60, 3))
    out = linear_probe_r2(mu, factors, NAMES[:3], groups=np.repeat(np.arange(30), 2))
    assert out["mean_r2"] < 0.1 and max(out["r2"].values()) < 0.1


def test_nested_probe_recovers_the_noise_limited_r2_where_a_fixed_penalty_overfits():
    # 30 subjects x 4 scans, 128 latents: z0 carries the factor, y = z0 + N(0, 0.5^2), so the best
    # possible R^2 is Var(z0) / (Var(z0) + 0.25) = 1 / 1.25 = 0.8; the other 127 latents are noise
    rng = np.random.default_rng(7)
    mu = rng.standard_normal((120, 128))
    y = mu[:, :1] + 0.5 * rng.standard_normal((120, 1))
    groups = np.repeat(np.arange(30), 4)
    fixed = linear_probe_r2(mu, y, ["log_volume"], groups=groups)["r2"]["log_volume"]
    nested = linear_probe_r2(mu, y, ["log_volume"], groups=groups, alpha=PROBE_ALPHAS)["r2"]["log_volume"]
    assert fixed < 0  # alpha = 1 on 96 training rows of 128 standardised latents: worse than the mean
    # a ridge probe (not sparse) with fewer rows than latents recovers part of it, never more than the bound
    assert 0.2 < nested <= 0.8
    # one penalty in the list gives the fixed-penalty probe exactly
    one = linear_probe_r2(mu, y, ["log_volume"], groups=groups, alpha=[1.0])["r2"]["log_volume"]
    assert one == pytest.approx(fixed)


def test_ridge_path_matches_scikit_learn_for_every_penalty():
    from sklearn.linear_model import Ridge
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(8)
    x, y, x_eval = rng.standard_normal((50, 64)), rng.standard_normal(50), rng.standard_normal((7, 64))
    x[:, 3] = 2.0  # a constant latent (zero scale)
    alphas = np.array([0.01, 1.0, 100.0])
    pred = ridge_path_predict(x, y, x_eval, alphas)
    for a, p in zip(alphas, pred):
        ref = make_pipeline(StandardScaler(), Ridge(alpha=float(a))).fit(x, y).predict(x_eval)
        np.testing.assert_allclose(p, ref, atol=1e-10)


def test_probe_drops_nan_rows_and_reduces_folds(codes):
    factors = codes["factors"].copy()
    factors[:10, 0] = np.nan
    out = linear_probe_r2(codes["perfect"], factors, NAMES, codes["groups"])
    assert out["n_samples"]["log_volume"] == N - 10 and out["n_samples"]["centroid_x"] == N
    assert out["r2"]["log_volume"] > 0.99
    few = linear_probe_r2(codes["perfect"][:6], codes["factors"][:6], NAMES, groups=[0, 0, 1, 1, 2, 2], n_splits=5)
    assert few["n_splits"] == 3


def test_single_latent_r2_is_squared_correlation(codes):
    y = codes["factors"][:, 0]
    expected = [np.corrcoef(codes["rotated"][:, i], y)[0, 1] ** 2 for i in range(Z)]
    np.testing.assert_allclose(single_latent_r2(codes["rotated"], y), expected, rtol=1e-10)
    r2 = single_latent_r2(codes["perfect"], y)
    assert int(np.argmax(r2)) == 0 and r2[0] > 0.99
    assert single_latent_r2(np.c_[np.ones(N), y], y)[0] == 0.0


# ---------------------------------------------------------------- DCI
def test_dci_from_importance_hand_cases():
    d, c, _, _ = dci_from_importance(np.eye(3))
    assert (d, c) == pytest.approx((1.0, 1.0))
    d, c, _, _ = dci_from_importance(np.ones((3, 3)))
    assert (d, c) == pytest.approx((0.0, 0.0), abs=1e-12)
    # rows: (.5,.5) -> D=0, (0,1) -> D=1, rho = (2/3, 1/3); cols: (1,0) -> C=1, (.5,.5) -> C=0
    d, c, d_i, c_k = dci_from_importance(np.array([[1.0, 1.0], [0.0, 1.0]]))
    assert d == pytest.approx(1 / 3) and c == pytest.approx(0.5)
    assert d_i == pytest.approx([0.0, 1.0]) and c_k == pytest.approx([1.0, 0.0])


def test_dci_lasso_perfect_rotated_random(codes):
    f, g = codes["factors"], codes["groups"]
    perfect = dci(codes["perfect"], f, NAMES, g)
    rotated = dci(codes["rotated"], f, NAMES, g)
    random = dci(codes["random"], f, NAMES, g)
    assert perfect["disentanglement"] > 0.8 and perfect["completeness"] > 0.8
    assert perfect["informativeness"] > 0.95
    assert rotated["informativeness"] > 0.95 and rotated["disentanglement"] < 0.5
    assert random["informativeness"] < 0.2
    assert np.array(perfect["importance"]).shape == (Z, K)
    json.dumps(perfect)


def test_dci_gbt_perfect_code(codes):
    out = dci(codes["perfect"], codes["factors"], NAMES, codes["groups"], regressor="gbt")
    rotated = dci(codes["rotated"], codes["factors"], NAMES, codes["groups"], regressor="gbt")
    assert out["disentanglement"] > 0.8 and out["completeness"] > 0.8 and out["informativeness"] > 0.9
    assert rotated["disentanglement"] < out["disentanglement"] - 0.3


def test_dci_split_keeps_subjects_apart(codes):
    out = dci(codes["perfect"], codes["factors"], NAMES, codes["groups"])
    assert out["n_train"] + out["n_test"] == N and out["n_train"] % 2 == 0  # whole subjects (2 scans each)


# ---------------------------------------------------------------- SAP
def test_sap_perfect_high_rotated_low(codes):
    f, g = codes["factors"], codes["groups"]
    perfect = sap(codes["perfect"], f, NAMES, g)
    assert perfect["sap"] > 0.9 and perfect["best_latent"] == dict(zip(NAMES, range(K)))
    assert sap(codes["rotated"], f, NAMES, g)["sap"] < 0.6
    # 45-degree rotation within factor pairs: each factor explained equally (R^2 = 1/2) by two latents
    p = codes["perfect"]
    s = 1 / math.sqrt(2)
    pair_rotated = np.c_[
        s * (p[:, 0] + p[:, 1]), s * (p[:, 0] - p[:, 1]), s * (p[:, 2] + p[:, 3]), s * (p[:, 2] - p[:, 3]), p[:, 4:]
    ]
    out = sap(pair_rotated, f, NAMES, g)
    assert out["sap"] < 0.1
    np.testing.assert_allclose(np.array(out["score_matrix"])[:4, :4].max(axis=0), 0.5, atol=0.15)
    json.dumps(out)


# ---------------------------------------------------------------- MIG
def test_quantile_bins_are_equal_count():
    bins = quantile_bins(np.random.default_rng(7).standard_normal(1000), 10)
    np.testing.assert_array_equal(np.bincount(bins), np.full(10, 100))


def test_mig_duplicate_latent_has_zero_gap(codes):
    f = codes["factors"]
    out = mig(np.c_[f[:, 0], f[:, 0], f[:, 1:]], f, NAMES, n_bins=5)
    assert out["mig_per_factor"]["log_volume"] == pytest.approx(0.0, abs=1e-12)
    assert out["mig_per_factor"]["centroid_x"] > 0.8


def test_mig_perfect_near_oracle_random_near_null(codes):
    f = codes["factors"]
    perfect = mig_with_references(codes["perfect"], f, NAMES, n_bins=10, n_permutations=20)
    random = mig_with_references(codes["random"], f, NAMES, n_bins=10, n_permutations=20)
    assert perfect["oracle"] > 0.8
    assert abs(perfect["mig"] - perfect["oracle"]) < 0.15
    assert perfect["mig"] > perfect["null_mean"] + 10 * perfect["null_std"]
    assert abs(random["mig"] - random["null_mean"]) < 4 * random["null_std"] + 1e-9
    assert random["mig_relative"] < 0.1 < 0.8 < perfect["mig_relative"]
    json.dumps(perfect)


def test_mig_drops_nan_factor_rows(codes):
    f = codes["factors"].copy()
    f[::3, 2] = np.nan
    out = mig_with_references(codes["perfect"], f, NAMES, n_bins=5, n_permutations=3)
    assert all(math.isfinite(v) for v in out["mig_per_factor"].values())
    assert out["mig_per_factor"]["sphericity"] > 0.7
    assert abs(out["mig_per_factor"]["sphericity"] - out["oracle_per_factor"]["sphericity"]) < 0.15


def test_held_out_probe_scores_unseen_subjects() -> None:
    """Fit on 30 subjects, score on 10 others: a code that contains the factor linearly (plus 20 nuisance
    dimensions) scores R² near 1 - noise variance share; a code independent of the factor scores <= ~0."""
    from custom.metrics.probes import held_out_probe_r2

    rng = np.random.default_rng(3)
    n_subj, per = 40, 4
    groups = np.repeat(np.arange(n_subj), per)
    f = rng.normal(size=(n_subj * per, 1))
    nuisance = rng.normal(size=(n_subj * per, 20))
    code = np.hstack([2.0 * f + 0.1 * rng.normal(size=f.shape), nuisance])
    fit, test = groups < 30, groups >= 30
    good = held_out_probe_r2(code[fit], f[fit], code[test], f[test], ["f"], groups_fit=groups[fit])
    # expected R² = var(2f) / var(2f + 0.1 e) ~ 4 / 4.01
    assert good["r2"]["f"] > 0.98
    assert good["n_fit"]["f"] == 120 and good["n_test"]["f"] == 40
    bad = held_out_probe_r2(nuisance[fit], f[fit], nuisance[test], f[test], ["f"], groups_fit=groups[fit])
    assert bad["r2"]["f"] < 0.1


def test_dci_and_sap_accept_an_explicit_train_test_split() -> None:
    """With split=(fit rows, test rows) the regressors see only the fit rows: a code whose test rows carry no
    information about the factor scores I <= ~0 even though its fit rows are perfect."""
    from custom.metrics.dci import dci
    from custom.metrics.sap import sap

    rng = np.random.default_rng(5)
    n_fit, n_test = 120, 40
    f = rng.normal(size=(n_fit + n_test, 2))
    code = np.hstack([f, rng.normal(size=(n_fit + n_test, 6))])
    split = (np.arange(n_fit), np.arange(n_fit, n_fit + n_test))
    good = dci(code, f, ["a", "b"], split=split)
    assert good["informativeness"] > 0.95 and good["n_train"] == n_fit and good["n_test"] == n_test
    broken = code.copy()
    broken[n_fit:, :2] = rng.normal(size=(n_test, 2))  # test rows: the factor coordinates are noise
    bad = dci(broken, f, ["a", "b"], split=split)
    assert bad["informativeness"] < 0.1
    assert sap(code, f, ["a", "b"], split=split)["sap"] > 0.9


def test_held_out_probe_penalty_is_chosen_on_the_validation_subjects():
    """With a selection split the ridge penalty is the one whose probe (fit on the fit split) scores best there.

    Constructed so that the fit split's own structure misleads: its codes carry a large subject-specific offset
    (a memorising encoder), which grouped CV over fit subjects cannot see through, while held-out subjects are
    encoded without it. The expected alpha is found by brute force with sklearn directly.
    """
    from sklearn.linear_model import Ridge
    from sklearn.metrics import r2_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from custom.metrics.probes import PROBE_ALPHAS, held_out_probe_r2

    rng = np.random.default_rng(3)

    def split(n_subj: int, memorised: float):
        subj = np.repeat(np.arange(n_subj), 4)
        f = rng.normal(size=len(subj))
        w = np.linspace(1, 0.2, 16)
        code = np.outer(f, w) + 0.3 * rng.normal(size=(len(subj), 16))
        code += memorised * rng.normal(size=(n_subj, 16))[subj]
        return code, f[:, None], subj

    cf, ff, gf = split(60, memorised=1.5)
    cs, fs, gs = split(15, memorised=0.0)
    ct, ft, _ = split(15, memorised=0.0)
    res = held_out_probe_r2(cf, ff, ct, ft, ["f"], groups_fit=gf, mu_select=cs, factors_select=fs, groups_select=gs)
    assert res["alpha_from"] == "validation"
    scores = {
        a: r2_score(fs[:, 0], make_pipeline(StandardScaler(), Ridge(alpha=a)).fit(cf, ff[:, 0]).predict(cs))
        for a in PROBE_ALPHAS
    }
    assert res["alpha"]["f"] == max(scores, key=scores.get)
    expected = make_pipeline(StandardScaler(), Ridge(alpha=res["alpha"]["f"])).fit(cf, ff[:, 0])
    assert res["r2"]["f"] == pytest.approx(r2_score(ft[:, 0], expected.predict(ct)))
    # too few selection subjects: back to grouped CV over the fit subjects
    few = held_out_probe_r2(
        cf, ff, ct, ft, ["f"], groups_fit=gf, mu_select=cs[:8], factors_select=fs[:8], groups_select=gs[:8]
    )
    assert few["alpha_from"] == "group_cv"
