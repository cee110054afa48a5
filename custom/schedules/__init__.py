"""Per-epoch schedules: KL weight beta (cyclical, linear, constant), KL capacity, DIP-VAE penalty scale, tumour weight."""

from .beta import ConstantBeta, CyclicalBeta, LinearBeta, LinearCapacity
from .dip_lambda import DIPLambdaSchedule
from .tumour_weight import TumourWeightSchedule

__all__ = ["ConstantBeta", "CyclicalBeta", "LinearBeta", "LinearCapacity", "DIPLambdaSchedule", "TumourWeightSchedule"]
