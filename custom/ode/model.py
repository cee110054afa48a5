"""Latent ODE forecaster: from a subject's first observed latents to its latents at any later (or earlier) time.

Integration starts at each subject's LAST observed scan (the freshest state; the earlier scans inform the
per-subject Gompertz parameters through :class:`~custom.ode.subject_params.SubjectParamEncoder`).

Irregular per-subject times without per-subject loops: the field is autonomous, so each subject is solved in
its own elapsed time tau = t - t_last. All subjects then share tau = 0 as the initial time; the batch is
integrated once over the sorted union of all requested tau > 0 (Rubanova et al. 2019, "union of time points")
and each subject's outputs are gathered by index. Requested times before the last observation (tau < 0,
e.g. to draw the curve through the conditioning scans) are solved by a second, backward solve over the union
of negative tau. Padded targets (``target_mask`` False) are mapped to tau = 0 and cost nothing.

Note: an adaptive solver controls the error of the whole batch jointly, so batched and one-by-one solutions
agree to the solver tolerance (not bit-for-bit).
"""

from __future__ import annotations

import torch
from torch import nn
from torchdiffeq import odeint, odeint_adjoint

from custom.ode.dynamics import LatentDynamics
from custom.ode.subject_params import SubjectParamEncoder, last_observed


class LatentODEForecaster(nn.Module):
    """Forecasts standardised latents: ``forward(z_obs [B,k,Z], t_obs [B,k], t_target [B,m]) -> [B,m,Z]``.

    Args:
        z_dim: latent size Z.
        vol_index: declared volume coordinate (Gompertz dynamics) or None (plain MLP Neural ODE).
        hidden: MLP width of the vector field. enc_hidden: width of the per-subject parameter encoder.
        method: torchdiffeq method ("dopri5" adaptive, "rk4" fixed step with ``step_size``).
        rtol, atol: adaptive tolerances (torchdiffeq's defaults 1e-7/1e-9 are needlessly tight here).
        step_size: fixed-step size (same time unit as t) for "rk4"/"euler"/"midpoint".
        adjoint: use ``odeint_adjoint`` (O(1) memory in the number of steps, usually slower for small states).
        alpha_init, gap_init: initial population Gompertz rate (1/yr) and z_K - z_last gap.
        encoder_features: "volume" or "all" latent coordinates feed the per-subject parameter encoder.

    The buffers ``latent_mean``, ``latent_std``, ``readout_weight``, ``readout_bias`` keep the latent
    standardisation and the log-volume readout with the weights (see :mod:`custom.ode.data`).

    Example:
        >>> m = LatentODEForecaster(z_dim=3, vol_index=0)
        >>> m(torch.zeros(2, 2, 3), torch.tensor([[0., 1.], [0., .5]]), torch.tensor([[2., 3.], [1., 1.]])).shape
        torch.Size([2, 2, 3])
    """

    def __init__(
        self,
        z_dim: int,
        vol_index: int | None = None,
        hidden: int = 64,
        enc_hidden: int = 32,
        method: str = "dopri5",
        rtol: float = 1e-3,
        atol: float = 1e-4,
        step_size: float | None = None,
        adjoint: bool = False,
        alpha_init: float = 0.3,
        gap_init: float = 0.5,
        encoder_features: str = "volume",
    ) -> None:
        super().__init__()
        self.z_dim, self.vol_index = z_dim, vol_index
        self.method, self.rtol, self.atol, self.step_size, self.adjoint = method, rtol, atol, step_size, adjoint
        self.dynamics = LatentDynamics(z_dim, vol_index, hidden)
        self.param_encoder = (
            SubjectParamEncoder(z_dim, vol_index, enc_hidden, alpha_init, gap_init, encoder_features)
            if vol_index is not None
            else None
        )
        self.register_buffer("latent_mean", torch.zeros(z_dim))
        self.register_buffer("latent_std", torch.ones(z_dim))
        self.register_buffer("readout_weight", torch.zeros(z_dim))
        self.register_buffer("readout_bias", torch.zeros(()))
        self.last_subject_params: dict[str, torch.Tensor] = {}
        self.current_alpha: torch.Tensor | None = None

    # ------------------------------------------------------------------ volume readout
    def log_volume(self, z: torch.Tensor) -> torch.Tensor:
        """ln V (mL) of standardised latents z [..., Z] through the stored affine readout."""
        return (z * self.readout_weight).sum(-1) + self.readout_bias

    # ------------------------------------------------------------------ solving
    def _options(self) -> dict | None:
        if self.step_size is None:
            return None
        opts: dict = {"step_size": self.step_size}
        if self.method == "rk4":
            opts["interp"] = "cubic"  # cubic Hermite between grid points for requested times off the grid
        return opts

    def _integrate(self, z0: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """Solve from z0 [B, Z] over the strictly monotone ``grid`` [G] (grid[0] = 0); returns [G, B, Z]."""
        if grid.numel() == 1:
            return z0.unsqueeze(0)
        kw = dict(rtol=self.rtol, atol=self.atol, method=self.method, options=self._options())
        if self.adjoint:
            params = tuple(p for p in self.dynamics.parameters() if p.requires_grad)
            params += tuple(p for p in self.dynamics.subject_params() if p.requires_grad)
            return odeint_adjoint(self.dynamics, z0, grid, adjoint_params=params, **kw)
        return odeint(self.dynamics, z0, grid, **kw)

    def solve(self, z0: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """z at elapsed times tau [B, m] (any sign) from z0 [B, Z] at tau = 0, in one batched solve per direction."""
        b, m = tau.shape
        out = z0.unsqueeze(1).expand(b, m, self.z_dim).clone()
        rows = torch.arange(b, device=tau.device).unsqueeze(1).expand(b, m)
        zero = tau.new_zeros(1)
        fwd = tau > 0
        if fwd.any():
            grid = torch.cat([zero, torch.unique(tau[fwd])])  # unique() returns sorted values
            sol = self._integrate(z0, grid)
            pos = torch.searchsorted(grid, tau[fwd])
            out[fwd] = sol[pos, rows[fwd]]
        bwd = tau < 0
        if bwd.any():
            neg = torch.unique(tau[bwd])  # ascending, all < 0
            grid = torch.cat([zero, neg.flip(0)])  # 0 > ... decreasing
            sol = self._integrate(z0, grid)
            pos = neg.numel() - torch.searchsorted(neg, tau[bwd])
            out[bwd] = sol[pos, rows[bwd]]
        return out

    def forward(
        self,
        z_obs: torch.Tensor,
        t_obs: torch.Tensor,
        t_target: torch.Tensor,
        obs_mask: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted standardised latents z_pred [B, m, Z] at ``t_target`` (padded entries: the last observed z).

        Observations must be left-aligned (``obs_mask`` True for the first n_b entries of each row).
        Per-subject (alpha, z_K) of the last call are kept in ``self.last_subject_params``.
        """
        z0, t0, _ = last_observed(z_obs, t_obs, obs_mask)
        if self.param_encoder is not None:
            alpha, z_k = self.param_encoder(z_obs, t_obs, obs_mask)
            # fresh graph nodes: z_k is computed from alpha, and the adjoint's vector-Jacobian product w.r.t.
            # the raw alpha would also run through z_k, counting that path twice
            self.dynamics.set_subject_params(alpha.view_as(alpha), z_k.view_as(z_k))
            self.current_alpha = alpha  # with graph, for auxiliary losses on the rate
            self.last_subject_params = {"alpha": alpha.detach(), "z_k": z_k.detach()}
        tau = t_target - t0.unsqueeze(1)
        if target_mask is not None:
            tau = torch.where(target_mask, tau, torch.zeros_like(tau))
        # the per-subject parameters stay set until the next call: the adjoint's backward solve needs them
        return self.solve(z0, tau)
