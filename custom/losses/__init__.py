"""Loss terms: Gaussian reconstruction, KL with free bits, capacity, the negative ELBO, DIP-VAE-II, Exp3 supervision.

All statistics are computed in fp32, also under autocast.
"""

from .capacity import capacity_term
from .dip import DIPVAELoss, dip_covariance, dip_penalty, gather_for_dip
from .elbo import VAELoss, channel_names
from .kl import FREE_BITS_MODES, free_bits_kl, kl_per_dim
from .reconstruction import RECON_REDUCTIONS, gaussian_reconstruction
from .supervised import PartitionSupervision

__all__ = [
    "capacity_term",
    "DIPVAELoss",
    "dip_covariance",
    "dip_penalty",
    "gather_for_dip",
    "VAELoss",
    "channel_names",
    "FREE_BITS_MODES",
    "free_bits_kl",
    "kl_per_dim",
    "RECON_REDUCTIONS",
    "gaussian_reconstruction",
    "PartitionSupervision",
]
