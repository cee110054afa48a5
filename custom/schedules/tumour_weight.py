"""The weight of the segmented tumour's voxels in the likelihood, per epoch: ramp in, hold, decay out.

Under the plain Gaussian likelihood the tumour (about 1 % of the brain's voxels at 128^3) hardly moves the
loss, and a 3D VAE codes the anatomy, the gain and the bias field: linear probes from mu to the tumour's log volume
stay near R^2 = 0 (vae_baseline docs, run D). Weighting the tumour's voxels by ``w > 1`` makes the encoder code
the tumour, at a price in how well the rest of the brain is drawn. *When* the weight is on matters: the first
epochs organise the code (vae_baseline docs, runs S), so the schedule can leave them to the plain likelihood and
bring the weight in later (``start_epoch``, ``ramp_epochs``), or hold it first and return to the plain likelihood
(``hold_epochs``, ``decay_epochs``): a curriculum on the objective, as KL annealing is (Bowman et al., CoNLL 2016).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TumourWeightSchedule"]


@dataclass(frozen=True)
class TumourWeightSchedule:
    """Piecewise-linear tumour weight of the 1-based epoch ``t`` (``s = start_epoch``, ``r = ramp_epochs``,
    ``h = hold_epochs``, ``d = decay_epochs``, ``P = peak``):

    - ``t <= s``: 1 (the plain likelihood);
    - ``s < t <= s + r``: ``1 + (P - 1) (t - s) / r`` (``r = 0``: ``P`` from ``s + 1``);
    - then ``P`` for ``h`` epochs (``h = None``: to the end of the run);
    - then ``P + (1 - P) * min((t - s - r - h) / d, 1)`` (``d = 0``: 1 at once).

    The defaults (``s = r = 0``, ``h = None``) give the constant weight ``P`` of the ``tumour_weight`` config id;
    ``P = 1`` is the plain likelihood.
    """

    peak: float = 1.0
    hold_epochs: int | None = None
    decay_epochs: int = 0
    start_epoch: int = 0
    ramp_epochs: int = 0

    def __post_init__(self) -> None:
        if float(self.peak) < 1.0:
            raise ValueError(f"tumour_weight must be >= 1 (1 = the plain likelihood), got {self.peak}")
        ints = (self.decay_epochs, self.start_epoch, self.ramp_epochs) + (
            () if self.hold_epochs is None else (self.hold_epochs,)
        )
        if any(int(v) < 0 for v in ints):
            raise ValueError(f"tumour weight schedule needs non-negative epoch counts: {self}")

    def __call__(self, epoch: int) -> float:
        peak = float(self.peak)
        t = max(int(epoch), 1) - int(self.start_epoch)
        if t <= 0:
            return 1.0
        ramp = int(self.ramp_epochs)
        if t <= ramp:
            return 1.0 + (peak - 1.0) * t / ramp
        if self.hold_epochs is None:
            return peak
        t -= ramp + int(self.hold_epochs)
        if t <= 0:
            return peak
        if int(self.decay_epochs) == 0:
            return 1.0
        return peak + (1.0 - peak) * min(t / int(self.decay_epochs), 1.0)
