"""Ignite handler that evaluates the loss schedules at the start of every epoch.

The schedules are pure functions of the (1-based) epoch, so a resumed run recomputes exactly the
same beta / capacity / lambda / tumour weight as the uninterrupted one: no schedule state needs saving.
"""

from __future__ import annotations

from typing import Any, Callable

from ignite.engine import Engine, Events


class ScheduleHandler:
    """Sets ``engine.state.loss_kwargs`` and ``engine.state.sched`` (for logging) each epoch.

    Args:
        beta: ``epoch -> beta`` (e.g. :class:`custom.schedules.beta.CyclicalBeta`).
        capacity: ``epoch -> C`` in nats (capacity control), or None when off.
        dip_lambda: ``epoch -> scale in [0, 1]`` multiplying the DIP-VAE penalty, or None when the loss has none.
        free_bits: nats per latent dimension (for the logged expected KL floor).
        z_dim: latent size (for the expected KL floor ``free_bits * z_dim``).
        tumour_weight: ``epoch -> w >= 1`` (:class:`custom.schedules.tumour_weight.TumourWeightSchedule`), the weight
            of the tumour's voxels in the likelihood; the train step takes it out of ``loss_kwargs``. None: the
            step's own constant ``tumour_weight``.
    """

    def __init__(
        self,
        beta: Callable[[int], float],
        capacity: Callable[[int], float] | None = None,
        dip_lambda: Callable[[int], float] | None = None,
        free_bits: float = 0.0,
        z_dim: int = 0,
        tumour_weight: Callable[[int], float] | None = None,
    ) -> None:
        self.beta = beta
        self.capacity = capacity
        self.dip_lambda = dip_lambda
        self.free_bits = float(free_bits)
        self.z_dim = int(z_dim)
        self.tumour_weight = tumour_weight

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def values(self, epoch: int) -> dict[str, float]:
        """The schedule values for a 1-based epoch."""
        kwargs: dict[str, float] = {"beta": float(self.beta(epoch))}
        if self.capacity is not None:
            kwargs["capacity"] = float(self.capacity(epoch))
        if self.dip_lambda is not None:
            kwargs["lambda_scale"] = float(self.dip_lambda(epoch))
        if self.tumour_weight is not None:
            kwargs["tumour_weight"] = float(self.tumour_weight(epoch))
        return kwargs

    def __call__(self, engine: Engine) -> None:
        kwargs = self.values(engine.state.epoch)
        engine.state.loss_kwargs = kwargs
        sched: dict[str, Any] = {f"sched/{k}": v for k, v in kwargs.items()}
        sched["sched/expected_kl_floor"] = self.free_bits * self.z_dim
        sched["sched/lr"] = (
            float(engine.optimizer.param_groups[0]["lr"]) if getattr(engine, "optimizer", None) else float("nan")
        )
        engine.state.sched = sched
