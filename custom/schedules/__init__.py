"""Per-epoch schedules: KL weight beta (cyclical, linear, constant), KL capacity, DIP-VAE penalty scale."""

from .beta import ConstantBeta, CyclicalBeta, LinearBeta, LinearCapacity
from .dip_lambda import DIPLambdaSchedule

__all__ = ["ConstantBeta", "CyclicalBeta", "LinearBeta", "LinearCapacity", "DIPLambdaSchedule"]
