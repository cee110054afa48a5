"""``evaluate.json``: score the trained hybrid forecaster on held-out subjects, in both modes, for several k.

Writes into ``output_dir``: ``forecasts_<split>.csv`` (forecast frames, :mod:`custom.ode.frames`) of the evaluation
and calibration splits, ``truth_<split>.csv``, ``metrics.json`` (last-scan summaries per method and k) and
``growth.png``; then the measured-volume baselines on the same subjects and targets, conformal intervals calibrated
on the calibration split, and the forecast report (``forecast_report/``, :mod:`custom.forecast.evaluate`); the
forecaster's calibration is saved next to the weights (``<model_dir>/forecast_calibration.pkl``) for
``inference.json``. With the datalist of the encoded scans, forecast tumour masks and images are scored at every
target scan against copy-the-last-scan (``mask_report/``, :mod:`custom.forecast_mask.score`).
"""

from __future__ import annotations

import json
import logging
import math
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from custom.ode.frames import HYBRID, IMAGES_ONLY, forecast_frames, last_scan_summary, truth_frame
from custom.ode.hybrid import HybridGompertzForecaster, build_from_config
from custom.ode.subjects import SubjectData

logger = logging.getLogger(__name__)

CALIBRATION_FILE = "forecast_calibration.pkl"


def load_forecaster(model_dir: str | Path, device: str | torch.device = "cpu") -> HybridGompertzForecaster:
    """Rebuild the network from ``model_config.json`` and load ``model.pt`` (the best validation model)."""
    d = Path(model_dir)
    for name in ("model_config.json", "model.pt"):
        if not (d / name).exists():
            raise FileNotFoundError(f"{d / name} does not exist: train the latent_ode bundle first")
    net = build_from_config(json.loads((d / "model_config.json").read_text()))
    net.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    return net.to(device).eval()


def reference_frames(truth: pd.DataFrame, frame: pd.DataFrame) -> pd.DataFrame:
    """Two reference rows per forecast row: the noise-free law ("oracle", synthetic cohorts) and LOCF of the last
    observed measured volume ("locf_measured"), on the same subjects, k and targets as ``frame``."""
    f = frame[frame["method"] == HYBRID].drop(columns=["method"])
    keys = ["subject_id", "time_years"]
    law = f.merge(truth[keys + ["true_volume_ml"]], on=keys, how="left")
    oracle = law.assign(method="oracle", pred_volume_ml=law["true_volume_ml"]).drop(columns=["true_volume_ml"])
    last = truth.rename(columns={"time_years": "t_last_obs", "volume_ml": "last_ml"})[
        ["subject_id", "t_last_obs", "last_ml"]
    ]
    locf = f.merge(last, on=["subject_id", "t_last_obs"], how="left")
    locf = locf.assign(method="locf_measured", pred_volume_ml=locf["last_ml"]).drop(columns=["last_ml"])
    keep = [c for c in ("method", "subject_id", "k_obs", "t_last_obs", "time_years", "horizon_years", "pred_volume_ml")]
    out = pd.concat([oracle[keep], locf[keep]], ignore_index=True)
    return out[np.isfinite(out["pred_volume_ml"])]


def summary_table(frames: pd.DataFrame, truth: pd.DataFrame) -> dict[str, dict[str, float]]:
    """``"<method> (k=<k>)" -> last_scan_summary`` for every method and k in ``frames``."""
    table = {}
    for (method, k), f in frames.groupby(["method", "k_obs"], sort=False):
        table[f"{method} (k={k})"] = last_scan_summary(f, truth)
    return table


def evaluate_forecaster(
    subject_data: SubjectData,
    model_dir: str,
    output_dir: str,
    k_values: Sequence[int] = (1, 2),
    eval_split: str = "test",
    calib_split: str = "validation",
    n_plot: int = 12,
    device: str | torch.device = "cpu",
    datalist: str | None = None,
    encoder_bundle: str | None = None,
    forecast_masks: bool = True,
    mask_method: str = "ranked",
    mask_tie_break: str = "smooth",
) -> dict[str, Any]:
    """See the module docstring; returns the contents of ``metrics.json``.

    ``datalist`` (the encoded scans' datalist) and ``forecast_masks`` turn on the mask and image scores;
    ``encoder_bundle`` (its trained decoder) adds the image forecasts to them; ``mask_method`` / ``mask_tie_break``
    pick the forecast mask (:func:`custom.forecast_mask.level_set.forecast_mask`)."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    net = load_forecaster(model_dir, device)
    ev, cal = subject_data.dataset(eval_split), subject_data.dataset(calib_split)
    k_values = [int(k) for k in k_values]
    frames = {s: forecast_frames(net, d, k_values) for s, d in ((eval_split, ev), (calib_split, cal))}
    truths = {eval_split: truth_frame(ev), calib_split: truth_frame(cal)}
    for s in frames:
        frames[s].to_csv(out / f"forecasts_{s}.csv", index=False)
        truths[s].to_csv(out / f"truth_{s}.csv", index=False)
    scored = pd.concat(
        [frames[eval_split], reference_frames(truths[eval_split], frames[eval_split])], ignore_index=True
    )
    table = summary_table(scored, truths[eval_split])
    report = forecast_report(frames, eval_split, calib_split, subject_data, out, model_dir)
    example = str(frames[eval_split]["subject_id"].iloc[0])
    from custom.ode.plots import hybrid_growth_rows
    from custom.plots.growth import plot_growth

    rows = hybrid_growth_rows(net, ev, k_obs=max(k_values), n_subjects=n_plot)
    plot_growth(rows, out / "growth.png", title=f"hybrid forecasts from the first {max(k_values)} scans ({eval_split})")
    metrics = {
        "table": table,
        "split": eval_split,
        "calibration_split": calib_split,
        "k_values": k_values,
        "methods": {HYBRID: "segmentations at the observed scans", IMAGES_ONLY: "images only (read-out ln V)"},
        "readout_sd": float(net.readout_sd),
        "sigma_meas": float(torch.exp(net.log_sigma_meas)),
        "n_subjects_eval": int(frames[eval_split]["subject_id"].nunique()),
        "rel_vol_err_pct_last": table.get(f"{HYBRID} (k={max(k_values)})", {}).get("rel_vol_err_pct_last"),
        "forecast_report": None if report is None else str(report),
        "example_subject": example,
        "forecast_masks": mask_report(
            net,
            ev,
            frames[eval_split],
            datalist,
            encoder_bundle,
            forecast_masks,
            k_values,
            out,
            mask_method,
            mask_tie_break,
        ),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    for name, row in table.items():
        logger.info(
            "%s: last-scan rel. volume error %.1f%% (n=%d)", name, row["rel_vol_err_pct_last"], row["n_subjects"]
        )
    return metrics


def mask_report(
    net: HybridGompertzForecaster,
    dataset: Any,
    frame: pd.DataFrame,
    datalist: str | None,
    encoder_bundle: str | None,
    enabled: bool,
    k_values: Sequence[int],
    out: Path,
    mask_method: str = "ranked",
    tie_break: str = "smooth",
) -> dict[str, Any] | None:
    """Forecast masks and images scored against copy-the-last-scan (``out/mask_report``); None, with the reason
    logged, when turned off or when the scans' datalist is not available (e.g. a trajectories file made elsewhere)."""
    from custom.forecast_mask.score import score_forecast_masks, summarise, write_mask_report, write_subject_figures
    from custom.utils import as_bool

    if not as_bool(enabled):
        return None
    if not datalist or not Path(datalist).is_file() or not dataset.items[0]["case_id"]:
        logger.info("forecast masks not scored: the scans' datalist %s is not available", datalist)
        return None
    decoder = encoder_bundle if encoder_bundle and (Path(encoder_bundle) / "models" / "model.pt").exists() else None
    if decoder is None:
        logger.info("forecast images not scored: encoder bundle %s has no trained weights", encoder_bundle)
    kw = {"mask_method": mask_method, "tie_break": tie_break}
    scores = score_forecast_masks(net, dataset, frame, datalist, decoder, k_values, **kw)
    written = write_mask_report(scores, summarise(scores), out / "mask_report")
    figures = write_subject_figures(scores, dataset, frame, datalist, out / "mask_report", max(k_values), **kw)
    return written | {"figures": figures}


def scan_table(subject_data: SubjectData, splits: Sequence[str] = ("train", "validation", "test")) -> pd.DataFrame:
    """The cohort table of the scans the forecaster sees (one row per scan with a measured volume): subject_id,
    time_years (since the subject's first scan), volume_ml, target_volume_ml (noise-free law, synthetic cohorts),
    growth_class and the true law, so that the measured-volume baselines get exactly the forecaster's tasks."""
    rows = []
    for split in splits:
        for it in subject_data.dataset(split).items:
            tr = it["truth"]
            t_first = float(it["t"][0])
            for tt, lv in zip(it["t"].tolist(), it["logv_measured"].tolist()):
                if not np.isfinite(lv):
                    continue
                law = math.nan
                if all(np.isfinite([tr["V0_ml"], tr["a_per_year"], tr["K_ml"]])):
                    law = tr["K_ml"] * math.exp(math.log(tr["V0_ml"] / tr["K_ml"]) * math.exp(-tr["a_per_year"] * tt))
                rows.append(
                    {
                        "subject_id": it["subject_id"],
                        "time_years": float(tt) - t_first,
                        "volume_ml": math.exp(lv),
                        "target_volume_ml": law,
                        "growth_class": it["growth_class"],
                        "true_a_per_year": tr["a_per_year"],
                        "true_V0_ml": tr["V0_ml"],
                        "true_K_ml": tr["K_ml"],
                    }
                )
    return pd.DataFrame(rows)


def forecast_report(
    frames: dict[str, pd.DataFrame],
    eval_split: str,
    calib_split: str,
    subject_data: SubjectData,
    out: Path,
    model_dir: str,
    n_boot: int = 1000,
) -> Path:
    """The hybrid and images-only forecasts beside the measured-volume baselines on the same subjects and targets
    (:func:`custom.forecast.evaluate.evaluate_forecasts`: baselines fitted on the training subjects, every method
    calibrated on ``calib_split``, scored on ``eval_split``); the forecaster's calibrators are saved next to the
    weights for ``inference.json``."""
    from custom.forecast.evaluate import evaluate_forecasts

    table = scan_table(subject_data)
    splits = {
        "training": subject_data.subjects_by_split["train"],
        "validation": sorted(frames[calib_split]["subject_id"].unique()),
        "test": sorted(frames[eval_split]["subject_id"].unique()),
    }
    ks = sorted(int(k) for k in frames[eval_split]["k_obs"].unique())
    extra = {
        m: {
            "validation": frames[calib_split][frames[calib_split]["method"] == m],
            "test": frames[eval_split][frames[eval_split]["method"] == m],
        }
        for m in (HYBRID, IMAGES_ONLY)
    }
    if subject_data.seg_log_volume is not None:  # seg_volumes_file: baselines on the segmented volumes too
        from custom.ode.seg_volumes import segmented_baseline_frames

        train = table[table["subject_id"].isin(set(splits["training"]))]
        extra |= segmented_baseline_frames(subject_data, train, splits, ks)
    result = evaluate_forecasts(
        table,
        splits,
        ks,
        out / "forecast_report",
        extra=extra,
        n_boot=n_boot,
        notes=[f"latent_ode evaluation: {eval_split} subjects scored, {calib_split} subjects calibrate the intervals."],
        title="latent_ode: volume forecasts against measured-volume baselines",
    )
    with (Path(model_dir) / CALIBRATION_FILE).open("wb") as fh:
        pickle.dump({m: result.calibrators[m] for m in (HYBRID, IMAGES_ONLY)}, fh)
    return Path(result.report)
