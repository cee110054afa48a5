"""DCI: Disentanglement, Completeness, Informativeness (Eastwood & Williams, ICLR 2018).

For each factor k a regressor predicts v_k from the code; its feature importances give a matrix
R [Z, K] (R_ik = importance of latent i for factor k). With P_ik = R_ik / sum_k' R_ik' and
P~_ik = R_ik / sum_i' R_i'k:

    D_i = 1 - H_K(P_i.),  H_K(p) = -sum_k p_k log_K p_k;  D = sum_i rho_i D_i,  rho_i = sum_k R_ik / sum R
    C_k = 1 - H_Z(P~_.k),  H_Z with log base Z;          C = mean_k C_k
    I_k = R^2 of the regressor for factor k on held-out subjects;  I = mean_k I_k

A factor that is constant on the training or the test rows has an undefined R^2 (SS_tot = 0): its I_k is NaN,
its importance column zero, and it is left out of I (as SAP does), never scored as perfectly informative.

Importances: |coef| of a Lasso on standardised latents and standardised target (the paper's
choice for linear codes), or ``feature_importances_`` of gradient-boosted trees. Regressors are fit
on a train split (``GroupShuffleSplit`` by subject when groups are given) and I is their test R^2,
so informativeness is not inflated by overfitting.

Read D and C only where I is high: for an uninformative code the Lasso zeroes nearly every
coefficient and D of the few tiny survivors can be anything (even 1); ``importance`` shows this.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.ensemble import GradientBoostingRegressor
from sklearn.linear_model import Lasso, LassoCV
from sklearn.metrics import r2_score
from sklearn.preprocessing import StandardScaler

from custom.metrics.probes import check_code_and_factors, one_blas_thread, train_test_indices

__all__ = ["dci", "dci_from_importance"]


def _entropy(p: np.ndarray, base: int) -> float:
    """Shannon entropy of a probability vector with logarithm base ``base``."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum() / np.log(base))


def dci_from_importance(importance: np.ndarray) -> tuple[float, float, list[float], list[float]]:
    """Disentanglement and completeness from an importance matrix ``R [Z, K]`` (non-negative).

    Returns ``(D, C, D_i per latent, C_k per factor)``. A latent with zero total importance has
    rho_i = 0 (no weight in D); a factor with zero total importance gets C_k = 0. D is NaN when
    K == 1 and C is NaN when Z == 1 (the entropies are undefined).
    """
    r = np.abs(np.asarray(importance, dtype=np.float64))
    z, k = r.shape
    total = r.sum()
    row = r.sum(axis=1)
    col = r.sum(axis=0)
    d_i = [float("nan") if k < 2 or row[i] <= 0 else 1.0 - _entropy(r[i] / row[i], k) for i in range(z)]
    c_k = [float("nan") if z < 2 else (0.0 if col[j] <= 0 else 1.0 - _entropy(r[:, j] / col[j], z)) for j in range(k)]
    if k < 2 or total <= 0:
        d = float("nan")
    else:
        rho = row / total
        d = float(sum(rho[i] * d_i[i] for i in range(z) if row[i] > 0))
    c = float(np.mean(c_k)) if z >= 2 else float("nan")
    return d, c, d_i, c_k


def _fit_importance(
    x_train: np.ndarray, y_train: np.ndarray, regressor: str, lasso_alpha: float | None, seed: int
) -> tuple[np.ndarray, object]:
    """Fit one per-factor regressor; return (non-negative importances [Z], fitted predictor)."""
    if regressor == "lasso":
        if lasso_alpha is None:
            folds = max(2, min(5, len(y_train) // 2))
            model = LassoCV(cv=folds, random_state=seed, max_iter=5000)
        else:
            model = Lasso(alpha=lasso_alpha, max_iter=5000)
        model.fit(x_train, y_train)
        return np.abs(model.coef_), model
    if regressor == "gbt":
        model = GradientBoostingRegressor(n_estimators=100, max_depth=3, random_state=seed)
        model.fit(x_train, y_train)
        return np.asarray(model.feature_importances_, dtype=np.float64), model
    raise ValueError(f"regressor must be 'lasso' or 'gbt', got {regressor!r}.")


@one_blas_thread
def dci(
    mu: np.ndarray,
    factors: np.ndarray,
    factor_names: Sequence[str],
    groups: Sequence | None = None,
    regressor: str = "lasso",
    seed: int = 0,
    test_size: float = 0.3,
    lasso_alpha: float | None = None,
    split: tuple[Sequence[int], Sequence[int]] | None = None,
) -> dict:
    """DCI scores of a code ``mu [N, Z]`` for continuous factors ``[N, K]``.

    ``split`` = (train rows, test rows) replaces the random subject-grouped split, e.g. the training split's
    encodings stacked above held-out subjects' (evaluate.json does this, so I is measured on unseen subjects
    with regressors fitted on many more samples than a split of the test set would leave).

    Args:
        mu: latents; factors: factor values (NaN rows dropped per factor); factor_names: K names.
        groups: subject ids (length N): the split keeps each subject on one side.
        regressor: ``"lasso"`` (standardised inputs and target; ``LassoCV`` unless ``lasso_alpha``)
            or ``"gbt"`` (``GradientBoostingRegressor``, 100 trees of depth 3).
        seed: split and regressor seed. test_size: held-out fraction (of subjects when grouped).

    Returns:
        ``{"disentanglement", "completeness", "informativeness" (mean test R^2),
        "informativeness_per_factor": {name: R^2}, "disentanglement_per_latent": list,
        "completeness_per_factor": {name: C_k}, "importance": [[R_ik]] (Z x K nested list),
        "regressor", "n_train", "n_test"}``.
    """
    mu, factors, names, g = check_code_and_factors(mu, factors, factor_names, groups)
    if split is not None:
        train, test = np.asarray(split[0], dtype=int), np.asarray(split[1], dtype=int)
    else:
        train, test = train_test_indices(len(mu), g, test_size=test_size, seed=seed)
    z, k = mu.shape[1], len(names)
    importance = np.zeros((z, k))
    info: dict[str, float] = {}
    for j, name in enumerate(names):
        tr = train[np.isfinite(factors[train, j])]
        te = test[np.isfinite(factors[test, j])]
        if len(tr) < 4 or len(te) < 2:
            info[name] = float("nan")
            continue
        if np.ptp(factors[tr, j]) == 0 or np.ptp(factors[te, j]) == 0:
            # R^2 = 1 - SS_res / SS_tot is undefined for a constant target (SS_tot = 0); sklearn's r2_score would
            # return 1.0 for an exact prediction of it. As in SAP: NaN, no importance, left out of the mean.
            info[name] = float("nan")
            continue
        xs, ys = StandardScaler().fit(mu[tr]), StandardScaler().fit(factors[tr, j : j + 1])
        x_tr, x_te = xs.transform(mu[tr]), xs.transform(mu[te])
        y_tr = ys.transform(factors[tr, j : j + 1]).ravel()
        y_te = ys.transform(factors[te, j : j + 1]).ravel()
        importance[:, j], model = _fit_importance(x_tr, y_tr, regressor, lasso_alpha, seed)
        info[name] = float(r2_score(y_te, model.predict(x_te)))
    d, c, d_i, c_k = dci_from_importance(importance)
    finite = [v for v in info.values() if np.isfinite(v)]
    return {
        "disentanglement": d,
        "completeness": c,
        "informativeness": float(np.mean(finite)) if finite else float("nan"),
        "informativeness_per_factor": info,
        "disentanglement_per_latent": d_i,
        "completeness_per_factor": dict(zip(names, c_k)),
        "importance": importance.tolist(),
        "regressor": regressor,
        "n_train": int(len(train)),
        "n_test": int(len(test)),
    }
