"""``python -m custom forecast-baselines``: measured-volume baselines on a cohort table, scored on test subjects.

Subjects are split with :func:`custom.data.datalist.split_subjects` (training / validation / test); every baseline
is fitted on the training subjects' full trajectories, its conformal intervals and growth probabilities are
calibrated on the validation subjects' forecasts, and the test subjects' forecasts are scored and reported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pandas as pd

from custom.data.datalist import split_subjects
from custom.forecast.conformal import HORIZON_EDGES_YEARS
from custom.forecast.evaluate import evaluate_forecasts
from custom.forecast.report import summary_table
from custom.forecast.task import check_cohort, make_task
from custom.forecast.volumetry import MEASURED_BASELINES


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
    for name, subj in (("validation", val), ("test", test)):
        for k in ks:
            task = make_task(table, subj, k)
            if task.no_target_subjects:
                print(f"{name} k_obs={k}: {len(task.no_target_subjects)} subject(s) have no scan to forecast")
    result = evaluate_forecasts(
        table,
        {"training": train, "validation": val, "test": test},
        ks,
        out,
        baselines=names,
        n_boot=n_boot,
        seed=seed,
        normalise=normalise,
        horizon_edges=edges,
        eb_prior=eb_prior,
        notes=[f"Cohort `{path.name}` (split seed {seed})."],
    )
    for name, t in result.run["timings"].items():
        print(f"{name}: fit {t['fit_s']:.1f} s, predict {t['predict_s']:.1f} s")
    scores, report = result.scores, result.report
    run_json = Path(out) / "run.json"
    run_json.write_text(json.dumps({"cohort": str(path), **result.run}, indent=2) + "\n")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary_table(scores, "last", ("all",)).to_string(index=False))
    print(f"report: {report}")
    return report
