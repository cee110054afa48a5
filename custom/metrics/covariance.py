"""Off-diagonal covariance of the posterior means: the quantity DIP-VAE drives to zero.

DIP-VAE (Kumar, Sattigeri & Balakrishnan, 2018) penalises ``sum_{i!=j} Cov(mu)_ij^2`` and
``sum_i (Cov(mu)_ii - 1)^2``; this module reports the same statistics on an evaluation set so the
effect of the penalty can be read off, plus the largest off-diagonal correlation (scale free).
"""

from __future__ import annotations

import numpy as np

__all__ = ["offdiag_covariance"]


def _correlation(cov: np.ndarray) -> np.ndarray:
    """Correlation matrix from a covariance matrix; zero-variance dimensions get zero correlation."""
    std = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    denom = np.outer(std, std)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = np.where(denom > 0, cov / np.where(denom > 0, denom, 1.0), 0.0)
    return corr


def offdiag_covariance(mu: np.ndarray) -> dict:
    """Summaries of the empirical covariance ``C = Cov(mu)`` (unbiased, ``ddof=1``) and correlation.

    Args:
        mu: posterior means, shape ``[N, Z]`` (N >= 2).

    Returns:
        ``offdiag_abs_mean`` = mean_{i!=j} |C_ij|, ``offdiag_fro`` = sqrt(sum_{i!=j} C_ij^2),
        ``diag_mean`` = mean_i C_ii, ``max_abs_corr_offdiag`` = max_{i!=j} |Corr_ij| (0 when Z == 1).
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 2:
        raise ValueError(f"mu must have shape [N>=2, Z], got {mu.shape}.")
    cov = np.atleast_2d(np.cov(mu, rowvar=False))
    z = cov.shape[0]
    off = ~np.eye(z, dtype=bool)
    corr = _correlation(cov)
    has_off = bool(off.any())
    return {
        "offdiag_abs_mean": float(np.abs(cov[off]).mean()) if has_off else 0.0,
        "offdiag_fro": float(np.sqrt((cov[off] ** 2).sum())),
        "diag_mean": float(np.diag(cov).mean()),
        "max_abs_corr_offdiag": float(np.abs(corr[off]).max()) if has_off else 0.0,
    }
