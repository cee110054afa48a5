"""``SegVolumeWriter``: the per-scan volume table ``seg_volumes.csv`` of a segmentation run.

Attached to a ``SupervisedEvaluator`` with ``decollate=True`` whose postprocessing inverts ``pred`` to the input
scan's geometry (MONAI ``Invertd``) and saves it (``SaveImaged`` with ``savepath_in_metadict``). Per scan it writes

    subject_id, case_id, timepoint, time_years, split, volume_mm3, volume_ml, log_volume (ln mL), centroid_x/y/z (mm)

measured on the inverted mask with its own affine (:func:`custom.seg.measure.tumour_measurements`, tumour = labels
1 + 3), plus ``mask_file`` and ``reference_seg`` (the reference segmentation, empty when the scan has none).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from custom.seg.measure import MEASURE_COLUMNS, tumour_measurements

logger = logging.getLogger(__name__)

ID_COLUMNS: tuple[str, ...] = ("subject_id", "case_id", "timepoint", "time_years", "split")
COLUMNS: tuple[str, ...] = ID_COLUMNS + MEASURE_COLUMNS + ("mask_file", "reference_seg")


def _scalar(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return value[0]
    return value


class SegVolumeWriter:
    """See the module docstring.

    Args:
        path: the CSV to write (its folder is created).
        pred_key: key of the inverted, discrete (one-channel) prediction in each decollated output.
    """

    def __init__(self, path: str, pred_key: str = "pred") -> None:
        self.path = Path(path)
        self.pred_key = pred_key
        self.rows: list[dict[str, Any]] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _reset(self, engine: Engine) -> None:
        self.rows = []

    def _collect(self, engine: Engine) -> None:
        batch, output = engine.state.batch, engine.state.output
        for item, out in zip(batch, output):
            pred = out[self.pred_key]
            row = {k: _scalar(item.get(k, "")) for k in ID_COLUMNS}
            row.update(tumour_measurements(pred, pred.affine))
            row["mask_file"] = str(pred.meta.get("saved_to", ""))
            row["reference_seg"] = str(_scalar(item.get("reference_seg", "")) or "")
            self.rows.append(row)

    def _write(self, engine: Engine) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(COLUMNS))
            writer.writeheader()
            writer.writerows(self.rows)
        logger.info("tumour volumes of %d scan(s) written to %s", len(self.rows), self.path)
