"""Segmented tumour volumes for scans without a reference segmentation (latent_ode's ``seg_volumes_file``).

The tumour_seg bundle's inference writes ``seg_volumes.csv`` (one row per scan: ``subject_id``, ``case_id``, ...,
``volume_ml``, ``log_volume`` = ln mL of labels 1 + 3, the latent_ode's measured-volume scale). Where the forecaster
treats a scan as images-only, it then observes this ln V with noise sd sigma_seg instead of the latent read-out ln V
with sigma_read. Without a given sd, sigma_seg is estimated on the held-out validation scans (the segmentation
network never trained on them) that also have a measured volume:

    sigma_seg = sqrt( mean_{validation scans} (ln V_seg - ln V_measured)^2 ).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from custom.data.errors import DataValidationError

REQUIRED_COLUMNS: tuple[str, ...] = ("subject_id", "case_id", "log_volume")


def read_seg_log_volumes(path: str | Path, case_ids: Sequence[str], subject_ids: Sequence[str]) -> np.ndarray:
    """ln V (ln mL) per scan of ``case_ids`` from ``path``; nan where the mask is empty (volume 0).

    A scan that the file does not list is a :class:`DataValidationError` naming its subject, its scan and the file.
    """
    p = Path(path)
    if not p.is_file():
        raise DataValidationError(f"seg_volumes_file {p} does not exist: run the tumour_seg bundle's inference.json")
    table = pd.read_csv(p, dtype={"subject_id": str, "case_id": str})
    missing_cols = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing_cols:
        raise DataValidationError(f"seg_volumes_file {p} has no column(s) {', '.join(missing_cols)}")
    logv = dict(zip(table["case_id"], pd.to_numeric(table["log_volume"], errors="coerce")))
    out = np.full(len(case_ids), math.nan)
    for i, (case, subject) in enumerate(zip(case_ids, subject_ids)):
        if case not in logv:
            raise DataValidationError(
                f"subject {subject}: scan {case} is not in seg_volumes_file {p}; run the tumour_seg inference on "
                "every scan of the datalist"
            )
        out[i] = float(logv[case])
    return out


def seg_noise_sd(seg_logv: np.ndarray, measured_logv: np.ndarray, split: np.ndarray, source: str) -> float:
    """sigma_seg on the validation scans (module docstring); a clear error when fewer than 2 can be compared."""
    keep = (np.asarray(split) == "validation") & np.isfinite(seg_logv) & np.isfinite(measured_logv)
    if keep.sum() < 2:
        raise DataValidationError(
            f"{source}: fewer than 2 validation scans have both a segmented and a measured volume, so the "
            "segmentation noise sd cannot be estimated; give seg_volumes_sd"
        )
    return float(np.sqrt(np.mean((seg_logv[keep] - measured_logv[keep]) ** 2)))
