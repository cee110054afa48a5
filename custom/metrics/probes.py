"""Cross-validated linear probes from latents to segmentation factors, and shared input checks.

A probe answers "is factor k linearly decodable from mu?". It must be scored on samples it was not
fitted on: the original implementation fit and scored on the same 32 samples, so a 128-d random
code scored R^2 ~ 1. Here the R^2 is computed on out-of-fold predictions (``cross_val_predict``),
with folds grouped by subject (``GroupKFold``) so scans of one subject never sit on both sides.

R^2 = 1 - sum_n (y_n - yhat_n)^2 / sum_n (y_n - ybar)^2 (coefficient of determination).

The functions ``check_code_and_factors`` and ``train_test_indices`` are shared by the DCI and SAP
metrics, which need the same validation and the same subject-grouped split.

The probes run with one BLAS thread (:data:`one_blas_thread`). Their matrices (a few hundred latents by 128) are far
too small for a thread team, and every BLAS call wakes one. Two processes doing this at once fight over the cores.
On a 2-core CPU, one validation's probes at run H10's sizes (560 fit / 120 scored scans, 12 factors)
take 0.89 s alone and 3.1 s each with a second process doing the same (OpenBLAS at 16 threads; 5.4 s at 2 threads);
with one thread, 0.82 s and 0.87 s, same R². Two concurrent 128^3 runs on an H200 host took 80-100 s per validation
pass (4-6 s alone; vae_baseline run H); how much of that this explains is not measured yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import Ridge
from sklearn.metrics import r2_score
from sklearn.model_selection import GroupKFold, GroupShuffleSplit, KFold, ShuffleSplit, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

__all__ = [
    "check_code_and_factors",
    "train_test_indices",
    "linear_probe_r2",
    "held_out_probe_r2",
    "single_latent_r2",
    "ridge_path_predict",
    "one_blas_thread",
]

#: decorator: run the wrapped metric with one BLAS thread (see the module docstring)
one_blas_thread = threadpool_limits.wrap(limits=1, user_api="blas")


def check_code_and_factors(
    mu: np.ndarray, factors: np.ndarray, factor_names: Sequence[str], groups: Sequence | None = None
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray | None]:
    """Validate and convert ``mu [N, Z]``, ``factors [N, K]`` (or ``[N]``), names (K) and groups (N).

    Returns float64 arrays, the names as a list, and groups as an array (or None).
    """
    mu = np.asarray(mu, dtype=np.float64)
    factors = np.asarray(factors, dtype=np.float64)
    if factors.ndim == 1:
        factors = factors[:, None]
    names = [str(n) for n in factor_names]
    if mu.ndim != 2:
        raise ValueError(f"mu must be [N, Z], got shape {mu.shape}.")
    if factors.ndim != 2 or factors.shape[0] != mu.shape[0]:
        raise ValueError(f"factors must be [N, K] with N = {mu.shape[0]}, got shape {factors.shape}.")
    if len(names) != factors.shape[1]:
        raise ValueError(f"{len(names)} factor_names for {factors.shape[1]} factor columns.")
    if not np.all(np.isfinite(mu)):
        raise ValueError("mu contains NaN or inf.")
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (mu.shape[0],):
            raise ValueError(f"groups must have length N = {mu.shape[0]}, got shape {g.shape}.")
    return mu, factors, names, g


def train_test_indices(
    n: int, groups: np.ndarray | None = None, test_size: float = 0.3, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One random train/test split of ``range(n)``; by group (subject) when ``groups`` is given."""
    splitter = (
        GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        if groups is not None
        else ShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
    )
    train, test = next(splitter.split(np.zeros((n, 1)), groups=groups))
    return np.sort(train), np.sort(test)


@one_blas_thread
def linear_probe_r2(
    mu: np.ndarray,
    factors: np.ndarray,
    factor_names: Sequence[str],
    groups: Sequence | None = None,
    n_splits: int = 5,
    alpha: float | Sequence[float] = 1.0,
    seed: int = 0,
) -> dict:
    """Out-of-fold R^2 of a standardised ridge regression from ``mu`` to each factor.

    With a sequence of penalties the probe is nested: in each outer fold the penalty is the one whose inner
    out-of-fold R^2 (subject-grouped folds of the outer training part only) is highest, so the outer fold's
    subjects choose nothing. With 128 latents and a few dozen validation subjects a fixed ``alpha = 1`` overfits
    and scores R^2 < 0 for informative codes; the nested choice is the usual remedy (Varma & Simon, BMC
    Bioinformatics 2006).

    Args:
        mu: latents ``[N, Z]``.
        factors: ``[N, K]``; rows with NaN are dropped per factor.
        factor_names: K names.
        groups: subject id per row; folds never split a subject (``GroupKFold``). Plain shuffled
            ``KFold`` when None.
        n_splits: folds; reduced to the number of samples/groups when fewer (minimum 2; a factor
            with fewer than 2 samples/groups gets NaN).
        alpha: ridge penalty (on standardised latents; the scaler is fitted inside each fold), or the penalties
            to choose from by nested cross-validation.
        seed: fold shuffling seed.

    Returns:
        ``{"r2": {name: float}, "mean_r2": float (nan-mean), "n_splits": int (fewest folds used),
        "n_samples": {name: int}}``.
    """
    mu, factors, names, g = check_code_and_factors(mu, factors, factor_names, groups)
    r2: dict[str, float] = {}
    n_samples: dict[str, int] = {}
    used: list[int] = []
    for k, name in enumerate(names):
        rows = np.isfinite(factors[:, k])
        x, y = mu[rows], factors[rows, k]
        gk = g[rows] if g is not None else None
        n_units = len(np.unique(gk)) if gk is not None else len(y)
        n_samples[name] = int(len(y))
        folds = min(int(n_splits), n_units)
        if folds < 2:
            r2[name] = float("nan")
            continue
        cv = (
            GroupKFold(folds, shuffle=True, random_state=seed)
            if gk is not None
            else KFold(folds, shuffle=True, random_state=seed)
        )
        if np.ndim(alpha) == 0:
            pred = cross_val_predict(_ridge(float(alpha)), x, y, groups=gk, cv=cv)
        else:
            alphas = np.asarray(alpha, dtype=np.float64)
            pred = np.empty_like(y)
            for train, test in cv.split(x, y, gk):
                best = _nested_alpha(x[train], y[train], None if gk is None else gk[train], alphas, n_splits, seed)
                pred[test] = ridge_path_predict(x[train], y[train], x[test], alphas[best : best + 1])[0]
        r2[name] = float(r2_score(y, pred))
        used.append(folds)
    values = np.array([v for v in r2.values() if np.isfinite(v)])
    return {
        "r2": r2,
        "mean_r2": float(values.mean()) if values.size else float("nan"),
        "n_splits": int(min(used)) if used else 0,
        "n_samples": n_samples,
    }


def _ridge(alpha: float) -> Any:
    """Standardise -> ridge regression (the probe model)."""
    return make_pipeline(StandardScaler(), Ridge(alpha=alpha))


def ridge_path_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_eval: np.ndarray, alphas: np.ndarray) -> np.ndarray:
    """Predictions ``[len(alphas), n_eval]`` of standardise -> ridge fitted on ``(x_fit, y_fit)``, every penalty at once.

    The same model as :func:`_ridge` (scikit-learn's ``StandardScaler`` then ``Ridge(alpha)`` with an intercept),
    solved through one SVD of the standardised ``x_fit = U S V^T``: ``w(alpha) = V diag(s / (s^2 + alpha)) U^T (y -
    mean(y))`` (Hastie, Tibshirani & Friedman, ESL 2nd ed., eq. 3.47), so a nested penalty search costs one
    decomposition per fold instead of one fit per penalty.
    """
    mean = x_fit.mean(axis=0)
    scale = x_fit.std(axis=0)
    scale[scale == 0.0] = 1.0  # constant latents, as StandardScaler does
    a = (x_fit - mean) / scale
    y_mean = float(y_fit.mean())
    u, sv, vt = np.linalg.svd(a, full_matrices=False)
    uy = u.T @ (y_fit - y_mean)
    shrink = sv[None, :] / (sv[None, :] ** 2 + np.asarray(alphas, dtype=np.float64)[:, None])
    w = (shrink * uy[None, :]) @ vt
    return (((x_eval - mean) / scale) @ w.T).T + y_mean


def _nested_alpha(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray | None, alphas: np.ndarray, n_splits: int, seed: int
) -> int:
    """Index of the penalty with the highest out-of-fold R^2 on ``(x, y)`` alone (subject-grouped inner folds)."""
    units = len(np.unique(groups)) if groups is not None else len(y)
    folds = min(int(n_splits), units)
    if folds < 2:
        return len(alphas) // 2
    cv = (
        GroupKFold(folds, shuffle=True, random_state=seed)
        if groups is not None
        else KFold(folds, shuffle=True, random_state=seed)
    )
    pred = np.empty((len(alphas), len(y)))
    for train, test in cv.split(x, y, groups):
        pred[:, test] = ridge_path_predict(x[train], y[train], x[test], alphas)
    scores = [r2_score(y, p) for p in pred]
    return int(np.argmax(scores))


#: ridge penalties searched (on standardised latents) by :func:`held_out_probe_r2`
PROBE_ALPHAS = tuple(float(a) for a in np.logspace(-2, 4, 13))


@one_blas_thread
def held_out_probe_r2(
    mu_fit: np.ndarray,
    factors_fit: np.ndarray,
    mu_test: np.ndarray,
    factors_test: np.ndarray,
    factor_names: Sequence[str],
    groups_fit: Sequence | None = None,
    alphas: Sequence[float] = PROBE_ALPHAS,
    n_splits: int = 5,
    mu_select: np.ndarray | None = None,
    factors_select: np.ndarray | None = None,
    groups_select: Sequence | None = None,
    min_select_subjects: int = 3,
) -> dict:
    """R^2 on held-out subjects of a ridge probe fitted on other subjects' latents.

    The probe (standardise -> ridge) is fitted on ``(mu_fit, factors_fit)`` -- typically the training split's
    encodings -- and scored once on ``(mu_test, factors_test)``, subjects the encoder and the probe never saw.
    The penalty is chosen from ``alphas``:

    - with a selection set ``(mu_select, factors_select)`` of at least ``min_select_subjects`` subjects (the
      validation split: subjects the encoder was not fitted to either), as the ``alpha`` whose probe, fitted on the
      whole fit set, scores the highest R^2 there -- the usual train / validation / test protocol;
    - otherwise by ``GroupKFold`` cross-validation over ``groups_fit`` (subjects; pooled out-of-fold R^2). This can
      mislead when the encoder has memorised its training subjects: on a recorded 128^3 vae_baseline, CV over
      training subjects scored R^2 <= 0.02 for every alpha and picked 3162 (test R^2 0.06), while alpha = 1 gave
      0.52 on the test subjects.

    With a 128-d code, fitting a probe inside a 7-subject test split (:func:`linear_probe_r2`) measures the
    probe's sample size more than the code; this is the standard "train the readout on the training set,
    report on the test set" protocol. R^2 = 1 - SS_res / SS_tot on the test rows (can be negative).

    Returns ``{"r2": {name: float}, "alpha": {name: float}, "n_fit": {name: int}, "n_test": {name: int},
    "alpha_from": "validation" | "group_cv", "pred": {name: [n_test] array}}``; NaN for a factor with fewer than 3
    finite rows on either side (``pred`` is NaN on the test rows without that factor, or for such a factor).
    """
    mu_fit, factors_fit, names, g = check_code_and_factors(mu_fit, factors_fit, factor_names, groups_fit)
    mu_test, factors_test, _, _ = check_code_and_factors(mu_test, factors_test, factor_names)
    if mu_fit.shape[1] != mu_test.shape[1]:
        raise ValueError(f"fit and test latents differ in width: {mu_fit.shape[1]} vs {mu_test.shape[1]}")
    select = None
    if mu_select is not None and factors_select is not None:
        mu_s, f_s, _, g_s = check_code_and_factors(mu_select, factors_select, factor_names, groups_select)
        if mu_s.shape[1] != mu_fit.shape[1]:
            raise ValueError(f"fit and selection latents differ in width: {mu_fit.shape[1]} vs {mu_s.shape[1]}")
        n_sel = len(np.unique(g_s)) if g_s is not None else len(mu_s)
        if n_sel >= min_select_subjects:
            select = (mu_s, f_s)
    out: dict[str, Any] = {
        "r2": {},
        "alpha": {},
        "n_fit": {},
        "n_test": {},
        "pred": {},
        "alpha_from": "validation" if select is not None else "group_cv",
    }
    for k, name in enumerate(names):
        rf, rt = np.isfinite(factors_fit[:, k]), np.isfinite(factors_test[:, k])
        out["n_fit"][name], out["n_test"][name] = int(rf.sum()), int(rt.sum())
        out["pred"][name] = np.full(len(mu_test), np.nan)
        if rf.sum() < 3 or rt.sum() < 3:
            out["r2"][name], out["alpha"][name] = float("nan"), float("nan")
            continue
        x, y = mu_fit[rf], factors_fit[rf, k]
        gk = g[rf] if g is not None else None
        units = len(np.unique(gk)) if gk is not None else len(y)
        folds = min(int(n_splits), units)
        grid = np.asarray(alphas, dtype=np.float64)
        rs = np.isfinite(select[1][:, k]) if select is not None else None
        if rs is not None and rs.sum() >= 3:
            pred = ridge_path_predict(x, y, select[0][rs], grid)  # every penalty, one SVD
            alpha = float(grid[int(np.argmax([r2_score(select[1][rs, k], p) for p in pred]))])
        elif folds >= 2:
            alpha = float(grid[_nested_alpha(x, y, gk, grid, folds, seed=0)])
        else:
            alpha = 1.0
        pred_test = ridge_path_predict(x, y, mu_test[rt], np.array([alpha]))[0]
        out["r2"][name] = float(r2_score(factors_test[rt, k], pred_test))
        out["pred"][name][rt] = pred_test
        out["alpha"][name] = alpha
    return out


def single_latent_r2(mu: np.ndarray, y: np.ndarray) -> np.ndarray:
    """R^2 of the best 1-D linear fit of ``y`` on each latent alone (= squared Pearson correlation).

    Used to check that no latent other than the supervised one (e.g. ``z_vol``) predicts a factor
    (e.g. log-volume) better. In-sample, but a single slope and intercept cannot overfit.
    Rows where ``y`` is NaN are dropped; a constant latent gets 0.

    Returns:
        ``np.ndarray [Z]`` of values in [0, 1].
    """
    mu = np.asarray(mu, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).ravel()
    rows = np.isfinite(y)
    x, y = mu[rows], y[rows]
    xc = x - x.mean(axis=0)
    yc = y - y.mean()
    denom = np.sqrt((xc**2).sum(axis=0) * (yc**2).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(denom > 0, (xc * yc[:, None]).sum(axis=0) / np.where(denom > 0, denom, 1.0), 0.0)
    return np.clip(r**2, 0.0, 1.0)
