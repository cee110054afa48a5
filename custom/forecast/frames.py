"""Column names of the forecast frame and the functions that build it from a task's targets."""

from __future__ import annotations

import numpy as np
import pandas as pd

#: Columns every forecast frame has (one row per (method, subject, k_obs, target scan)).
FORECAST_REQUIRED: tuple[str, ...] = (
    "subject_id",
    "k_obs",
    "t_last_obs",
    "time_years",
    "horizon_years",
    "pred_volume_ml",
)
#: Optional columns, used where present.
FORECAST_OPTIONAL: tuple[str, ...] = (
    "lo80_ml",
    "hi80_ml",
    "lo90_ml",
    "hi90_ml",
    "p_growth15",
    "p_prog40",
    "pred_a_per_year",
    "pred_sd_log",
)


def forecast_frame(
    targets: pd.DataFrame,
    method: str,
    log_volume: np.ndarray,
    sd_log: np.ndarray | None = None,
    a_per_year: np.ndarray | None = None,
) -> pd.DataFrame:
    """Forecast frame of ``targets`` (a task's targets, row-aligned with the arrays) for one method."""
    out = targets.copy()
    out.insert(0, "method", method)
    out["pred_volume_ml"] = np.exp(np.asarray(log_volume, dtype=float))
    if sd_log is not None:
        out["pred_sd_log"] = np.asarray(sd_log, dtype=float)
    if a_per_year is not None:
        out["pred_a_per_year"] = np.asarray(a_per_year, dtype=float)
    return out.reset_index(drop=True)


def check_forecast(forecast: pd.DataFrame, name: str = "forecast") -> None:
    """Raise ``ValueError`` naming the first missing column or non-positive prediction of a forecast frame."""
    missing = [c for c in FORECAST_REQUIRED if c not in forecast.columns]
    if missing:
        raise ValueError(f"{name} frame lacks the required column(s) {missing}")
    v = forecast["pred_volume_ml"].to_numpy(dtype=float)
    if not np.all(np.isfinite(v) & (v > 0)):
        raise ValueError(f"{name} frame has non-finite or non-positive pred_volume_ml")
