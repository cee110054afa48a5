"""Gompertz tumour growth: closed forms, latent <-> log-volume maps and a per-subject least-squares fit.

The Gompertz law (Laird 1964; Benzekry et al. 2014, PLoS Comput Biol 10:e1003800) for a volume V(t) with
growth rate ``a`` [1/yr] and carrying capacity ``K``:

    dV/dt = a V ln(K / V)            V(t) = K exp( ln(V0/K) e^{-a t} )

In log-volume ``y = ln V`` the law is *linear*:

    dy/dt = a (ln K - y)             y(t) = ln K + (y0 - ln K) e^{-a t}

so a standardised log-volume latent ``z_vol = (ln V - m) / s`` obeys the same law with the same rate ``a``
and target ``z_K = (ln K - m) / s`` (an affine change of variable leaves a linear ODE's rate unchanged).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.optimize import least_squares

#: Bounds on the growth rate a [1/yr] used by the per-subject fit.
A_BOUNDS: tuple[float, float] = (1e-4, 5.0)


def gompertz_volume(t, v0, a, k):
    """V(t) = K exp(ln(V0/K) e^{-a t}); works on numpy arrays, torch tensors and floats (broadcasting)."""
    if isinstance(t, torch.Tensor):
        return k * torch.exp(torch.log(torch.as_tensor(v0 / k, dtype=t.dtype, device=t.device)) * torch.exp(-a * t))
    return k * np.exp(np.log(v0 / k) * np.exp(-a * np.asarray(t, dtype=float)))


def gompertz_log_volume(t, y0, a, log_k):
    """y(t) = ln K + (y0 - ln K) e^{-a t} with y = ln V (numpy or torch, broadcasting)."""
    if isinstance(t, torch.Tensor):
        return log_k + (y0 - log_k) * torch.exp(-a * t)
    return log_k + (y0 - log_k) * np.exp(-a * np.asarray(t, dtype=float))


def gompertz_log_rate(y, a, log_k):
    """Right-hand side dy/dt = a (ln K - y) of the log-volume Gompertz ODE."""
    return a * (log_k - y)


def z_to_log_volume(z_vol, mean: float, std: float):
    """ln V = m + s z_vol: invert the volume coordinate's standardisation ``vol_scale = {mean: m, std: s}``."""
    return mean + std * z_vol


def log_volume_to_z(log_volume, mean: float, std: float):
    """z_vol = (ln V - m) / s: the standardised volume coordinate of a log-volume."""
    return (log_volume - mean) / std


@dataclass(frozen=True)
class GompertzPrior:
    """Gaussian (ridge) prior used to regularise short trajectories.

    Penalty added to the residuals (in units of ln V):
        w_a (ln a - ln a_pop)  and  w_k (ln K - ln K_pop)
    i.e. a MAP fit with ln a ~ N(ln a_pop, sigma_y^2 / w_a^2), ln K ~ N(ln K_pop, sigma_y^2 / w_k^2), where
    sigma_y is the log-volume measurement noise. With one or two observations (3 unknowns) the prior makes the
    problem well posed; with many observations the data dominate.
    """

    a_pop: float = 0.3
    log_k_pop: float = float(np.log(30.0))
    w_a: float = 0.3
    w_k: float = 0.05


def fit_gompertz(
    times,
    log_volumes,
    prior: GompertzPrior | None = None,
    a_bounds: tuple[float, float] = A_BOUNDS,
) -> tuple[float, float, float]:
    """Least-squares Gompertz fit of one subject's log-volumes; returns ``(a, lnK, y0)``.

    Minimises  sum_i (y(t_i; a, lnK, y0) - y_i)^2  [+ prior penalties, see :class:`GompertzPrior`]
    with scipy's trust-region-reflective ``least_squares`` and ``a`` bounded to ``a_bounds`` (1/yr).
    ``y0`` is the log-volume at t = 0 of the given time axis. Non-finite observations are ignored.
    With fewer than 3 finite observations and ``prior=None`` a default :class:`GompertzPrior` is used,
    because the fit is otherwise underdetermined.
    """
    t = np.asarray(times, dtype=float).ravel()
    y = np.asarray(log_volumes, dtype=float).ravel()
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    if t.size == 0:
        raise ValueError("fit_gompertz needs at least one finite observation")
    if prior is None and t.size < 3:
        prior = GompertzPrior(log_k_pop=float(y.max() + np.log(2.0)))

    a_init = prior.a_pop if prior is not None else 0.3
    a_init = float(np.clip(a_init, a_bounds[0] * 1.01, a_bounds[1] * 0.99))
    log_k_init = prior.log_k_pop if prior is not None else float(y.max() + 0.5 * (y.max() - y.min()) + 0.1)
    order = np.argsort(t)
    y0_init = float(y[order[0]])
    x0 = np.array([a_init, log_k_init, y0_init])

    def residuals(p: np.ndarray) -> np.ndarray:
        a, log_k, y0 = p
        r = gompertz_log_volume(t, y0, a, log_k) - y
        if prior is not None:
            r = np.concatenate(
                [r, [prior.w_a * (np.log(a) - np.log(prior.a_pop)), prior.w_k * (log_k - prior.log_k_pop)]]
            )
        return r

    lower = [a_bounds[0], -np.inf, -np.inf]
    upper = [a_bounds[1], np.inf, np.inf]
    sol = least_squares(residuals, x0, bounds=(lower, upper), method="trf", x_scale="jac")
    a, log_k, y0 = (float(v) for v in sol.x)
    return a, log_k, y0
