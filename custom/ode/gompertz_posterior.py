"""Bayesian per-subject Gompertz fit in log-volume: exact in (gap, ln V0) given the rate, a grid over ln a.

Model (time t in years since the subject's first scan, y = ln V in ln mL):

    y(t) = ln V0 + gap (1 - e^{-a t}),        gap = ln K - ln V0          (Gompertz, Laird 1964)
    y_i  ~ N(y(t_i), r_i)                     r_i = sigma_meas^2 (segmentation) or sigma_read^2 (read out)
    ln a ~ N(m_a, s_a^2),  gap ~ N(m_g, s_g^2),  ln V0 ~ N(m_v, s_v^2)     (independent, per subject)

Given a, y is linear in theta = (gap, ln V0) with design x(t) = (1 - e^{-a t}, 1), so the conditional posterior
is Gaussian with precision P = Sigma0^{-1} + X^T R^{-1} X, mean m = P^{-1} (Sigma0^{-1} mu0 + X^T R^{-1} y), and the
marginal likelihood of the observations is (Bishop 2006, eq. 3.86)

    ln p(y | a) = -1/2 [ y^T R^{-1} y + mu0^T Sigma0^{-1} mu0 - b^T P^{-1} b + ln|Sigma0| + ln|P| + sum_i ln(2 pi r_i) ]

with b = Sigma0^{-1} mu0 + X^T R^{-1} y. On a grid of ln a the posterior weights are
w_g ∝ N(ln a_g; m_a, s_a^2) p(y | a_g) (a discretised marginal posterior of ln a, as in the reduced-Gompertz
Bayesian fits of Vaghi et al. 2020, PLoS Comput Biol 16:e1007178), and the predictive distribution of y(s) is the
mixture sum_g w_g N(x_g(s) m_g, x_g(s)^T P_g^{-1} x_g(s)); its mean and variance are returned (moment matching).

The joint posterior mode (MAP) maximises, over (ln a, gap, ln V0),

    J = ln N(ln a; m_a, s_a^2) + ln N(gap; m_g, s_g^2) + ln N(ln V0; m_v, s_v^2) + sum_i ln N(y_i; y(t_i), r_i);

for fixed a its maximiser in (gap, ln V0) is the conditional mean m(a), so the MAP is a 1-D search of the profile
J(ln a, m(a)): the grid maximum refined by two parabolic (successive quadratic interpolation) steps.
Everything is batched over subjects and differentiable (closed forms, 2 x 2 inverses, a softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LOG_2PI = math.log(2.0 * math.pi)


@dataclass
class GompertzPrior3:
    """Per-subject Gaussian prior on (ln a, gap, ln V0): means ``mean [B, 3]`` and standard deviations ``sd [B, 3]``."""

    mean: torch.Tensor
    sd: torch.Tensor


def _conditional(
    log_a: torch.Tensor, t: torch.Tensor, y: torch.Tensor, r: torch.Tensor, w: torch.Tensor, prior: GompertzPrior3
) -> dict[str, torch.Tensor]:
    """Conditional posterior of (gap, ln V0) given ln a [B, G]; observations t, y, r, w [B, n] (w = 0/1 mask).

    Returns m [B, G, 2], cov [B, G, 2, 2], log_marginal [B, G] (ln p(y | a)), log_joint_at_mode [B, G] (J at
    (ln a, m(a))) and log_prior_a [B, G].
    """
    mu0, sd0 = prior.mean[:, 1:], prior.sd[:, 1:]  # [B, 2]
    prec0 = sd0.pow(-2)
    e = 1.0 - torch.exp(-torch.exp(log_a).unsqueeze(-1) * t.unsqueeze(1))  # [B, G, n]
    wr = (w / r).unsqueeze(1)  # [B, 1, n]
    yy = y.unsqueeze(1)
    p11 = prec0[:, :1] + (wr * e * e).sum(-1)  # gap-gap
    p12 = (wr * e).sum(-1)
    p22 = prec0[:, 1:] + wr.sum(-1).expand_as(p11)
    b1 = (prec0[:, :1] * mu0[:, :1]) + (wr * e * yy).sum(-1)
    b2 = (prec0[:, 1:] * mu0[:, 1:]) + (wr * yy).sum(-1).expand_as(b1)
    det = p11 * p22 - p12 * p12
    c11, c12, c22 = p22 / det, -p12 / det, p11 / det
    m1 = c11 * b1 + c12 * b2
    m2 = c12 * b1 + c22 * b2
    quad_y = (w * y * y / r).sum(-1, keepdim=True)
    quad_0 = (prec0 * mu0 * mu0).sum(-1, keepdim=True)
    b_pinv_b = b1 * m1 + b2 * m2
    log_det_s0 = (2.0 * torch.log(sd0)).sum(-1, keepdim=True)
    log_norm_r = (w * (torch.log(r) + LOG_2PI)).sum(-1, keepdim=True)
    log_marginal = -0.5 * (quad_y + quad_0 - b_pinv_b + log_det_s0 + torch.log(det) + log_norm_r)
    ma, sa = prior.mean[:, :1], prior.sd[:, :1]
    log_prior_a = -0.5 * (((log_a - ma) / sa) ** 2 + 2.0 * torch.log(sa) + LOG_2PI)
    resid = yy - (m2.unsqueeze(-1) + m1.unsqueeze(-1) * e)
    log_lik = -0.5 * (w.unsqueeze(1) * (resid * resid / r.unsqueeze(1) + torch.log(r.unsqueeze(1)) + LOG_2PI)).sum(-1)
    z = (torch.stack([m1, m2], -1) - mu0.unsqueeze(1)) / sd0.unsqueeze(1)
    log_prior_theta = -0.5 * (z * z + 2.0 * torch.log(sd0).unsqueeze(1) + LOG_2PI).sum(-1)
    return {
        "m": torch.stack([m1, m2], -1),
        "cov": torch.stack([torch.stack([c11, c12], -1), torch.stack([c12, c22], -1)], -2),
        "log_marginal": log_marginal,
        "log_joint_at_mode": log_prior_a + log_prior_theta + log_lik,
        "log_prior_a": log_prior_a,
    }


def neg_log_posterior(
    theta: torch.Tensor, t: torch.Tensor, y: torch.Tensor, r: torch.Tensor, w: torch.Tensor, prior: GompertzPrior3
) -> torch.Tensor:
    """-J(theta) [B] for theta = (ln a, gap, ln V0) [B, 3] (the MAP objective of the module docstring)."""
    la, gap, lv0 = theta.unbind(-1)
    pred = lv0.unsqueeze(-1) + gap.unsqueeze(-1) * (1.0 - torch.exp(-torch.exp(la).unsqueeze(-1) * t))
    nll = 0.5 * (w * ((y - pred) ** 2 / r + torch.log(r) + LOG_2PI)).sum(-1)
    z = (theta - prior.mean) / prior.sd
    return nll + 0.5 * (z * z + 2.0 * torch.log(prior.sd) + LOG_2PI).sum(-1)


def _parabola_vertex(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """Vertex of the parabola through (x_j, f_j), j = 0..2 (columns of [B, 3]); the middle point when degenerate."""
    x0, x1, x2 = x.unbind(-1)
    f0, f1, f2 = f.unbind(-1)
    num = (x1 - x0) ** 2 * (f1 - f2) - (x1 - x2) ** 2 * (f1 - f0)
    den = (x1 - x0) * (f1 - f2) - (x1 - x2) * (f1 - f0)
    ok = den.abs() > 1e-12
    step = torch.where(ok, 0.5 * num / torch.where(ok, den, torch.ones_like(den)), torch.zeros_like(den))
    return x1 - step.clamp(-(x2 - x0).abs(), (x2 - x0).abs())


class GompertzPosterior:
    """Grid posterior over ln a with the exact conditional in (gap, ln V0); see the module docstring.

    Args:
        log_a_grid: grid of ln a [G] (1/yr), ascending and evenly spaced.
    """

    def __init__(self, log_a_grid: torch.Tensor) -> None:
        self.grid = log_a_grid

    def fit(
        self, t: torch.Tensor, y: torch.Tensor, r: torch.Tensor, w: torch.Tensor, prior: GompertzPrior3
    ) -> dict[str, torch.Tensor]:
        """Posterior of every subject: grid weights [B, G], conditional moments, the MAP (ln a, gap, ln V0) [B, 3]
        and the posterior mean of ln a [B]. Observations with w = 0 are ignored (their y may be anything finite)."""
        y = torch.where(w > 0, y, torch.zeros_like(y))
        grid = self.grid.to(device=t.device, dtype=t.dtype).unsqueeze(0).expand(t.shape[0], -1)
        cond = _conditional(grid, t, y, r, w, prior)
        weights = torch.softmax(cond["log_prior_a"] + cond["log_marginal"], dim=-1)
        map_theta = self._map(grid, cond["log_joint_at_mode"], t, y, r, w, prior)
        return {
            **cond,
            "grid": grid,
            "weights": weights,
            "map": map_theta,
            "log_a_mean": (weights * grid).sum(-1),
        }

    def _map(self, grid, joint, t, y, r, w, prior) -> torch.Tensor:
        g = joint.shape[-1]
        best = joint.argmax(-1).clamp(1, g - 2)
        cols = torch.stack([best - 1, best, best + 1], -1)
        x, f = grid.gather(1, cols), joint.gather(1, cols)
        la = _parabola_vertex(x, f)
        h = 0.25 * (grid[:, 1] - grid[:, 0])
        for _ in range(2):
            x = torch.stack([la - h, la, la + h], -1)
            f = _conditional(x, t, y, r, w, prior)["log_joint_at_mode"]
            la = _parabola_vertex(x, f)
            h = 0.1 * h
        la = la.clamp(grid[:, 0], grid[:, -1])
        m = _conditional(la.unsqueeze(-1), t, y, r, w, prior)["m"][:, 0]
        return torch.cat([la.unsqueeze(-1), m], -1)

    @staticmethod
    def predict(post: dict[str, torch.Tensor], s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixture predictive mean and variance of y at times s [B, m] (years since the first scan), without the
        noise of a new measurement."""
        a = torch.exp(post["grid"]).unsqueeze(-1)  # [B, G, 1]
        e = 1.0 - torch.exp(-a * s.unsqueeze(1))  # [B, G, m]
        m, c = post["m"], post["cov"]
        mean_g = m[..., 1:2] + m[..., 0:1] * e
        var_g = c[..., 0, 0:1] * e * e + 2.0 * c[..., 0, 1:2] * e + c[..., 1, 1:2]
        wgt = post["weights"].unsqueeze(-1)
        mean = (wgt * mean_g).sum(1)
        var = (wgt * (var_g + mean_g * mean_g)).sum(1) - mean * mean
        return mean, var.clamp_min(1e-12)


def gompertz_curve(theta: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """y(s) = ln V0 + gap (1 - e^{-a s}) for theta = (ln a, gap, ln V0) [B, 3] at times s [B, m]."""
    la, gap, lv0 = (v.unsqueeze(-1) for v in theta.unbind(-1))
    return lv0 + gap * (1.0 - torch.exp(-torch.exp(la) * s))
