"""Segmented tumour volumes for scans without a reference segmentation (latent_ode's ``seg_volumes_file``).

The tumour_seg bundle's inference writes ``seg_volumes.csv`` (one row per scan: ``subject_id``, ``case_id``, ...,
``volume_ml``, ``log_volume`` = ln mL of labels 1 + 3, the latent_ode's measured-volume scale). Where the forecaster
treats a scan as images-only, it then observes this ln V with noise sd sigma_seg instead of the latent read-out ln V
with sigma_read. Without a given sd, sigma_seg is estimated on the held-out validation scans (the segmentation
network never trained on them) that also have a measured volume:

    sigma_seg = sqrt( mean_{validation scans} (ln V_seg - ln V_measured)^2 ).

The evaluation also runs measured-volume baselines on the segmented volumes (:func:`segmented_baseline_frames`), so
that the images-only forecast is compared with what automatic segmentation alone gives.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from custom.data.errors import DataValidationError

logger = logging.getLogger(__name__)

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


#: measured-volume baselines that are also run on the segmented volumes, and the method names they get there
SEGMENTED_BASELINES: dict[str, str] = {"EBGompertz": "EBGompertz (segmented)", "LOCF": "LOCF (segmented)"}


def segmented_scan_table(subject_data, splits: Sequence[str]) -> pd.DataFrame:
    """Cohort table (``subject_id, time_years, volume_ml``) of ``splits`` with the segmentation network's volumes,
    one row per scan that also has a measured volume (the same scans as
    :func:`custom.ode.evaluation.scan_table`); raises when one of them has an empty predicted tumour."""
    rows = []
    for split in splits:
        for it in subject_data.dataset(split).items:
            for tt, lv, ls in zip(it["t"].tolist(), it["logv_measured"].tolist(), it["logv_segmented"].tolist()):
                if not np.isfinite(lv):
                    continue
                if not np.isfinite(ls):
                    raise ValueError(f"subject {it['subject_id']}: a scan has an empty predicted tumour (no ln V)")
                rows.append({"subject_id": it["subject_id"], "time_years": float(tt), "volume_ml": math.exp(ls)})
    return pd.DataFrame(rows)


def segmented_baseline_frames(
    subject_data, train_table: pd.DataFrame, splits: dict[str, Sequence[str]], ks: Sequence[int]
) -> dict[str, dict[str, pd.DataFrame]]:
    """The baselines of :data:`SEGMENTED_BASELINES` fitted on the training subjects' measured volumes and forecasting
    each validation / test subject from the segmentation network's volumes of its first k scans (what a clinician
    without manual segmentations would run), as ``extra`` frames of :func:`custom.forecast.evaluate.
    evaluate_forecasts`; empty when a scan of these splits has an empty predicted tumour (logged)."""
    from custom.forecast.task import make_task
    from custom.forecast.volumetry import MEASURED_BASELINES

    try:
        table = segmented_scan_table(subject_data, ("validation", "test"))
    except ValueError as err:
        logger.warning("baselines on segmented volumes left out: %s", err)
        return {}
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for base, name in SEGMENTED_BASELINES.items():
        model = MEASURED_BASELINES[base]().fit(train_table)
        out[name] = {
            s: pd.concat([model.predict(make_task(table, splits[s], k)) for k in ks], ignore_index=True).assign(
                method=name
            )
            for s in ("validation", "test")
        }
    return out
