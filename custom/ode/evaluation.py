"""``evaluate.json``: score the trained hybrid forecaster on held-out subjects, in both modes, for several k.

Writes into ``output_dir``: ``forecasts_<split>.csv`` (forecast frames, :mod:`custom.ode.frames`) of the evaluation
and calibration splits, ``truth_<split>.csv``, ``metrics.json`` (last-scan summaries per method and k) and
``growth.png``. When the package's forecast statistics (``custom.forecast``: measured-volume baselines, conformal
intervals, the forecast report) are installed, it also fits those baselines on the training subjects, calibrates
intervals on the calibration split, writes the forecast report and saves the calibration next to the weights
(``<model_dir>/forecast_calibration.pkl``) for ``inference.json``; without them it says so in the log and in
``metrics.json`` (``forecast_report: null``).
"""

from __future__ import annotations

import importlib.util
import json
import logging
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
    cohort_csv: str | None = None,
    n_plot: int = 12,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """See the module docstring; returns the contents of ``metrics.json``."""
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
    report = None
    if importlib.util.find_spec("custom.forecast") is not None:
        report = forecast_report(frames, truths, eval_split, calib_split, cohort_csv, subject_data, out, model_dir)
    else:
        logger.warning(
            "custom.forecast is not installed: no measured-volume baselines, calibrated intervals or forecast report; "
            "the forecast frames are in %s",
            out,
        )
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
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    for name, row in table.items():
        logger.info(
            "%s: last-scan rel. volume error %.1f%% (n=%d)", name, row["rel_vol_err_pct_last"], row["n_subjects"]
        )
    return metrics


def forecast_report(
    frames: dict[str, pd.DataFrame],
    truths: dict[str, pd.DataFrame],
    eval_split: str,
    calib_split: str,
    cohort_csv: str | None,
    subject_data: SubjectData,
    out: Path,
    model_dir: str,
) -> Path:
    """Measured-volume baselines, conformal intervals calibrated on ``calib_split`` and the forecast report, through
    the ``custom.forecast`` API (task, baselines, conformal, report)."""
    from custom.forecast.conformal import ConformalVolumeIntervals
    from custom.forecast.report import write_forecast_report
    from custom.forecast.task import make_task
    from custom.forecast.volumetry import MEASURED_BASELINES

    if not cohort_csv or not Path(cohort_csv).exists():
        raise FileNotFoundError(f"the forecast report needs the cohort table (cohort_csv), not found: {cohort_csv}")
    cohort = pd.read_csv(cohort_csv)
    train_rows = cohort[cohort["subject_id"].isin(subject_data.subjects_by_split["train"])]
    forecasts: dict[str, pd.DataFrame] = {}
    calibrated: dict[str, Any] = {}
    for method in (HYBRID, IMAGES_ONLY):
        f_cal = frames[calib_split][frames[calib_split]["method"] == method]
        f_ev = frames[eval_split][frames[eval_split]["method"] == method]
        cal_task = make_task(cohort, sorted(f_cal["subject_id"].unique()), int(f_cal["k_obs"].min()))
        intervals = ConformalVolumeIntervals(levels=(0.8, 0.9)).fit(f_cal, cal_task.truth)
        forecasts[method] = intervals.transform(f_ev)
        calibrated[method] = intervals
    ev_subjects = sorted(frames[eval_split]["subject_id"].unique())
    for name, cls in MEASURED_BASELINES.items():
        model = cls().fit(train_rows)
        forecasts[name] = pd.concat(
            [model.predict(make_task(cohort, ev_subjects, k)) for k in sorted(frames[eval_split]["k_obs"].unique())],
            ignore_index=True,
        )
    truth = make_task(cohort, ev_subjects, int(frames[eval_split]["k_obs"].min())).truth  # every later scan
    with (Path(model_dir) / CALIBRATION_FILE).open("wb") as fh:
        pickle.dump(calibrated, fh)
    return write_forecast_report(forecasts, truth, out_dir=str(out / "forecast_report"))
