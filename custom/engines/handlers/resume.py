"""Resume a training run from its atomic ``last.pt`` when the run starts (``resume`` config id)."""

from __future__ import annotations

from typing import Any

from ignite.engine import Engine, Events

from custom.engines.handlers.checkpoints import LoaderRNGState, load_resume_checkpoint
from custom.utils import as_bool


class ResumeHandler:
    """At ``STARTED``, load ``path`` into ``load_dict`` (network, optimizer, trainer, rng, ...).

    Loading the trainer's state restores epoch and iteration, so Ignite continues with the next epoch;
    the schedules are functions of the epoch and so continue exactly where they were. The global RNGs
    and the training loader's shuffle generator are restored too, so the resumed epochs see the same
    batches and noise as an uninterrupted run (bit-identical weights on CPU, see tests/test_resume.py).
    """

    def __init__(self, path: str, load_dict: dict[str, Any], enabled: bool = True) -> None:
        self.path = path
        self.load_dict = load_dict
        self.enabled = as_bool(enabled)

    def attach(self, engine: Engine) -> None:
        self.load_dict = {"loader_rng": LoaderRNGState(engine), **self.load_dict, "trainer": engine}
        if self.enabled:
            engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        # the checkpoint's max_epochs is that of the killed run: keep this run's (``--epochs`` may extend it)
        max_epochs = engine.state.max_epochs
        if load_resume_checkpoint(self.path, self.load_dict) and max_epochs is not None:
            engine.state.max_epochs = max_epochs
