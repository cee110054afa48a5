"""The forecast task: the first ``k_obs`` scans of each subject are observed, every later scan is a target.

Frames (pandas):

* ``observed``: ``subject_id, k_obs, time_years, volume_ml`` of the first ``k_obs`` scans (time-ordered).
* ``targets``: ``subject_id, k_obs, t_last_obs, time_years, horizon_years`` (= ``time_years - t_last_obs``) and
  ``last_obs_volume_ml`` (measured volume of the last observed scan, for growth probabilities).
* ``truth``: ``subject_id, k_obs, time_years, volume_ml`` (measured at the target scan: what forecasts are scored
  against), ``true_volume_ml`` (noise-free law volume, NaN when the cohort has none), ``growth_class``,
  ``true_a_per_year``, ``true_V0_ml``, ``true_K_ml`` (NaN when unknown), ``last_obs_volume_ml`` and ``last_obs_true_volume_ml`` (noise-free volume at the last
  observed scan, NaN when unknown).

Subjects with no scan after the first ``k_obs`` have nothing to forecast; they are listed in
``ForecastTask.no_target_subjects`` (never silently dropped: the caller reports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import pandas as pd

#: Columns a cohort table must have for forecasting.
REQUIRED_COLUMNS: tuple[str, ...] = ("subject_id", "time_years", "volume_ml")


@dataclass
class ForecastTask:
    """Observed scans, target scans and truth of one ``k_obs`` (see the module docstring for the columns)."""

    k_obs: int
    observed: pd.DataFrame
    targets: pd.DataFrame
    truth: pd.DataFrame
    no_target_subjects: list[str] = field(default_factory=list)


def check_cohort(cohort: pd.DataFrame, source: str = "the cohort table") -> pd.DataFrame:
    """Validate the columns and values forecasting relies on; returns a copy with ``subject_id`` as str, sorted.

    Raises ``ValueError`` (one sentence naming the case) for missing columns, non-finite times, non-positive or
    non-finite volumes, and repeated scan times within a subject.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in cohort.columns]
    if missing:
        raise ValueError(f"{source} lacks the column(s) {missing} that forecasting needs")
    df = cohort.copy()
    df["subject_id"] = df["subject_id"].astype(str)
    t = pd.to_numeric(df["time_years"], errors="coerce")
    v = pd.to_numeric(df["volume_ml"], errors="coerce")
    bad_t = df.loc[~np.isfinite(t), "subject_id"].unique()
    if len(bad_t):
        raise ValueError(f"{source} has non-numeric or non-finite time_years for subject(s) {list(bad_t[:5])}")
    bad_v = df.loc[~(np.isfinite(v) & (v > 0)), "subject_id"].unique()
    if len(bad_v):
        raise ValueError(f"{source} has a missing, zero or negative volume_ml for subject(s) {list(bad_v[:5])}")
    df["time_years"], df["volume_ml"] = t.astype(float), v.astype(float)
    dup = df.duplicated(["subject_id", "time_years"])
    if dup.any():
        raise ValueError(
            f"{source} has two scans at the same time for subject(s) {list(df.loc[dup, 'subject_id'][:5])}"
        )
    return df.sort_values(["subject_id", "time_years"], kind="stable").reset_index(drop=True)


def _column_or_nan(df: pd.DataFrame, name: str) -> pd.Series:
    return pd.to_numeric(df[name], errors="coerce") if name in df.columns else pd.Series(np.nan, index=df.index)


def make_task(cohort: pd.DataFrame, subjects: Sequence[str], k_obs: int) -> ForecastTask:
    """Build the forecast task of ``subjects``: first ``k_obs`` scans observed, later scans targets.

    Args:
        cohort: one row per scan with at least ``subject_id, time_years, volume_ml``; optional
            ``target_volume_ml`` (noise-free law volume), ``growth_class``, ``true_a_per_year``.
        subjects: subject ids to include (every one must be in ``cohort``).
        k_obs: number of observed scans (>= 1).

    Returns:
        :class:`ForecastTask`.
    """
    if int(k_obs) != k_obs or k_obs < 1:
        raise ValueError(f"k_obs must be a positive integer, got {k_obs!r}")
    k_obs = int(k_obs)
    df = check_cohort(cohort)
    wanted = [str(s) for s in subjects]
    unknown = sorted(set(wanted) - set(df["subject_id"]))
    if unknown:
        raise ValueError(f"subjects {unknown[:5]} are not in the cohort table")
    df = df[df["subject_id"].isin(set(wanted))].copy()
    df["_rank"] = df.groupby("subject_id").cumcount()
    n_scans = df.groupby("subject_id")["_rank"].transform("size")
    too_few = sorted(df.loc[n_scans < k_obs, "subject_id"].unique())
    if too_few:
        raise ValueError(f"subject(s) {too_few[:5]} have fewer than k_obs={k_obs} scans")
    df["_true"] = _column_or_nan(df, "target_volume_ml")

    obs = df[df["_rank"] < k_obs]
    last = obs.groupby("subject_id").last()
    observed = obs[["subject_id", "time_years", "volume_ml"]].assign(k_obs=k_obs).reset_index(drop=True)
    observed = observed[["subject_id", "k_obs", "time_years", "volume_ml"]]

    tgt = df[df["_rank"] >= k_obs].copy()
    tgt["k_obs"] = k_obs
    tgt["t_last_obs"] = tgt["subject_id"].map(last["time_years"])
    tgt["horizon_years"] = tgt["time_years"] - tgt["t_last_obs"]
    tgt["last_obs_volume_ml"] = tgt["subject_id"].map(last["volume_ml"])
    tgt = tgt.reset_index(drop=True)
    targets = tgt[["subject_id", "k_obs", "t_last_obs", "time_years", "horizon_years", "last_obs_volume_ml"]].copy()
    truth = pd.DataFrame(
        {
            "subject_id": tgt["subject_id"],
            "k_obs": k_obs,
            "time_years": tgt["time_years"],
            "volume_ml": tgt["volume_ml"],
            "true_volume_ml": tgt["_true"],
            "growth_class": tgt["growth_class"].astype(str) if "growth_class" in tgt else "unknown",
            "true_a_per_year": _column_or_nan(tgt, "true_a_per_year"),
            "true_V0_ml": _column_or_nan(tgt, "true_V0_ml"),
            "true_K_ml": _column_or_nan(tgt, "true_K_ml"),
            "last_obs_volume_ml": tgt["last_obs_volume_ml"],
            "last_obs_true_volume_ml": tgt["subject_id"].map(last["_true"]),
        }
    )
    no_target = sorted(set(wanted) - set(targets["subject_id"]))
    return ForecastTask(k_obs=k_obs, observed=observed, targets=targets, truth=truth, no_target_subjects=no_target)
