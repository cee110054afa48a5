"""``python -m custom forecast-baselines``: measured-volume baselines on a cohort table, scored on test subjects.

Subjects are split with :func:`custom.data.datalist.split_subjects` (training / validation / test); every baseline
is fitted on the training subjects' full trajectories, its conformal intervals and growth probabilities are
calibrated on the validation subjects' forecasts, and the test subjects' forecasts are scored and reported.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Sequence

import pandas as pd

from custom.data.datalist import split_subjects
from custom.forecast.conformal import HORIZON_EDGES_YEARS, ConformalVolumeIntervals
from custom.forecast.report import score_forecasts, summary_table, write_forecast_report
from custom.forecast.task import check_cohort, make_task
from custom.forecast.volumetry import MEASURED_BASELINES, Oracle


def parse_ints(value: str | int | Sequence[int]) -> list[int]:
    """``"1,2"`` / ``(1, 2)`` / ``2`` -> ``[1, 2]`` / ``[2]``."""
    if isinstance(value, str):
        return [int(v) for v in value.split(",") if v.strip()]
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def parse_edges(value: str | float | Sequence[float] | None) -> tuple[float, ...] | None:
    """``"1,2,3"`` / ``(1, 2, 3)`` / ``2`` -> sorted edges; ``None`` or ``"none"`` -> ``None`` (no horizon bins)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "")):
        return None
    if isinstance(value, str):
        items = [v for v in value.split(",") if v.strip()]
    elif isinstance(value, (int, float)):
        items = [value]
    else:
        items = list(value)
    try:
        return tuple(sorted(float(v) for v in items))
    except ValueError:
        raise ValueError(f"horizon_edges must be numbers separated by commas or 'none', got {value!r}") from None


def run_forecast_baselines(
    cohort: str,
    out: str,
    k_obs: str | Sequence[int] = "1,2",
    seed: int = 0,
    split: Sequence[float] = (0.7, 0.15, 0.15),
    n_boot: int = 1000,
    normalise: str = "auto",
    methods: Sequence[str] | None = None,
    horizon_edges: str | Sequence[float] | None = HORIZON_EDGES_YEARS,
    eb_prior: str = "mom",
) -> str:
    """Fit, calibrate, score and report; returns the path of ``report.md``.

    Conformal categories are (k_obs, horizon bin) with ``horizon_edges`` (years; ``None``/``"none"`` pools the
    horizons); ``eb_prior`` is ``EBGompertz(prior_method=...)``.
    """
    edges = parse_edges(horizon_edges)
    path = Path(cohort)
    if not path.is_file():
        raise FileNotFoundError(f"cohort table {path} does not exist")
    table = check_cohort(pd.read_csv(path), str(path))
    ks = parse_ints(k_obs)
    names = list(methods) if methods is not None else list(MEASURED_BASELINES)
    unknown = [m for m in names if m not in MEASURED_BASELINES]
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; choose from {sorted(MEASURED_BASELINES)}")
    train, val, test = split_subjects(table["subject_id"].unique().tolist(), split, seed)
    if not (train and val and test):
        raise ValueError(f"{path} has too few subjects for a training / validation / test split ({len(table)} rows)")
    train_rows = table[table["subject_id"].isin(set(train))]
    tasks = {name: {k: make_task(table, subj, k) for k in ks} for name, subj in (("val", val), ("test", test))}
    for name, by_k in tasks.items():
        for k, task in by_k.items():
            if task.no_target_subjects:
                print(f"{name} k_obs={k}: {len(task.no_target_subjects)} subject(s) have no scan to forecast")
            if task.targets.empty:
                raise ValueError(f"{path}: no {name} subject has a scan after its first {k} (k_obs={k})")
    truth = {name: pd.concat([t.truth for t in by_k.values()], ignore_index=True) for name, by_k in tasks.items()}
    has_truth = all(c in table and table[c].notna().all() for c in ("true_V0_ml", "true_a_per_year", "true_K_ml"))
    models = {m: MEASURED_BASELINES[m](**({"prior_method": eb_prior} if m == "EBGompertz" else {})) for m in names}
    models |= {"Oracle": Oracle()} if has_truth else {}
    forecasts, timings, calibration = {}, {}, {}
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(train_rows)
        t1 = time.perf_counter()
        pred = {s: pd.concat([model.predict(t) for t in tasks[s].values()], ignore_index=True) for s in tasks}
        t2 = time.perf_counter()
        cal = ConformalVolumeIntervals(normalise=normalise, horizon_edges=edges).fit(pred["val"], truth["val"])
        forecasts[name] = cal.transform(pred["test"])
        timings[name] = {"fit_s": round(t1 - t0, 2), "predict_s": round(t2 - t1, 2), "normalise": cal.normaliser_}
        calibration[name] = {f"k{k} h({lo}, {hi}]": n for (k, lo, hi), n in cal.n_calib_.items()}
        print(f"{name}: fit {t1 - t0:.1f} s, predict {t2 - t1:.1f} s, conformal sigma = {cal.normaliser_}")
    scores = score_forecasts(forecasts, truth["test"], n_boot=n_boot, seed=seed)
    observed = pd.concat([t.observed for t in tasks["test"].values()], ignore_index=True)
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    pd.concat(forecasts.values(), ignore_index=True).to_csv(outdir / "forecasts.csv", index=False)
    run = {
        "cohort": str(path),
        "subjects": {"training": len(train), "validation": len(val), "test": len(test)},
        "k_obs": ks,
        "seed": seed,
        "n_boot": n_boot,
        "timings": timings,
        "horizon_edges": list(edges) if edges is not None else None,
        "eb_prior": eb_prior,
        "calibration_scores": calibration,
    }
    (outdir / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    notes = [
        f"Cohort `{path.name}`: {len(train)} training / {len(val)} validation / {len(test)} test subjects "
        f"(split seed {seed}); k_obs = {ks}.",
        "Conformal intervals and growth probabilities: calibrated per (k_obs, horizon bin) "
        + (f"with bin edges {list(edges)} years" if edges is not None else "over all horizons of each k_obs")
        + " after the last observed scan (bins with fewer than 30 validation scores merged; counts in run.json).",
    ]
    report = write_forecast_report(
        scores, outdir, forecasts=forecasts, observed=observed, notes=notes, interval_method=names[0]
    )
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary_table(scores, "last", ("all",)).to_string(index=False))
    print(f"report: {report}")
    return report
