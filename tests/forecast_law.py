"""Cohort-like tables (one row per scan) drawn from the closed-form Gompertz law, for the forecast tests."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from custom.synth.growth import gompertz_volume, noisy_volume, sample_growth, sample_scan_times

#: Protocol follow-up schedule (years).
PROTOCOL_TIMES: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0)


def law_cohort(
    n_subjects: int,
    seed: int = 0,
    mode: str = "realistic",
    timepoints: int = 4,
    times: Sequence[float] | None = None,
    noise_sd: float = 0.05,
) -> pd.DataFrame:
    """Subjects from ``sample_growth``; scans at ``times`` (or irregular ``sample_scan_times``) with log-normal noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_subjects):
        p = sample_growth(rng, mode)
        ts = np.asarray(times, dtype=float) if times is not None else sample_scan_times(rng, timepoints)
        for j, t in enumerate(ts):
            v_true = float(gompertz_volume(t, p.v0_ml, p.a_per_year, p.k_ml))
            v = noisy_volume(rng, v_true, noise_sd) if noise_sd > 0 else v_true
            rows.append(
                {
                    "case_id": f"S{i:05d}_{j}",
                    "subject_id": f"S{i:05d}",
                    "timepoint": j,
                    "time_years": float(t),
                    "volume_ml": v,
                    "log_volume": np.log(v),
                    "true_V0_ml": p.v0_ml,
                    "true_a_per_year": p.a_per_year,
                    "true_K_ml": p.k_ml,
                    "growth_class": p.growth_class,
                    "target_volume_ml": v_true,
                }
            )
    return pd.DataFrame(rows)
