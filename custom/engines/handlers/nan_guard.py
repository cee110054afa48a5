"""Stop a run cleanly after too many consecutive non-finite steps.

:class:`custom.engines.train_step.VAETrainStep` already skips any step whose loss or gradient norm is
NaN/Inf, so the weights always hold the last good state. This handler logs each skipped step with the
case ids of its batch, adds ``train_epoch/nonfinite_steps`` to the metrics, and after
``max_consecutive`` skipped steps in a row saves ``nonfinite_last_good.pt`` and raises a clear error.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class NonFiniteTrainingError(RuntimeError):
    """Raised when training produced non-finite losses or gradients too many times in a row."""


class NonFiniteGuard:
    """Trainer handler; see the module docstring.

    Args:
        max_consecutive: consecutive skipped steps that stop the run.
        log_path: JSON-lines file listing every skipped step (epoch, iteration, case ids, loss, grad norm).
        ckpt_dir: where the last good weights are saved when stopping.
    """

    def __init__(self, max_consecutive: int = 5, log_path: str | None = None, ckpt_dir: str | None = None) -> None:
        self.max_consecutive = int(max_consecutive)
        self.log_path = Path(log_path) if log_path else None
        self.ckpt_dir = Path(ckpt_dir) if ckpt_dir else None
        self._seen = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._check)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._publish)

    def _check(self, engine: Engine) -> None:
        state = getattr(engine.state, "nonfinite", None)
        if not state or len(state["events"]) == self._seen:
            return
        for event in state["events"][self._seen :]:
            logger.warning(
                "non-finite loss/gradient at epoch %d iteration %d (cases %s): step skipped",
                event["epoch"],
                event["iteration"],
                ", ".join(event["case_ids"]),
            )
            if self.log_path is not None:
                self.log_path.parent.mkdir(parents=True, exist_ok=True)
                with self.log_path.open("a") as fh:
                    fh.write(json.dumps(event) + "\n")
        self._seen = len(state["events"])
        if state["consecutive"] >= self.max_consecutive:
            saved = ""
            if self.ckpt_dir is not None:
                self.ckpt_dir.mkdir(parents=True, exist_ok=True)
                net = getattr(engine.network, "module", engine.network)
                net = getattr(net, "_orig_mod", net)
                target = self.ckpt_dir / "nonfinite_last_good.pt"
                torch.save(
                    {
                        "network": net.state_dict(),
                        "optimizer": engine.optimizer.state_dict(),
                        "epoch": engine.state.epoch,
                        "iteration": engine.state.iteration,
                    },
                    target,
                )
                saved = f" The last good state is in {target}."
            last = state["events"][-1]
            raise NonFiniteTrainingError(
                f"{state['consecutive']} consecutive training steps had a non-finite loss or gradient "
                f"(last at epoch {last['epoch']}, iteration {last['iteration']}, cases {', '.join(last['case_ids'])}).{saved} "
                "Check those cases for corrupt intensities, lower the learning rate, or disable amp."
            )

    def _publish(self, engine: Engine) -> None:
        state = getattr(engine.state, "nonfinite", None)
        engine.state.metrics["train_epoch/nonfinite_total"] = float(state["count"]) if state else 0.0
