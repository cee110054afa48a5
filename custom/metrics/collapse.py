"""Posterior-collapse diagnostics: one dict that says whether a VAE's latents are used.

A collapsed VAE (the original implementation: 0/128 active units, KL ~ 1.2 nats, template
reconstructions) shows: no active units (Burda et al. 2015), KL stuck at the free-bits floor
(Kingma et al. 2016), and reconstructions from the posterior mean no better than from ``z = 0``
(the decoder ignores the code). ``collapse_summary`` puts these side by side.
"""

from __future__ import annotations

import math

import numpy as np

from custom.metrics.active_units import active_units

__all__ = ["kl_per_dim_gaussian", "collapse_summary"]

#: ``recon_z0_mse / recon_mu_mse`` below this means decoding z = 0 is nearly as good as decoding mu.
Z0_RATIO_COLLAPSE: float = 1.1


def kl_per_dim_gaussian(mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    """Closed-form ``KL(N(mu, e^logvar) || N(0, 1))`` per sample and dimension (nats).

    ``KL_j = 0.5 * (mu_j^2 + exp(logvar_j) - 1 - logvar_j)`` (Kingma & Welling 2014, Appendix B).

    Args:
        mu, logvar: arrays of the same shape, typically ``[N, Z]``.

    Returns:
        Array of that shape, float64.
    """
    mu = np.asarray(mu, dtype=np.float64)
    logvar = np.asarray(logvar, dtype=np.float64)
    if mu.shape != logvar.shape:
        raise ValueError(f"mu {mu.shape} and logvar {logvar.shape} must have the same shape.")
    return 0.5 * (mu**2 + np.exp(logvar) - 1.0 - logvar)


def _ratio(num: float, den: float) -> float:
    if not (math.isfinite(num) and math.isfinite(den)) or den == 0:
        return float("nan")
    return float(num / den)


def collapse_summary(
    mu: np.ndarray,
    logvar: np.ndarray,
    kl_per_dim: np.ndarray | None = None,
    free_bits: float = 0.0,
    recon_mu_mse: float = float("nan"),
    recon_z0_mse: float = float("nan"),
    recon_sampled_mse: float = float("nan"),
    au_threshold: float = 0.01,
) -> dict:
    """Summarise posterior collapse on an evaluation set.

    Args:
        mu, logvar: encoder outputs ``[N, Z]``.
        kl_per_dim: optional per-sample, per-dim KL ``[N, Z]``; computed in closed form when None.
        free_bits: free-bits threshold lambda per dimension (nats); the KL floor is ``lambda * Z``.
        recon_mu_mse: reconstruction MSE decoding ``z = mu``.
        recon_z0_mse: reconstruction MSE decoding ``z = 0`` for every sample (the "template").
        recon_sampled_mse: reconstruction MSE decoding ``z ~ q(z|x)``.
        au_threshold: active-unit variance threshold (Burda et al. 2015).

    Returns:
        dict with ``au_count, au_frac, mu_var_mean, logvar_mean``, ``z_std`` = sqrt(mean_j (Var(mu_j) +
        E[exp(logvar_j)])) (std of q-samples, the aggregate posterior), ``kl_raw`` = mean_n sum_j KL_nj,
        ``kl_floor`` = free_bits * Z, ``kl_above_floor``, ``recon_mu_mse``, ``recon_z0_mse``,
        ``recon_z0_ratio`` = z0 / mu, ``recon_delta_mu_vs_sampled`` = sampled - mu, ``collapsed``
        (au_count == 0 or recon_z0_ratio < 1.1) and a one-line ``verdict``.
    """
    mu = np.asarray(mu, dtype=np.float64)
    logvar = np.asarray(logvar, dtype=np.float64)
    kl = kl_per_dim_gaussian(mu, logvar) if kl_per_dim is None else np.asarray(kl_per_dim, dtype=np.float64)
    if kl.shape != mu.shape:
        raise ValueError(f"kl_per_dim {kl.shape} must match mu {mu.shape}.")
    au = active_units(mu, threshold=au_threshold)
    z = mu.shape[1]
    mu_var = mu.var(axis=0, ddof=1)
    total_var = mu_var + np.exp(logvar).mean(axis=0)
    kl_raw = float(kl.sum(axis=1).mean())
    kl_floor = float(free_bits * z)
    recon_mu_mse, recon_z0_mse, recon_sampled_mse = float(recon_mu_mse), float(recon_z0_mse), float(recon_sampled_mse)
    ratio = _ratio(recon_z0_mse, recon_mu_mse)
    collapsed = au["au_count"] == 0 or (math.isfinite(ratio) and ratio < Z0_RATIO_COLLAPSE)
    reasons = []
    if au["au_count"] == 0:
        reasons.append("no active units")
    if math.isfinite(ratio) and ratio < Z0_RATIO_COLLAPSE:
        reason = f"decoding z=0 is within {Z0_RATIO_COLLAPSE:.1f}x of decoding mu"
        if au["au_count"] > 0 and kl_raw > kl_floor:
            # the code varies and carries KL, so the decoder is not ignoring z everywhere: on held-out cases (the
            # in-training diagnostics run on validation subjects) this is a model that does not generalise to them
            reason += (
                " although the code is in use (active units, KL above the floor): on held-out cases, the"
                " decoder does not generalise to them (more training subjects, augmentation or epochs help)"
            )
        reasons.append(reason)
    verdict = (
        f"{'COLLAPSED' if collapsed else 'ok'}: {au['au_count']}/{z} active units, KL {kl_raw:.3g} nats "
        f"(floor {kl_floor:.3g}), recon z0/mu ratio {ratio:.3g}" + (f" ({'; '.join(reasons)})" if reasons else "")
    )
    return {
        "au_count": au["au_count"],
        "au_frac": au["au_frac"],
        "mu_var_mean": float(mu_var.mean()),
        "logvar_mean": float(logvar.mean()),
        "z_std": float(np.sqrt(total_var.mean())),
        "kl_raw": kl_raw,
        "kl_floor": kl_floor,
        "kl_above_floor": bool(kl_raw > kl_floor),
        "recon_mu_mse": recon_mu_mse,
        "recon_z0_mse": recon_z0_mse,
        "recon_z0_ratio": ratio,
        "recon_delta_mu_vs_sampled": float(recon_sampled_mse - recon_mu_mse),
        "collapsed": bool(collapsed),
        "verdict": verdict,
    }
