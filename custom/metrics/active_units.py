"""Active units: how many latent dimensions carry information about the input.

Burda, Grosse & Salakhutdinov (2015), "Importance Weighted Autoencoders", §5.2: unit ``u`` is
active when ``A_u = Cov_x(E_{q(z|x)}[z_u]) > 0.01``, i.e. the posterior mean of that unit varies
across the evaluation set. A collapsed VAE has every ``mu_u`` constant, hence zero active units.
"""

from __future__ import annotations

import numpy as np

__all__ = ["active_units"]


def active_units(mu: np.ndarray, threshold: float = 0.01) -> dict:
    """Count latent units whose posterior mean varies across samples.

    Args:
        mu: posterior means ``E_q[z|x]`` of the evaluation set, shape ``[N, Z]`` (N >= 2).
        threshold: activity threshold on the per-dimension variance (Burda et al. use 0.01).

    Returns:
        ``{"au_count": int, "au_frac": float, "per_dim_var": list[float], "active_mask": list[bool]}``;
        the variance is the unbiased sample variance (``ddof=1``) over the N samples.

    Example:
        >>> active_units(np.c_[np.zeros(10), np.arange(10.0)])["au_count"]
        1
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[0] < 2:
        raise ValueError(f"mu must have shape [N>=2, Z], got {mu.shape}.")
    per_dim_var = mu.var(axis=0, ddof=1)
    active = per_dim_var > threshold
    return {
        "au_count": int(active.sum()),
        "au_frac": float(active.mean()),
        "per_dim_var": [float(v) for v in per_dim_var],
        "active_mask": [bool(a) for a in active],
    }
