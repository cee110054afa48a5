"""Per-epoch means of the training step's loss terms, kept on the device until the epoch ends.

Adding the step outputs on the device avoids a host sync per iteration; one ``.item()`` per term
happens at ``EPOCH_COMPLETED``. Skipped (non-finite) steps are excluded from the means.
"""

from __future__ import annotations

import torch
from ignite.engine import Engine, Events


class EpochAverager:
    """Writes ``engine.state.metrics["train_epoch/<term>"]`` (mean over finite steps of the epoch)."""

    def __init__(self, prefix: str = "train_epoch/") -> None:
        self.prefix = prefix
        self._sums: dict[str, torch.Tensor] = {}
        self._count: torch.Tensor | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._accumulate)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _reset(self, engine: Engine) -> None:
        self._sums, self._count = {}, None

    def _accumulate(self, engine: Engine) -> None:
        out = engine.state.output
        if not isinstance(out, dict):
            return
        finite = out.get("finite")
        w = finite.float() if isinstance(finite, torch.Tensor) else torch.tensor(1.0)
        self._count = w if self._count is None else self._count + w
        for key, value in out.items():
            if key == "finite" or not isinstance(value, torch.Tensor) or value.numel() != 1:
                continue
            v = torch.where(w > 0, value.float(), torch.zeros_like(value, dtype=torch.float32))
            self._sums[key] = v if key not in self._sums else self._sums[key] + v

    def _publish(self, engine: Engine) -> None:
        if self._count is None:
            return
        n = float(self._count)
        for key, total in self._sums.items():
            engine.state.metrics[self.prefix + key] = float(total) / n if n > 0 else float("nan")
        engine.state.metrics[self.prefix + "steps_skipped"] = float(engine.state.epoch_length or 0) - n
