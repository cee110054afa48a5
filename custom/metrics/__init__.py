"""Metrics: posterior-collapse diagnostics, disentanglement scores and masked image quality.

Each metric is a pure function returning a dict of plain floats/lists (JSON-serialisable).
"""

from custom.metrics.active_units import active_units
from custom.metrics.collapse import collapse_summary, kl_per_dim_gaussian
from custom.metrics.covariance import offdiag_covariance
from custom.metrics.dci import dci, dci_from_importance
from custom.metrics.masked_image import default_brain_mask, masked_psnr_ssim
from custom.metrics.mig import mig, mig_with_references, quantile_bins
from custom.metrics.probes import linear_probe_r2, single_latent_r2
from custom.metrics.sap import sap, sap_score_matrix
from custom.metrics.total_correlation import gaussian_total_correlation

__all__ = [
    "active_units",
    "collapse_summary",
    "kl_per_dim_gaussian",
    "offdiag_covariance",
    "dci",
    "dci_from_importance",
    "default_brain_mask",
    "masked_psnr_ssim",
    "mig",
    "mig_with_references",
    "quantile_bins",
    "linear_probe_r2",
    "single_latent_r2",
    "sap",
    "sap_score_matrix",
    "gaussian_total_correlation",
]
