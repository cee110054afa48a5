"""Forecast error metrics over masked target scans (all target times and each subject's last one).

* latent MSE: mean_{b,j,d} (z_pred - z_true)^2 over real targets (standardised latents).
* log-volume MAE: mean |ln V_pred - ln V_true| (ln V_true = the seg-measured ``log_volume`` factor).
* relative volume error (%): 100 |V_pred - V_true| / V_true = 100 |exp(ln V_pred - ln V_true) - 1|.
* Spearman's rho (rank correlation) between recovered and true per-subject parameters.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import spearmanr


def last_target_mask(tgt_mask: torch.Tensor) -> torch.Tensor:
    """True at each subject's last real target (targets left-aligned)."""
    last = tgt_mask.long().sum(1) - 1
    out = torch.zeros_like(tgt_mask)
    ok = last >= 0
    out[torch.nonzero(ok).flatten(), last[ok]] = True
    return out


def _volume_errors(logv_pred: torch.Tensor, logv_true: torch.Tensor, mask: torch.Tensor) -> dict[str, float]:
    keep = mask & torch.isfinite(logv_true) & torch.isfinite(logv_pred)
    if not keep.any():
        return {"logvol_mae": float("nan"), "rel_vol_err_pct": float("nan"), "rel_vol_err_pct_median": float("nan")}
    d = (logv_pred - logv_true)[keep].double()
    rel = 100.0 * (torch.exp(d) - 1.0).abs()
    return {
        "logvol_mae": float(d.abs().mean()),
        "rel_vol_err_pct": float(rel.mean()),
        "rel_vol_err_pct_median": float(rel.median()),
    }


def forecast_metrics(
    z_pred: torch.Tensor | None,
    z_true: torch.Tensor,
    logv_pred: torch.Tensor,
    logv_true: torch.Tensor,
    tgt_mask: torch.Tensor,
) -> dict[str, float]:
    """Latent MSE and volume errors at all targets and at the last target (suffix ``_last``)."""
    last = last_target_mask(tgt_mask)
    out: dict[str, float] = {"n_subjects": int(tgt_mask.any(1).sum()), "n_targets": int(tgt_mask.sum())}
    for suffix, m in (("", tgt_mask), ("_last", last)):
        if z_pred is None:
            out["latent_mse" + suffix] = float("nan")
        else:
            out["latent_mse" + suffix] = float(((z_pred - z_true) ** 2)[m].mean())
        out.update({k + suffix: v for k, v in _volume_errors(logv_pred, logv_true, m).items()})
    return out


def spearman(x, y) -> float:
    """Spearman's rank correlation over pairs where both are finite (nan with < 3 pairs or constant input)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3 or np.ptp(x[keep]) == 0 or np.ptp(y[keep]) == 0:
        return float("nan")
    return float(spearmanr(x[keep], y[keep]).statistic)
