"""SAP: Separated Attribute Predictability (Kumar, Sattigeri & Balakrishnan, ICLR 2018), continuous mode.

Score matrix S [Z, K]: S_ik = R^2 of a 1-D linear regression of factor k on latent i. SAP is the mean
over factors of the gap between the best and second-best latent:

    SAP = mean_k (S_(1)k - S_(2)k)

A high SAP means each factor is captured by one latent. Here each 1-D fit is made on a train split
(by subject when groups are given) and scored on the held-out split, with negative R^2 clipped to 0
(a latent that does worse than the mean predicts nothing).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from custom.metrics.probes import check_code_and_factors, train_test_indices

__all__ = ["sap", "sap_score_matrix"]


def _heldout_r2_1d(x_tr: np.ndarray, y_tr: np.ndarray, x_te: np.ndarray, y_te: np.ndarray) -> np.ndarray:
    """Held-out R^2 of ``y ~ a_i + b_i x_i`` for every column i of x at once (least squares)."""
    xm, ym = x_tr.mean(axis=0), y_tr.mean()
    xc = x_tr - xm
    sxx = (xc**2).sum(axis=0)
    sxy = (xc * (y_tr - ym)[:, None]).sum(axis=0)
    slope = np.where(sxx > 0, sxy / np.where(sxx > 0, sxx, 1.0), 0.0)
    pred = ym + (x_te - xm) * slope
    ss_res = ((y_te[:, None] - pred) ** 2).sum(axis=0)
    ss_tot = ((y_te - y_te.mean()) ** 2).sum()
    if ss_tot <= 0:
        return np.full(x_tr.shape[1], np.nan)
    return np.clip(1.0 - ss_res / ss_tot, 0.0, 1.0)


def sap_score_matrix(
    mu: np.ndarray,
    factors: np.ndarray,
    groups: np.ndarray | None = None,
    seed: int = 0,
    test_size: float = 0.3,
    split: tuple[np.ndarray, np.ndarray] | None = None,
) -> np.ndarray:
    """S [Z, K] of held-out 1-D linear R^2 (clipped to [0, 1]); NaN factor rows dropped per factor.
    ``split`` = (train rows, test rows) replaces the random subject-grouped split."""
    train, test = split if split is not None else train_test_indices(len(mu), groups, test_size=test_size, seed=seed)
    s = np.full((mu.shape[1], factors.shape[1]), np.nan)
    for k in range(factors.shape[1]):
        tr = train[np.isfinite(factors[train, k])]
        te = test[np.isfinite(factors[test, k])]
        if len(tr) >= 2 and len(te) >= 2:
            s[:, k] = _heldout_r2_1d(mu[tr], factors[tr, k], mu[te], factors[te, k])
    return s


def sap(
    mu: np.ndarray,
    factors: np.ndarray,
    factor_names: Sequence[str],
    groups: Sequence | None = None,
    seed: int = 0,
    test_size: float = 0.3,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
) -> dict:
    """SAP score of ``mu [N, Z]`` (Z >= 2) for continuous factors ``[N, K]``.

    ``split`` = (train rows, test rows), e.g. training-split encodings then held-out subjects stacked in ``mu``;
    by default one random subject-grouped split (``test_size``).

    Returns:
        ``{"sap": float, "sap_per_factor": {name: gap}, "best_latent": {name: int},
        "score_matrix": [[S_ik]] (Z x K nested list)}``.
    """
    mu, factors, names, g = check_code_and_factors(mu, factors, factor_names, groups)
    if mu.shape[1] < 2:
        raise ValueError("SAP needs at least 2 latent dimensions.")
    rows = None if split is None else (np.asarray(split[0], dtype=int), np.asarray(split[1], dtype=int))
    s = sap_score_matrix(mu, factors, g, seed=seed, test_size=test_size, split=rows)
    gaps: dict[str, float] = {}
    best: dict[str, int] = {}
    for k, name in enumerate(names):
        col = s[:, k]
        if not np.all(np.isfinite(col)):
            gaps[name], best[name] = float("nan"), -1
            continue
        order = np.argsort(col)[::-1]
        gaps[name], best[name] = float(col[order[0]] - col[order[1]]), int(order[0])
    finite = [v for v in gaps.values() if np.isfinite(v)]
    return {
        "sap": float(np.mean(finite)) if finite else float("nan"),
        "sap_per_factor": gaps,
        "best_latent": best,
        "score_matrix": s.tolist(),
    }
