"""The hybrid forecaster's predictions as forecast frames (one row per method, subject, k_obs and target scan).

Columns follow the package's forecast-frame contract: ``subject_id``, ``k_obs``, ``t_last_obs``, ``time_years``,
``horizon_years``, ``pred_volume_ml`` (= exp of the predictive mean of ln V), ``pred_sd_log`` (predictive sd of ln V,
including the target's measurement noise), ``pred_a_per_year`` (exp of the posterior mean of ln a), and, before any
calibration, Gaussian growth probabilities from that predictive distribution:

    p_growth15 = P(V(t) > 1.15 V_last) = 1 - Phi((ln(1.15 V_last) - mu) / sd),   p_prog40 likewise with 1.40,

where V_last is the last observed scan's measured volume (in images-only mode its read-out volume, or its segmented
volume when the forecaster was trained with a ``seg_volumes_file``). Times are years
since the subject's first scan. Truth columns for scoring are in :func:`truth_frame`.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch
from scipy.stats import norm

from custom.ode.engine import run_forecast
from custom.ode.subjects import SubjectTrajectories, pad_collate

#: method names of the two modes in forecast frames and reports
HYBRID, IMAGES_ONLY = "latent_ode_hybrid", "latent_ode_images_only"


@torch.no_grad()
def forecast_frame(
    network: Any, dataset: SubjectTrajectories, k_obs: int, use_segmentations: bool, method: str | None = None
) -> pd.DataFrame:
    """Forecast every later scan of each subject with more than ``k_obs`` scans from its first ``k_obs``."""
    items = [it for it in dataset.items if len(it["t"]) > k_obs]
    if not items:
        raise ValueError(f"no {dataset.split} subject has more than k_obs={k_obs} scans: nothing to forecast")
    network.eval()
    dev = network.latent_mean.device
    batch = pad_collate(items)
    batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    k = torch.full((len(items),), int(k_obs), dtype=torch.long)
    pred, obs, tgt = run_forecast(network, batch, k, bool(use_segmentations), with_latents=False)
    mu, sd = pred["mean_log_v"].double().cpu().numpy(), pred["sd_log_v"].double().cpu().numpy()
    t = batch["t"].double().cpu().numpy()
    y_meas = batch["logv_measured"].double().cpu().numpy()
    y_read = network.log_volume_readout(batch["z"]).double().cpu().numpy()
    if getattr(network, "seg_volume_sd", None) is not None:  # images-only scans observed through seg_volumes_file
        y_seg = batch["logv_segmented"].double().cpu().numpy()
        y_read = np.where(np.isfinite(y_seg), y_seg, y_read)
    a_mean = pred["a_mean"].double().cpu().numpy()
    rows: list[dict[str, Any]] = []
    name = method or (HYBRID if use_segmentations else IMAGES_ONLY)
    for b, it in enumerate(items):
        last = int(k_obs) - 1
        y_last = y_meas[b, last] if use_segmentations and np.isfinite(y_meas[b, last]) else y_read[b, last]
        for j in np.flatnonzero(tgt[b].cpu().numpy()):
            rows.append(
                {
                    "method": name,
                    "subject_id": it["subject_id"],
                    "k_obs": int(k_obs),
                    "t_last_obs": float(t[b, last]),
                    "time_years": float(t[b, j]),
                    "horizon_years": float(t[b, j] - t[b, last]),
                    "pred_volume_ml": float(math.exp(mu[b, j])),
                    "pred_sd_log": float(sd[b, j]),
                    "pred_a_per_year": float(a_mean[b]),
                    "p_growth15": float(norm.sf((y_last + math.log(1.15) - mu[b, j]) / sd[b, j])),
                    "p_prog40": float(norm.sf((y_last + math.log(1.40) - mu[b, j]) / sd[b, j])),
                    "images_only": bool(pred["images_only"][b]),
                }
            )
    return pd.DataFrame(rows)


def truth_frame(dataset: SubjectTrajectories) -> pd.DataFrame:
    """One row per scan: subject_id, time_years (since the first scan), volume_ml (measured), true_volume_ml (the
    noise-free Gompertz law when the cohort is synthetic, else nan), growth_class, true_a_per_year."""
    rows = []
    for it in dataset.items:
        tr = it["truth"]
        for tt, lv in zip(it["t"].tolist(), it["logv_measured"].tolist()):
            law = math.nan
            if all(np.isfinite([tr["V0_ml"], tr["a_per_year"], tr["K_ml"]])):
                law = tr["K_ml"] * math.exp(math.log(tr["V0_ml"] / tr["K_ml"]) * math.exp(-tr["a_per_year"] * tt))
            rows.append(
                {
                    "subject_id": it["subject_id"],
                    "time_years": float(tt),
                    "volume_ml": float(math.exp(lv)) if np.isfinite(lv) else math.nan,
                    "true_volume_ml": law,
                    "growth_class": it["growth_class"],
                    "true_a_per_year": tr["a_per_year"],
                }
            )
    return pd.DataFrame(rows)


def last_scan_summary(frame: pd.DataFrame, truth: pd.DataFrame) -> dict[str, float]:
    """Mean and median 100 |V_pred / V - 1| at each subject's last scan, the share within +-8 %, and Spearman's rho
    between the recovered and the true rate (when known). Volumes are the measured ones of the target scans."""
    from custom.ode.metrics import spearman

    m = frame.merge(truth, on=["subject_id", "time_years"], how="left")
    last = m.loc[m.groupby("subject_id")["time_years"].idxmax()]
    last = last[np.isfinite(last["volume_ml"])]
    rel = 100.0 * (last["pred_volume_ml"] / last["volume_ml"] - 1.0).abs()
    out = {
        "n_subjects": int(len(last)),
        "rel_vol_err_pct_last": float(rel.mean()),
        "rel_vol_err_pct_last_median": float(rel.median()),
        "within_8pct_last": float((rel <= 8.0).mean()),
    }
    if "pred_a_per_year" in last:
        out["rate_spearman"] = spearman(last["pred_a_per_year"].to_numpy(), last["true_a_per_year"].to_numpy())
    return out


def forecast_frames(
    network: Any, dataset: SubjectTrajectories, k_values: Sequence[int] = (1, 2), modes: Sequence[bool] = (True, False)
) -> pd.DataFrame:
    """Frames of every k in ``k_values`` and mode (True: segmentations at the observed scans) concatenated."""
    parts = [forecast_frame(network, dataset, int(k), bool(seg)) for k in k_values for seg in modes]
    return pd.concat(parts, ignore_index=True)
