"""Held-out scores of a segmentation run: Dice, ln V RMSE and volume Pearson r against the reference masks.

From ``seg_volumes.csv`` (:mod:`custom.seg.writer`) and each scan's reference segmentation (``reference_seg``),
both measured in the input scan's geometry with :func:`custom.seg.measure.tumour_measurements` (tumour = labels
1 + 3, volumes in mL):

* ln V RMSE = sqrt(mean_scans (ln V_pred - ln V_ref)^2) over the scans where both volumes are > 0 (``n_empty``
  counts the scans whose predicted or reference tumour is empty: ln 0 has no value);
* Pearson r (Pearson 1895) of V_pred and V_ref in mL over all scored scans (scipy.stats.pearsonr);
* mean relative volume error 100 |V_pred / V_ref - 1| over the scans with V_ref > 0;
* Dice: the evaluator's MONAI ``DiceMetric`` values (mean over scans, on the network's grid), passed in.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import nibabel as nib
import numpy as np
import pandas as pd
from scipy.stats import pearsonr

from custom.seg.measure import tumour_measurements

logger = logging.getLogger(__name__)


def reference_volumes(reference_segs: list[str]) -> np.ndarray:
    """Tumour volume (mL) of each reference segmentation file, in its own geometry."""
    out = []
    for f in reference_segs:
        img = nib.load(f)
        out.append(tumour_measurements(np.asanyarray(img.dataobj), img.affine)["volume_ml"])
    return np.asarray(out, dtype=float)


def volume_scores(pred_ml: np.ndarray, ref_ml: np.ndarray) -> dict[str, float]:
    """ln V RMSE, Pearson r and relative error of predicted against reference volumes (see the module docstring)."""
    pred_ml, ref_ml = np.asarray(pred_ml, float), np.asarray(ref_ml, float)
    both = (pred_ml > 0) & (ref_ml > 0)
    d = np.log(pred_ml[both]) - np.log(ref_ml[both])
    r = float(pearsonr(pred_ml, ref_ml).statistic) if len(pred_ml) >= 2 and np.std(pred_ml) > 0 else math.nan
    rel = 100.0 * np.abs(pred_ml[ref_ml > 0] / ref_ml[ref_ml > 0] - 1.0)
    return {
        "n_scans": int(len(pred_ml)),
        "n_empty": int((~both).sum()),
        "log_volume_rmse": float(np.sqrt(np.mean(d**2))) if both.any() else math.nan,
        "log_volume_bias": float(np.mean(d)) if both.any() else math.nan,
        "volume_pearson_r": r,
        "rel_volume_err_pct_mean": float(rel.mean()) if rel.size else math.nan,
    }


def summarise(seg_volumes_csv: str, out_json: str, dice: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Scores of the scans in ``seg_volumes_csv`` that have a reference segmentation, written to ``out_json``."""
    table = pd.read_csv(seg_volumes_csv, keep_default_na=False)
    table = table[table["reference_seg"].astype(str) != ""]
    if table.empty:
        raise ValueError(f"{seg_volumes_csv} lists no scan with a reference segmentation: nothing to score")
    ref = reference_volumes(table["reference_seg"].astype(str).tolist())
    pred = pd.to_numeric(table["volume_ml"]).to_numpy(float)
    scores = volume_scores(pred, ref)
    scores["n_subjects"] = int(table["subject_id"].nunique())
    scores["splits"] = sorted(set(table["split"].astype(str)))
    scores["volume_unit"] = "mL; log_volume = ln(mL) of labels 1 + 3"
    scores.update({k: float(v) for k, v in (dice or {}).items()})
    Path(out_json).parent.mkdir(parents=True, exist_ok=True)
    Path(out_json).write_text(json.dumps(scores, indent=1))
    logger.info("segmentation scores: %s", json.dumps(scores))
    print(json.dumps(scores), flush=True)
    return scores
