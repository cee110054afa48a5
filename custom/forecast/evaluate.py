"""One evaluation of volume forecasts: measured-volume baselines beside any other forecaster, on the same subjects.

Every baseline of :data:`~custom.forecast.volumetry.MEASURED_BASELINES` (and the oracle when the table holds the
true law) is fitted on the training subjects' full trajectories and predicts the validation and test subjects from
their first ``k`` measured volumes. Forecasters made elsewhere (the latent ODE bundle's hybrid and images-only
forecasts) come in as forecast frames for the same validation and test tasks. Each method's conformal intervals and
growth probabilities are calibrated on its own validation forecasts, per (k_obs, horizon bin); the test forecasts
are then scored together (:func:`~custom.forecast.report.score_forecasts`) and reported.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from custom.forecast.conformal import HORIZON_EDGES_YEARS, ConformalVolumeIntervals
from custom.forecast.report import score_forecasts, write_forecast_report
from custom.forecast.task import ForecastTask, make_task
from custom.forecast.volumetry import MEASURED_BASELINES, Oracle

logger = logging.getLogger(__name__)


@dataclass
class ForecastEvaluation:
    """What :func:`evaluate_forecasts` produced: the report, the scores, the calibrated test forecasts, and the
    fitted interval calibrators (one per method, reusable at inference)."""

    report: str
    scores: dict[str, pd.DataFrame]
    forecasts: dict[str, pd.DataFrame]
    calibrators: dict[str, ConformalVolumeIntervals]
    run: dict[str, Any] = field(default_factory=dict)


def make_tasks(table: pd.DataFrame, subjects: Sequence[str], ks: Sequence[int]) -> dict[int, ForecastTask]:
    """One forecast task per number of observed scans."""
    return {k: make_task(table, list(subjects), k) for k in ks}


def with_last_observed(frame: pd.DataFrame, tasks: Mapping[int, ForecastTask], method: str) -> pd.DataFrame:
    """``frame`` with the tasks' ``last_obs_volume_ml`` (the measured volume growth probabilities refer to) joined on
    (subject, k_obs, target time); a forecast row that is not one of the tasks' targets is an error."""
    targets = pd.concat([t.targets for t in tasks.values()], ignore_index=True)
    keys = ["subject_id", "k_obs", "time_years"]
    f = frame.drop(columns=["last_obs_volume_ml"], errors="ignore").copy()
    f["subject_id"] = f["subject_id"].astype(str)
    f["k_obs"] = f["k_obs"].astype(int)
    t = targets[keys + ["last_obs_volume_ml"]].copy()
    f["_t"], t["_t"] = f["time_years"].round(6), t["time_years"].round(6)
    joined = f.merge(t.drop(columns=["time_years"]), on=["subject_id", "k_obs", "_t"], how="left")
    missing = joined["last_obs_volume_ml"].isna()
    if missing.any():
        row = joined.loc[missing].iloc[0]
        raise ValueError(
            f"{method}: {int(missing.sum())} forecast row(s) are not targets of the evaluation tasks, e.g. subject "
            f"{row['subject_id']} k_obs={row['k_obs']} at {row['time_years']:.3f} years"
        )
    return joined.drop(columns=["_t"])


def evaluate_forecasts(
    table: pd.DataFrame,
    splits: Mapping[str, Sequence[str]],
    ks: Sequence[int],
    out: str | Path,
    extra: Mapping[str, Mapping[str, pd.DataFrame]] | None = None,
    baselines: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    normalise: str = "auto",
    horizon_edges: Sequence[float] | None = HORIZON_EDGES_YEARS,
    eb_prior: str = "mom",
    notes: Sequence[str] = (),
    title: str = "Volume forecasts on held-out subjects",
) -> ForecastEvaluation:
    """Fit the baselines, calibrate every method on ``splits["validation"]``, score ``splits["test"]``, write the report.

    Args:
        table: the cohort table (one row per scan; :func:`custom.forecast.task.check_cohort`).
        splits: subject ids of ``"training"``, ``"validation"`` and ``"test"``.
        ks: numbers of observed scans (each subject's first k).
        out: report folder.
        extra: other forecasters, ``{method: {"validation": frame, "test": frame}}``; their frames must hold the
            same tasks' targets (subject, k_obs, target time).
        baselines: names from :data:`MEASURED_BASELINES` (default all).
    """
    names = list(baselines) if baselines is not None else list(MEASURED_BASELINES)
    unknown = [m for m in names if m not in MEASURED_BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(MEASURED_BASELINES)}")
    for key in ("training", "validation", "test"):
        if not splits.get(key):
            raise ValueError(f"the forecast evaluation needs {key} subjects; the split has none")
    tasks = {s: make_tasks(table, splits[s], ks) for s in ("validation", "test")}
    for s, by_k in tasks.items():
        for k, task in by_k.items():
            if task.targets.empty:
                raise ValueError(f"no {s} subject has a scan after its first {k} (k_obs={k})")
    truth = {s: pd.concat([t.truth for t in by_k.values()], ignore_index=True) for s, by_k in tasks.items()}
    train_rows = table[table["subject_id"].isin(set(splits["training"]))]
    has_truth = all(c in table and table[c].notna().all() for c in ("true_V0_ml", "true_a_per_year", "true_K_ml"))
    models = {m: MEASURED_BASELINES[m](**({"prior_method": eb_prior} if m == "EBGompertz" else {})) for m in names}
    models |= {"Oracle": Oracle()} if has_truth else {}
    predictions: dict[str, dict[str, pd.DataFrame]] = {}
    timings: dict[str, dict[str, float]] = {}
    not_fitted: dict[str, str] = {}
    for name, model in models.items():
        t0 = time.perf_counter()
        try:
            model.fit(train_rows)
        except ValueError as err:  # e.g. too few scans per training subject for this baseline: said in the report
            not_fitted[name] = str(err)
            logger.warning("%s is left out of the forecast report: %s", name, err)
            continue
        t1 = time.perf_counter()
        predictions[name] = {
            s: pd.concat([model.predict(t) for t in tasks[s].values()], ignore_index=True) for s in tasks
        }
        timings[name] = {"fit_s": round(t1 - t0, 2), "predict_s": round(time.perf_counter() - t1, 2)}
    for name, frames in (extra or {}).items():
        predictions[name] = {s: with_last_observed(frames[s], tasks[s], name) for s in ("validation", "test")}
    forecasts: dict[str, pd.DataFrame] = {}
    calibrators: dict[str, ConformalVolumeIntervals] = {}
    calibration: dict[str, dict[str, int]] = {}
    for name, pred in predictions.items():
        cal = ConformalVolumeIntervals(normalise=normalise, horizon_edges=horizon_edges)
        cal.fit(pred["validation"], truth["validation"])
        forecasts[name] = cal.transform(pred["test"])
        calibrators[name] = cal
        calibration[name] = {f"k{k} h({lo}, {hi}]": n for (k, lo, hi), n in cal.n_calib_.items()}
    scores = score_forecasts(forecasts, truth["test"], n_boot=n_boot, seed=seed)
    observed = pd.concat([t.observed for t in tasks["test"].values()], ignore_index=True)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    pd.concat(forecasts.values(), ignore_index=True).to_csv(outdir / "forecasts.csv", index=False)
    run = {
        "subjects": {s: len(splits[s]) for s in ("training", "validation", "test")},
        "k_obs": list(ks),
        "seed": seed,
        "n_boot": n_boot,
        "timings": timings,
        "horizon_edges": list(horizon_edges) if horizon_edges is not None else None,
        "eb_prior": eb_prior,
        "calibration_scores": calibration,
        "not_fitted": not_fitted,
    }
    (outdir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    notes = (
        list(notes)
        + [
            f"{len(splits['training'])} training / {len(splits['validation'])} validation / {len(splits['test'])} test "
            f"subjects; k_obs = {list(ks)}.",
            "Conformal intervals and growth probabilities: calibrated per (k_obs, horizon bin) "
            + (f"with bin edges {list(horizon_edges)} years" if horizon_edges is not None else "over all horizons")
            + " after the last observed scan, on each method's own validation forecasts (bins with fewer than 30 "
            "validation scores merged; counts in run.json).",
        ]
        + [
            f"**{name} is not in the tables**: it could not be fitted on this cohort ({why})."
            for name, why in not_fitted.items()
        ]
    )
    interval_method = next(iter(extra)) if extra else (names[0] if names else None)
    report = write_forecast_report(
        scores,
        outdir,
        forecasts=forecasts,
        observed=observed,
        notes=notes,
        interval_method=interval_method,
        title=title,
    )
    return ForecastEvaluation(report=report, scores=scores, forecasts=forecasts, calibrators=calibrators, run=run)
