"""Per-subject Gompertz fits in log-volume with a Gaussian population prior (MAP) and Laplace predictive sd.

Gompertz growth ``d lnV/dt = a (ln K - ln V)`` has the closed form, with ``y = ln V`` and ``t`` in years since the
subject's first scan,

    y(t) = y0 + g (1 - exp(-a t)),    g = ln K - y0  (signed: g < 0 is a shrinking tumour).

The MAP estimate of ``theta = (y0, ln a, g)`` minimises

    sum_j (y_j - y(t_j))^2 / s^2  +  (u - mu)^T Sigma^{-1} (u - mu),   u = (ln a, g),

``Sigma`` with sds ``(sd_la, sd_g)`` and correlation ``rho`` (y0 has a flat prior), solved by scipy's trust-region ``least_squares`` on the whitened residual vector. The
Laplace approximation gives ``Cov(theta) ~ (J^T J)^{-1}`` of the whitened residuals ``J`` at the optimum, and the
predictive variance of a *measured* ln V at ``t*`` is ``grad y(t*)^T Cov grad y(t*) + s^2`` (delta method). The
prior enters the residual vector whitened: ``z1 = (ln a - mu_la) / sd_la``,
``z2 = ((g - mu_g) / sd_g - rho z1) / sqrt(1 - rho^2)``, so that ``z1^2 + z2^2`` is the Mahalanobis term.

The reduced model (Vaghi et al., PLoS Comput Biol 2020) couples the parameters at population level,
``g = c0 + c1 ln a``, leaving ``(y0, ln a)`` per subject.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

#: Bounds of ln a (a in 1/yr) and of g = ln K - ln V0 in the fits.
LOG_A_BOUNDS: tuple[float, float] = (float(np.log(1e-3)), float(np.log(5.0)))
GAP_BOUNDS: tuple[float, float] = (-5.0, 5.0)


@dataclass(frozen=True)
class GompertzPrior:
    """Gaussian prior on ``ln a`` and ``g = ln K - ln V0``; ``noise_sd`` is the sd of measured ln V about the law.

    ``corr`` is the prior correlation of ``ln a`` and ``g``. ``coupling = (c0, c1)`` switches to the reduced model
    ``g = c0 + c1 ln a`` (then ``mu_g``/``sd_g``/``corr`` are unused).
    """

    mu_log_a: float
    sd_log_a: float
    mu_gap: float
    sd_gap: float
    noise_sd: float
    coupling: tuple[float, float] | None = None
    corr: float = 0.0


@dataclass(frozen=True)
class GompertzFit:
    """MAP parameters and their Laplace covariance (order ``(y0, ln a, g)``, or ``(y0, ln a)`` when reduced)."""

    y0: float
    log_a: float
    gap: float
    cov: np.ndarray
    noise_sd: float
    coupling: tuple[float, float] | None = None

    @property
    def a(self) -> float:
        return float(np.exp(self.log_a))

    @property
    def log_k(self) -> float:
        return self.y0 + self.gap

    def log_volume(self, t: np.ndarray) -> np.ndarray:
        """``y(t) = y0 + g (1 - exp(-a t))`` at times ``t`` (years since the first scan)."""
        return self.y0 + self.gap * (1.0 - np.exp(-self.a * np.asarray(t, dtype=float)))

    def predictive_sd(self, t: np.ndarray) -> np.ndarray:
        """sd of a measured ln V at ``t``: ``sqrt(grad^T Cov grad + s^2)``."""
        grad = _design(np.asarray(t, dtype=float), self.log_a, self.gap, self.coupling)
        var = np.einsum("ij,jk,ik->i", grad, self.cov, grad)
        return np.sqrt(np.maximum(var, 0.0) + self.noise_sd**2)


def _design(t: np.ndarray, log_a: float, gap: float, coupling: tuple[float, float] | None) -> np.ndarray:
    """d y(t) / d theta, rows per time."""
    a = np.exp(log_a)
    e = np.exp(-a * t)
    d_log_a = gap * a * t * e
    if coupling is None:
        return np.stack([np.ones_like(t), d_log_a, 1.0 - e], axis=1)
    return np.stack([np.ones_like(t), d_log_a + coupling[1] * (1.0 - e)], axis=1)


def fit_gompertz_map(t: np.ndarray, y: np.ndarray, prior: GompertzPrior) -> GompertzFit:
    """MAP fit of one subject's log-volumes ``y`` at times ``t`` (years since its first scan), see the module doc."""
    t = np.asarray(t, dtype=float)
    y = np.asarray(y, dtype=float)
    s = prior.noise_sd
    coupling = prior.coupling
    la0 = float(np.clip(prior.mu_log_a, LOG_A_BOUNDS[0] + 1e-6, LOG_A_BOUNDS[1] - 1e-6))

    if coupling is None:

        def unpack(p: np.ndarray) -> tuple[float, float, float]:
            return p[0], p[1], p[2]

        x0 = np.array([y[0], la0, float(np.clip(prior.mu_gap, *GAP_BOUNDS))])
        lower, upper = [-np.inf, LOG_A_BOUNDS[0], GAP_BOUNDS[0]], [np.inf, LOG_A_BOUNDS[1], GAP_BOUNDS[1]]
    else:

        def unpack(p: np.ndarray) -> tuple[float, float, float]:
            return p[0], p[1], coupling[0] + coupling[1] * p[1]

        x0 = np.array([y[0], la0])
        lower, upper = [-np.inf, LOG_A_BOUNDS[0]], [np.inf, LOG_A_BOUNDS[1]]

    rho = float(prior.corr) if coupling is None else 0.0
    if not -1.0 < rho < 1.0:
        raise ValueError(f"the prior correlation of ln a and g must lie in (-1, 1), got {rho}")
    root = np.sqrt(1.0 - rho**2)

    def residuals(p: np.ndarray) -> np.ndarray:
        y0, la, g = unpack(p)
        pred = y0 + g * (1.0 - np.exp(-np.exp(la) * t))
        z1 = (la - prior.mu_log_a) / prior.sd_log_a
        r = [(pred - y) / s, [z1]]
        if coupling is None:
            r.append([((g - prior.mu_gap) / prior.sd_gap - rho * z1) / root])
        return np.concatenate(r)

    def jacobian(p: np.ndarray) -> np.ndarray:
        y0, la, g = unpack(p)
        rows = [_design(t, la, g, coupling) / s]
        prior_rows = np.zeros((1 if coupling is not None else 2, len(p)))
        prior_rows[0, 1] = 1.0 / prior.sd_log_a
        if coupling is None:
            prior_rows[1, 1] = -rho / (prior.sd_log_a * root)
            prior_rows[1, 2] = 1.0 / (prior.sd_gap * root)
        return np.concatenate(rows + [prior_rows])

    res = least_squares(residuals, x0, jac=jacobian, bounds=(lower, upper), method="trf", x_scale="jac")
    jac = jacobian(res.x)
    cov = np.linalg.pinv(jac.T @ jac)
    y0, la, g = unpack(res.x)
    return GompertzFit(y0=float(y0), log_a=float(la), gap=float(g), cov=cov, noise_sd=s, coupling=coupling)
