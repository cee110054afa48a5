"""Amortised per-subject Gompertz parameters (alpha, z_K) from a subject's observed latents.

Rather than fitting (alpha, z_K) per subject by optimisation (as :func:`~custom.ode.gompertz.fit_gompertz`
does), a small MLP maps what is observed to corrections around learned population values (amortised
inference, Kingma & Welling 2014; per-subject ODE parameters as in Rubanova et al. 2019):

    features = [z_last, z_first, (z_last - z_first) / (t_last - t_first), has_two, t_last - t_first]

restricted to the volume coordinate when ``features="volume"`` (default: few inputs, hard to overfit on a
few hundred subjects) or over all Z coordinates when ``features="all"`` (lets location/shape inform growth).
    alpha    = softplus(rho_pop + h_1(features))             (> 0, in 1/yr when times are in years)
    z_K      = z_last[vol] + gap + h_2(features)             (target level relative to the last observation)

with gap = g_pop (a learned population gap) when only one scan is observed, and, when two or more are
observed and ``two_point_k`` is on (default), the gap that makes the Gompertz curve with rate alpha pass
exactly through the first and last observed volume coordinates:

    z_last - z_K = (z_first - z_K) e^{-alpha dt}   =>   gap = z_K - z_last = (z_last - z_first) / (e^{alpha dt} - 1)

so the encoder only has to learn the rate (from the curvature that the later training scans reveal), and the
observed trend is reproduced by construction. For small alpha dt the gap grows like slope/alpha: a slowly
changing tumour's plateau is poorly determined, but its short-horizon forecast (gap * alpha * h = slope * h)
is not.

``h`` has a zero-initialised last layer, so training starts from the population model. With a single
observed scan the difference quotient is zero and ``has_two = 0``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def last_observed(z_obs: torch.Tensor, t_obs: torch.Tensor, obs_mask: torch.Tensor | None):
    """(z, t, index) of each subject's last observed scan; observations must be left-aligned."""
    b, k = t_obs.shape
    if obs_mask is None:
        idx = torch.full((b,), k - 1, dtype=torch.long, device=t_obs.device)
    else:
        idx = obs_mask.long().sum(1) - 1
        if (idx < 0).any():
            raise ValueError("every subject needs at least one observed scan")
    rows = torch.arange(b, device=t_obs.device)
    return z_obs[rows, idx], t_obs[rows, idx], idx


class SubjectParamEncoder(nn.Module):
    """Maps observed latents z_obs [B, k, Z] and times t_obs [B, k] to (alpha [B], z_K [B])."""

    def __init__(
        self,
        z_dim: int,
        vol_index: int,
        hidden: int = 32,
        alpha_init: float = 0.3,
        gap_init: float = 0.5,
        features: str = "volume",
        two_point_k: bool = True,
    ) -> None:
        super().__init__()
        if features not in ("volume", "all"):
            raise ValueError("features must be 'volume' or 'all'")
        self.vol_index, self.features, self.two_point_k = vol_index, features, two_point_k
        n_in = 1 if features == "volume" else z_dim
        self.rho_pop = nn.Parameter(torch.tensor(math.log(math.expm1(alpha_init))))
        self.gap_pop = nn.Parameter(torch.tensor(float(gap_init)))
        self.net = nn.Sequential(nn.Linear(3 * n_in + 2, hidden), nn.SiLU(), nn.Linear(hidden, 2))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, z_obs: torch.Tensor, t_obs: torch.Tensor, obs_mask: torch.Tensor | None = None):
        z_last, t_last, idx = last_observed(z_obs, t_obs, obs_mask)
        z_first, t_first = z_obs[:, 0], t_obs[:, 0]
        j = self.vol_index
        x_last, x_first = (
            (z_last[:, j : j + 1], z_first[:, j : j + 1]) if self.features == "volume" else (z_last, z_first)
        )
        dt = (t_last - t_first).unsqueeze(1)
        has_two = (idx > 0).to(z_obs.dtype).unsqueeze(1)
        slope = torch.where(has_two > 0, (x_last - x_first) / dt.clamp_min(1e-6), torch.zeros_like(x_last))
        h = self.net(torch.cat([x_last, x_first, slope, has_two, dt], dim=1))
        alpha = nn.functional.softplus(self.rho_pop + h[:, 0])
        gap = self.gap_pop.expand(z_last.shape[0])
        if self.two_point_k:
            dz = z_last[:, j] - z_first[:, j]
            two_point = dz / torch.expm1(alpha * dt[:, 0]).clamp_min(1e-3)
            gap = torch.where(has_two[:, 0] > 0, two_point, gap)
        z_k = z_last[:, j] + gap + h[:, 1]
        return alpha, z_k
