"""Tumour-emphasis warm-up: the weight of the segmented tumour's voxels in the likelihood, per epoch.

Under the plain Gaussian likelihood the tumour (about 1 % of the brain's voxels at 128^3) hardly moves the
loss, and a 3D VAE learns the anatomy and the scanner's bias field first: linear probes from mu to the tumour's
volume and position stay near R^2 = 0 (vae_baseline docs, run D). Weighting the tumour's voxels by ``w > 1``
makes the encoder code the tumour, but for as long as the weight stays on, the decoder spends its capacity on
the tumour and draws the rest of the brain worse. The warm-up keeps ``w`` for the first epochs, so that the code
learns the tumour while it is being organised, then returns to the plain likelihood, under which coding the
tumour still pays (its KL cost is a few nats against thousands of nats of squared error). The same idea as KL
annealing (Bowman et al., CoNLL 2016): a curriculum on the objective that ends at the true ELBO.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TumourWeightSchedule"]


@dataclass(frozen=True)
class TumourWeightSchedule:
    """``w(t) = peak`` for ``t <= hold_epochs``, then a linear decay to 1 over ``decay_epochs``, then 1.

    ``w(t) = peak + (1 - peak) * clip((t - hold_epochs) / decay_epochs, 0, 1)`` for the 1-based epoch ``t``
    (``decay_epochs = 0`` drops to 1 at ``hold_epochs + 1``). ``hold_epochs = None`` keeps ``peak`` for the whole
    run (the constant weight of the ``tumour_weight`` config id alone); ``peak = 1`` is the plain likelihood.
    """

    peak: float = 1.0
    hold_epochs: int | None = None
    decay_epochs: int = 0

    def __post_init__(self) -> None:
        if float(self.peak) < 1.0:
            raise ValueError(f"tumour_weight must be >= 1 (1 = the plain likelihood), got {self.peak}")
        if (self.hold_epochs is not None and int(self.hold_epochs) < 0) or int(self.decay_epochs) < 0:
            raise ValueError(f"tumour weight schedule needs hold_epochs >= 0 (or None) and decay_epochs >= 0: {self}")

    def __call__(self, epoch: int) -> float:
        peak = float(self.peak)
        if self.hold_epochs is None:
            return peak
        t = max(int(epoch), 1)
        if self.decay_epochs == 0:
            return peak if t <= self.hold_epochs else 1.0
        frac = min(max((t - int(self.hold_epochs)) / int(self.decay_epochs), 0.0), 1.0)
        return peak + (1.0 - peak) * frac
