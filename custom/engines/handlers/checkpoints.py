"""Atomic checkpoints: ``last.pt`` every epoch (resume state), ``best`` by validation loss, final weights.

Ignite's ``DiskSaver(atomic=True)`` writes to a temporary file and renames it, so a job killed during
a save never leaves a corrupt checkpoint (MONAI's ``CheckpointSaver`` uses ``atomic=False``).
The resume checkpoint holds the network, optimizer, trainer state (epoch/iteration), optional LR
scheduler, the global RNG states (:class:`RNGState`) and the training loader's shuffle generator and
augmentation generators (:class:`LoaderRNGState`); ``models/model.pt`` holds the network weights alone,
which is what ``inference.json`` and MONAI Label read.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

logger = logging.getLogger(__name__)


class RNGState:
    """Python, NumPy and torch RNG states as a ``state_dict`` object, so checkpoints restore them."""

    def state_dict(self) -> dict[str, Any]:
        state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class LoaderRNGState:
    """State of the training DataLoader's ``torch.Generator`` (the shuffle order) as a ``state_dict`` object.

    ``RandomSampler`` draws each epoch's permutation from this generator when the epoch's first batch is
    fetched, so the state saved at the end of epoch ``k`` (in ``last.pt``) fixes the order of epoch
    ``k + 1``; restoring it makes a resumed run see exactly the batches of an uninterrupted one.
    Without it the generator restarts from its seed and the resumed epoch replays epoch 1's order.
    A loader without a generator (or a sampler seeded per epoch) gives an empty state, which loads as a no-op.
    The generators of the dataset's random augmentations (:func:`transform_rngs`) are kept the same way, and so is
    that of the training step's batch augmentation (``augment_on: "batch"``).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def _loader(self) -> Any:
        return getattr(self.engine.state, "dataloader", None) or getattr(self.engine, "data_loader", None)

    def _generator(self) -> torch.Generator | None:
        return getattr(self._loader(), "generator", None)

    def _augmentation_rngs(self) -> list[np.random.RandomState]:
        chain = getattr(getattr(self._loader(), "dataset", None), "transform", None)
        step_augment = getattr(getattr(self.engine, "_process_function", None), "augment", None)  # augment_on: batch
        return transform_rngs([chain, step_augment])

    def state_dict(self) -> dict[str, Any]:
        gen = self._generator()
        state: dict[str, Any] = {"generator": gen.get_state()} if gen is not None else {}
        rngs = self._augmentation_rngs()
        if rngs:
            state["transforms"] = [r.get_state() for r in rngs]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        gen = self._generator()
        if gen is not None and "generator" in state:
            gen.set_state(state["generator"])
        rngs = self._augmentation_rngs()
        saved = state.get("transforms", [])
        if saved and len(saved) == len(rngs):
            for r, s in zip(rngs, saved):
                r.set_state(s)
        elif saved:
            logger.warning(
                "resume: the augmentation RNGs (%d saved, %d now) do not match; the resumed epochs "
                "augment differently from an uninterrupted run",
                len(saved),
                len(rngs),
            )


def transform_rngs(transform: Any) -> list[np.random.RandomState]:
    """Every ``RandomState`` a MONAI transform chain draws from, in a fixed order (duplicates once).

    The random augmentations of the training chain (``RandAffined`` and the ``RandAffine`` /
    ``RandAffineGrid`` it holds, each with its own ``R``) advance their generators every batch; MONAI's
    ``DataLoader`` seeds them once, when the loader is built. Saving them with the resume checkpoint makes a
    resumed run augment its remaining epochs exactly as the uninterrupted run would.
    """
    from monai.transforms import Randomizable

    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def walk(obj: Any) -> None:
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, (list, tuple)):
            for item in obj:
                walk(item)
            return
        if not isinstance(obj, Randomizable):
            return
        r = getattr(obj, "R", None)
        if isinstance(r, np.random.RandomState) and id(r) not in seen:
            seen.add(id(r))
            found.append(r)
        for name in sorted(vars(obj)):
            value = vars(obj)[name]
            if isinstance(value, (Randomizable, list, tuple)):
                walk(value)

    if transform is not None:
        walk(transform)
    return found


class _FixedNameSaver(DiskSaver):
    def __init__(self, dirname: str, filename: str) -> None:
        super().__init__(dirname=dirname, require_empty=False, atomic=True, create_dir=True)
        self.filename = filename

    def __call__(self, checkpoint: Any, filename: str, metadata: Any = None) -> None:
        super().__call__(checkpoint, self.filename, metadata)

    def remove(self, filename: str) -> None:  # keep the fixed file; it is overwritten atomically
        return None


class TrainingCheckpoints:
    """Trainer handler saving ``<ckpt_dir>/last.pt`` every ``interval`` epochs and at the end.

    ``save_dict`` holds network, optimizer (and LR scheduler); the trainer it is attached to and the
    RNG states are added automatically.

    Also writes the network weights to ``<model_dir>/model.pt`` at the end of training (when no
    validation ran) and, through :meth:`attach_best`, whenever the validation loss improves at or after epoch
    ``best_after_epoch``. The validation loss is the negative ELBO at beta = 1, which does not see penalties that
    a schedule switches on later (the DIP covariance terms): without the bound, the "best" model of a dipvae run
    is one from before its penalty started (a recorded H100 run picked epoch 10 of 40 with DIP starting at 10).
    """

    def __init__(
        self,
        ckpt_dir: str,
        model_dir: str,
        save_dict: dict[str, Any],
        network: torch.nn.Module,
        interval: int = 1,
        best_metric: str = "val_epoch/loss",
        best_after_epoch: int = 0,
    ) -> None:
        self.ckpt_dir = str(ckpt_dir)
        self.model_dir = Path(model_dir)
        self.save_dict = dict(save_dict)
        self.save_dict.setdefault("rng", RNGState())
        self.network = network
        self.interval = int(interval)
        self.best_metric = best_metric
        self.best_after_epoch = int(best_after_epoch)
        self._best: float | None = None

    def attach(self, engine: Engine) -> None:
        self.save_dict.setdefault("trainer", engine)
        self.save_dict.setdefault("loader_rng", LoaderRNGState(engine))
        self._last = Checkpoint(self.save_dict, _FixedNameSaver(self.ckpt_dir, "last.pt"), n_saved=1)
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), self._save_last)
        engine.add_event_handler(Events.COMPLETED, self._save_last)
        engine.add_event_handler(Events.COMPLETED, self._save_final)

    def attach_best(self, evaluator: Engine) -> None:
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, self._save_best)

    def _save_last(self, engine: Engine) -> None:
        self._last(engine)

    def _save_final(self, engine: Engine) -> None:
        if self._best is None:
            self._write_model("model.pt")
        self._write_model("model_final.pt")

    def _save_best(self, evaluator: Engine) -> None:
        if int(evaluator.state.epoch) < self.best_after_epoch:  # the evaluator carries the trainer's epoch
            return
        value = evaluator.state.metrics.get(self.best_metric)
        if value is None or not np.isfinite(value):
            return
        if self._best is None or value < self._best:
            self._best = float(value)
            self._write_model("model.pt")
            logger.info("new best %s = %.4f -> %s", self.best_metric, value, self.model_dir / "model.pt")

    def _write_model(self, name: str) -> None:
        self.model_dir.mkdir(parents=True, exist_ok=True)
        target = self.model_dir / name
        tmp = target.with_suffix(".pt.tmp")
        net = getattr(self.network, "module", self.network)  # unwrap DDP
        net = getattr(net, "_orig_mod", net)  # unwrap torch.compile
        torch.save(net.state_dict(), tmp)
        tmp.replace(target)


def load_resume_checkpoint(path: str, objects: dict[str, Any]) -> bool:
    """Load ``last.pt`` into ``objects`` (network, optimizer, trainer, rng...) if it exists; returns whether it did."""
    p = Path(path)
    if not p.exists():
        logger.warning("resume requested but %s does not exist: starting from scratch", p)
        return False
    ckpt = torch.load(p, map_location="cpu", weights_only=False)
    objects = dict(objects)
    objects.setdefault("rng", RNGState())
    Checkpoint.load_objects(to_load={k: v for k, v in objects.items() if k in ckpt}, checkpoint=ckpt)
    logger.info("resumed from %s", p)
    return True
