"""Delayed linear warm-up of the DIP-VAE covariance penalty weight (the seed's Exp2 schedule)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DIPLambdaSchedule"]


@dataclass(frozen=True)
class DIPLambdaSchedule:
    """Scale in [0, 1] for the DIP-VAE-II penalty: ``clip((t - start_epoch) / warmup_epochs, 0, 1)``.

    ``t`` is the 1-based Ignite epoch (epoch 0 is treated as 1). Epochs ``t <= start_epoch`` give 0, so the epoch
    equal to ``start_epoch`` gives **0** and the first ``start_epoch`` epochs train a plain VAE (the seed's 20
    pre-training epochs); epoch ``start_epoch + 1`` gives ``1 / warmup_epochs`` and epoch
    ``start_epoch + warmup_epochs`` gives 1 (defaults: 0 through epoch 20, 1/40 at 21, 1 from epoch 60).
    ``warmup_epochs = 0`` jumps to 1 at ``start_epoch + 1``.
    """

    start_epoch: int = 20
    warmup_epochs: int = 40

    def __post_init__(self) -> None:
        if self.start_epoch < 0 or self.warmup_epochs < 0:
            raise ValueError(f"invalid DIP lambda schedule {self}")

    def __call__(self, epoch: int) -> float:
        t = max(int(epoch), 1)
        if self.warmup_epochs == 0:
            return 1.0 if t > self.start_epoch else 0.0
        return min(max((t - self.start_epoch) / self.warmup_epochs, 0.0), 1.0)
