"""Collapse diagnostics, active units, covariance and total correlation against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from custom.metrics import (
    active_units,
    collapse_summary,
    gaussian_total_correlation,
    kl_per_dim_gaussian,
    offdiag_covariance,
)


def _columns_with_variances(variances: list[float], n: int = 50, seed: int = 0) -> np.ndarray:
    """Columns whose unbiased sample variance is exactly the requested value."""
    rng = np.random.default_rng(seed)
    s = rng.standard_normal((n, len(variances)))
    s = (s - s.mean(0)) / s.std(0, ddof=1)
    return s * np.sqrt(np.asarray(variances))[None, :] + 3.0


def test_active_units_counts_dims_above_threshold():
    mu = _columns_with_variances([0.0, 0.001, 0.005, 0.02, 1.0, 4.0])
    out = active_units(mu)
    assert out["au_count"] == 3
    assert out["au_frac"] == pytest.approx(0.5)
    assert out["active_mask"] == [False, False, False, True, True, True]
    np.testing.assert_allclose(out["per_dim_var"], [0.0, 0.001, 0.005, 0.02, 1.0, 4.0], atol=1e-12)
    assert active_units(mu, threshold=1.5)["au_count"] == 1
    json.dumps(out)


def test_kl_per_dim_gaussian_hand_values():
    assert np.allclose(kl_per_dim_gaussian(np.zeros((3, 4)), np.zeros((3, 4))), 0.0)
    kl = kl_per_dim_gaussian(np.array([[1.0, 0.0, 2.0]]), np.array([[0.0, math.log(2.0), math.log(0.5)]]))
    expected = [0.5, 0.5 * (2.0 - 1.0 - math.log(2.0)), 0.5 * (4.0 + 0.5 - 1.0 - math.log(0.5))]
    np.testing.assert_allclose(kl[0], expected, rtol=1e-12)


def test_collapse_summary_flags_a_collapsed_posterior():
    n, z = 40, 8
    mu = np.full((n, z), 0.05)  # constant mean: nothing about x
    logvar = np.full((n, z), -0.2)
    out = collapse_summary(mu, logvar, free_bits=0.15, recon_mu_mse=0.50, recon_z0_mse=0.51, recon_sampled_mse=0.52)
    kl_hand = z * 0.5 * (0.05**2 + math.exp(-0.2) - 1.0 + 0.2)
    assert out["au_count"] == 0 and out["collapsed"] is True
    assert out["kl_raw"] == pytest.approx(kl_hand)
    assert out["kl_floor"] == pytest.approx(0.15 * z)
    assert out["kl_above_floor"] is (kl_hand > 0.15 * z)
    assert out["recon_z0_ratio"] == pytest.approx(0.51 / 0.50)
    assert out["recon_delta_mu_vs_sampled"] == pytest.approx(0.02)
    assert out["z_std"] == pytest.approx(math.exp(-0.1))  # Var(mu) = 0, E[exp(logvar)] = e^-0.2
    assert "COLLAPSED" in out["verdict"]
    json.dumps(out)


def test_collapse_summary_healthy_code_and_given_kl():
    mu = _columns_with_variances([1.0, 4.0, 0.25])
    logvar = np.full_like(mu, math.log(0.1))
    kl = np.full_like(mu, 0.7)
    out = collapse_summary(
        mu, logvar, kl_per_dim=kl, free_bits=0.1, recon_mu_mse=0.2, recon_z0_mse=0.6, recon_sampled_mse=0.25
    )
    assert out["au_count"] == 3 and out["collapsed"] is False
    assert out["kl_raw"] == pytest.approx(2.1) and out["kl_above_floor"] is True
    assert out["z_std"] == pytest.approx(math.sqrt(np.mean([1.1, 4.1, 0.35])))
    assert out["mu_var_mean"] == pytest.approx(np.mean([1.0, 4.0, 0.25]))
    assert out["logvar_mean"] == pytest.approx(math.log(0.1))
    assert out["recon_z0_ratio"] == pytest.approx(3.0)
    assert out["verdict"].startswith("ok")
    # active units but the decoder ignores them: still collapsed
    ignored = collapse_summary(mu, logvar, recon_mu_mse=0.5, recon_z0_mse=0.52)
    assert ignored["collapsed"] is True
    # ... and the verdict says the code is in use, so that a held-out failure to generalise reads as such
    assert "code is in use" in ignored["verdict"] and "generalise" in ignored["verdict"]
    empty = collapse_summary(
        np.full((40, 8), 0.05), np.full((40, 8), -0.2), free_bits=0.15, recon_mu_mse=0.50, recon_z0_mse=0.51
    )
    assert "code is in use" not in empty["verdict"]  # no active units: plain posterior collapse


def test_offdiag_covariance_matches_numpy():
    rng = np.random.default_rng(1)
    mu = rng.standard_normal((30, 5)) @ rng.standard_normal((5, 5))
    cov = np.cov(mu, rowvar=False)
    corr = np.corrcoef(mu, rowvar=False)
    off = ~np.eye(5, dtype=bool)
    out = offdiag_covariance(mu)
    assert out["offdiag_abs_mean"] == pytest.approx(np.abs(cov[off]).mean())
    assert out["offdiag_fro"] == pytest.approx(math.sqrt((cov[off] ** 2).sum()))
    assert out["diag_mean"] == pytest.approx(np.trace(cov) / 5)
    assert out["max_abs_corr_offdiag"] == pytest.approx(np.abs(corr[off]).max())


def test_offdiag_covariance_constant_dim_has_zero_correlation():
    rng = np.random.default_rng(2)
    mu = np.c_[rng.standard_normal(20), np.ones(20)]
    out = offdiag_covariance(mu)
    assert out["max_abs_corr_offdiag"] == 0.0 and out["offdiag_fro"] == pytest.approx(0.0, abs=1e-12)


def _samples_with_covariance(sigma: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Samples whose empirical (ddof=1) covariance equals ``sigma`` exactly."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, sigma.shape[0]))
    x = x - x.mean(0)
    white = x @ np.linalg.inv(np.linalg.cholesky(np.cov(x, rowvar=False))).T
    return white @ np.linalg.cholesky(sigma).T


def test_total_correlation_independent_is_zero():
    sigma = np.diag([1.0, 4.0, 0.5])
    assert gaussian_total_correlation(_samples_with_covariance(sigma, 200, 0)) == pytest.approx(0.0, abs=1e-5)
    rng = np.random.default_rng(3)
    assert abs(gaussian_total_correlation(rng.standard_normal((20000, 4)))) < 0.01


def test_total_correlation_matches_analytic_value():
    corr = np.array([[1.0, 0.6, 0.3], [0.6, 1.0, -0.2], [0.3, -0.2, 1.0]])
    scale = np.diag([2.0, 0.5, 3.0])
    mu = _samples_with_covariance(scale @ corr @ scale, 300, 1)
    expected = -0.5 * math.log(np.linalg.det(corr))
    assert gaussian_total_correlation(mu) == pytest.approx(expected, rel=1e-4)


def test_total_correlation_is_finite_for_collapsed_dims():
    rng = np.random.default_rng(4)
    mu = np.c_[rng.standard_normal(50), np.zeros(50)]
    assert math.isfinite(gaussian_total_correlation(mu))
