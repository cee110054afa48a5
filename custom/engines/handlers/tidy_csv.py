"""A tidy per-epoch CSV: one row per epoch, columns ``train_epoch/*``, ``val_epoch/*``, ``sched/*``, ``diag/*``,
``probe/*`` (held-out protocol), ``probe_cv/*`` (within the validation pass), ``partition/*``.

The whole file is rewritten atomically (temp file + rename) at the end of every epoch, so a killed
run never leaves a half-written row. On resume, rows after the checkpoint's epoch are dropped before
new rows are added: no duplicated or missing epochs.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

_PREFIXES = ("train_epoch/", "val_epoch/", "sched/", "diag/", "probe/", "probe_cv/", "partition/")


class TidyCSVWriter:
    """Trainer handler writing ``metrics.csv``.

    Args:
        path: CSV file.
        evaluator: the validation engine; its metrics are merged in on epochs where it ran.
    """

    def __init__(self, path: str, evaluator: Engine | None = None) -> None:
        self.path = Path(path)
        self.evaluator = evaluator
        self._rows: list[dict[str, Any]] | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write)

    def _load(self, engine: Engine) -> None:
        """Keep the rows of epochs already done (a resumed run starts after ``engine.state.epoch``)."""
        self._rows = []
        if self.path.exists() and engine.state.epoch > 0:
            with self.path.open(newline="") as fh:
                self._rows = [r for r in csv.DictReader(fh) if int(float(r["epoch"])) <= engine.state.epoch]

    def _write(self, engine: Engine) -> None:
        if self._rows is None:
            self._load(engine)
        epoch = int(engine.state.epoch)
        row: dict[str, Any] = {"epoch": epoch, "iteration": int(engine.state.iteration)}
        row.update(getattr(engine.state, "sched", {}) or {})
        row.update({k: v for k, v in engine.state.metrics.items() if k.startswith(_PREFIXES)})
        ev = self.evaluator
        if ev is not None and getattr(ev.state, "epoch", None) == epoch and ev.state.metrics:
            row.update({k: v for k, v in ev.state.metrics.items() if k.startswith(_PREFIXES)})
        self._rows = [r for r in self._rows if int(float(r["epoch"])) != epoch] + [row]
        columns = _ordered_columns(self._rows)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".csv.tmp")
        with tmp.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns, restval="")
            writer.writeheader()
            for r in self._rows:
                writer.writerow({k: _fmt(v) for k, v in r.items()})
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


def _ordered_columns(rows: list[dict[str, Any]]) -> list[str]:
    seen: dict[str, None] = {"epoch": None, "iteration": None}
    for prefix in ("sched/",) + _PREFIXES:
        for r in rows:
            for k in r:
                if k.startswith(prefix):
                    seen.setdefault(k, None)
    for r in rows:
        for k in r:
            seen.setdefault(k, None)
    return list(seen)


def _fmt(v: Any) -> Any:
    if isinstance(v, float) and (math.isnan(v) or math.isinf(v)):
        return "nan" if math.isnan(v) else v
    return v
