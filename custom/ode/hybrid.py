"""Hybrid forecaster: a covariate-informed empirical-Bayes Gompertz fit on observed log-volumes, and a latent
Neural ODE for the other latent coordinates driven by that volume trajectory.

Per subject b with observed scans i (times t_i in years since its first scan):

* observed log-volume y_i: the segmentation-measured ln V when the scan has a segmentation (``measured``), with
  noise sd sigma_meas (learned); otherwise the encoder's read-out ln V = w . z_i + c, with the read-out sd
  sigma_read estimated on the training scans (RMSE of read-out against measured ln V, a fixed buffer); or, given a
  segmentation network's ln V for the scan (``y_images``, the tumour_seg bundle's volumes), that value with its noise
  sd sigma_seg (``seg_volume_sd``).
* image-informed prior on theta = (ln a, gap = ln K - ln V0, ln V0) (empirical Bayes, Benzekry et al. 2014):

      mean_b  = mu_pop + W_mu f_b,           ln sd_b = ln s_pop + W_s f_b,

  with f_b the mean of the subject's observed standardised latents (the covariates). W_mu, W_s are
  zero-initialised and weight-decayed, so with no signal the model is the population-prior Gompertz fit.
* posterior and predictive of y(t) = ln V0 + gap (1 - e^{-a t}): :class:`~custom.ode.gompertz_posterior.
  GompertzPosterior` (exact given a, a grid over ln a). The forecast is the predictive mean of ln V; its
  predictive sd adds the measurement noise of the target scan: sd^2 = Var[y(t)] + sigma_meas^2.
* other latent coordinates: dz_free/dt = MLP(z_free, y*(t) - y*(t_last), dy*/dt) from the last observed scan
  (torchdiffeq, through :class:`~custom.ode.model.LatentODEForecaster`'s batched irregular-time solve), with y* the
  MAP Gompertz curve; the declared volume coordinate of the forecast latent is the predictive mean mapped back
  through the read-out (nothing couples into it), so decoded future images come out of the encoder's decoder.

``forward`` returns the forecast mean ln V [B, m] (one tensor, for MONAI's bundle tools); :meth:`predict` returns
everything (means, sds, MAP parameters, the posterior mean rate, forecast latents).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from custom.ode.dynamics import smooth_mlp
from custom.ode.gompertz_posterior import GompertzPosterior, GompertzPrior3
from custom.ode.model import LatentODEForecaster

#: ln sd bounds of the per-subject prior (keeps the 2 x 2 solves well conditioned)
LOG_SD_BOUNDS: tuple[float, float] = (math.log(0.02), math.log(5.0))


class VolumeDrivenDynamics(nn.Module):
    """f(t, z_free) = MLP([z_free, y*(t) - y*(t_last), dy*/dt]) for the non-volume latent coordinates.

    ``set_drive(theta, t_last)`` gives the per-subject MAP Gompertz parameters (ln a, gap, ln V0) [B, 3] and the
    time of the last observed scan [B] (years since the first); the solve runs in elapsed time tau = t - t_last.
    """

    def __init__(self, n_free: int, hidden: int = 64) -> None:
        super().__init__()
        self.mlp = smooth_mlp(n_free + 2, n_free, hidden)
        self.theta: torch.Tensor | None = None
        self.t_last: torch.Tensor | None = None
        self.nfe = 0

    def set_drive(self, theta: torch.Tensor, t_last: torch.Tensor) -> None:
        self.theta, self.t_last = theta, t_last

    def forward(self, tau: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        la, gap, _ = self.theta.unbind(-1)
        a = torch.exp(la)
        e_last = torch.exp(-a * self.t_last)
        e_now = e_last * torch.exp(-a * tau)
        dy = gap * (e_last - e_now)  # y*(t) - y*(t_last)
        rate = a * gap * e_now  # dy*/dt
        return self.mlp(torch.cat([z, dy.unsqueeze(-1).to(z.dtype), rate.unsqueeze(-1).to(z.dtype)], -1))


class HybridGompertzForecaster(nn.Module):
    """See the module docstring.

    Args:
        z_dim: latent size Z of the encoder.
        vol_index: the encoder's declared log-volume coordinate (partition "vol"), or None (plain VAE: the
            read-out is a linear probe and every coordinate is driven by the ODE).
        hidden: width of the latent vector field's MLP.
        use_covariates: False fixes W_mu = W_s = 0 (the population-prior Gompertz model, the no-image ablation).
        covariate_sd: False fixes W_s = 0 (covariates move the prior means only; the sds stay population values).
        grid_size, a_min, a_max: grid over ln a in [ln a_min, ln a_max] (1/yr).
        method, step_size, rtol, atol: torchdiffeq solver of the latent ODE.
        a_init, gap_init, log_v0_init, sd_init: initial population prior (1/yr, ln units).
        sigma_meas_init: initial segmentation noise sd of ln V.
        seg_volume_sd: noise sd sigma_seg of a segmentation network's ln V (``y_images`` of :meth:`predict`); None
            when the forecaster is used without one.

    Buffers saved with the weights: ``latent_mean``, ``latent_std`` (training standardisation of the encoder means),
    ``readout_weight``, ``readout_bias`` (ln V = w . z_std + c) and ``readout_sd`` (sigma_read).

    Example:
        >>> m = HybridGompertzForecaster(z_dim=3, vol_index=0)
        >>> t = torch.tensor([[0.0, 1.0]])
        >>> m(torch.zeros(1, 2, 3), torch.tensor([[1.0, 1.2]]), torch.ones(1, 2, dtype=torch.bool), t,
        ...   torch.tensor([[2.0, 3.0]])).shape
        torch.Size([1, 2])
    """

    def __init__(
        self,
        z_dim: int,
        vol_index: int | None = None,
        hidden: int = 64,
        use_covariates: bool = True,
        covariate_sd: bool = False,
        grid_size: int = 64,
        a_min: float = 0.01,
        a_max: float = 5.0,
        method: str = "rk4",
        step_size: float | None = 0.1,
        rtol: float = 1e-3,
        atol: float = 1e-4,
        a_init: float = 0.3,
        gap_init: float = 1.0,
        log_v0_init: float = 2.0,
        sd_init: float = 1.0,
        sigma_meas_init: float = 0.05,
        seg_volume_sd: float | None = None,
    ) -> None:
        super().__init__()
        self.z_dim, self.vol_index, self.use_covariates = int(z_dim), vol_index, bool(use_covariates)
        self.covariate_sd = bool(covariate_sd)
        self.seg_volume_sd = None if seg_volume_sd is None else float(seg_volume_sd)
        self.hidden, self.grid_size, self.a_min, self.a_max = int(hidden), int(grid_size), float(a_min), float(a_max)
        self.method, self.step_size, self.rtol, self.atol = method, step_size, float(rtol), float(atol)
        self.prior_mean = nn.Parameter(torch.tensor([math.log(a_init), gap_init, log_v0_init]))
        self.prior_log_sd = nn.Parameter(torch.full((3,), math.log(sd_init)))
        self.covariates = nn.Linear(self.z_dim, 6)
        nn.init.zeros_(self.covariates.weight)
        nn.init.zeros_(self.covariates.bias)
        if not self.use_covariates:
            self.covariates.requires_grad_(False)
        self.log_sigma_meas = nn.Parameter(torch.tensor(math.log(sigma_meas_init)))
        self.free_index = [j for j in range(self.z_dim) if j != vol_index]
        self.ode = LatentODEForecaster(
            z_dim=len(self.free_index), vol_index=None, hidden=hidden, method=method, rtol=rtol, atol=atol,
            step_size=step_size,
        )  # fmt: skip
        self.ode.dynamics = VolumeDrivenDynamics(len(self.free_index), hidden)
        self.register_buffer("log_a_grid", torch.linspace(math.log(a_min), math.log(a_max), int(grid_size)))
        self.register_buffer("latent_mean", torch.zeros(self.z_dim))
        self.register_buffer("latent_std", torch.ones(self.z_dim))
        self.register_buffer("readout_weight", torch.zeros(self.z_dim))
        self.register_buffer("readout_bias", torch.zeros(()))
        self.register_buffer("readout_sd", torch.tensor(0.15))

    # ------------------------------------------------------------------ configuration kept with the weights
    def config(self) -> dict[str, Any]:
        """Constructor arguments that rebuild this network (written to ``models/model_config.json``)."""
        return {
            "z_dim": self.z_dim,
            "vol_index": self.vol_index,
            "hidden": self.hidden,
            "use_covariates": self.use_covariates,
            "covariate_sd": self.covariate_sd,
            "grid_size": self.grid_size,
            "a_min": self.a_min,
            "a_max": self.a_max,
            "method": self.method,
            "step_size": self.step_size,
            "rtol": self.rtol,
            "atol": self.atol,
            "seg_volume_sd": self.seg_volume_sd,
        }

    def set_latent_space(
        self, mean, std, readout_weight, readout_bias: float, readout_sd: float, log_v0_mean: float | None = None
    ) -> None:
        """Store the training standardisation, the read-out and its noise sd; ``log_v0_mean`` (the training
        subjects' mean first-scan ln V) initialises the population mean of ln V0."""
        dev, dt = self.latent_mean.device, self.latent_mean.dtype
        self.latent_mean.copy_(torch.as_tensor(mean, dtype=dt, device=dev))
        self.latent_std.copy_(torch.as_tensor(std, dtype=dt, device=dev))
        self.readout_weight.copy_(torch.as_tensor(readout_weight, dtype=dt, device=dev))
        self.readout_bias.fill_(float(readout_bias))
        self.readout_sd.fill_(float(readout_sd))
        if log_v0_mean is not None:
            with torch.no_grad():
                self.prior_mean[2] = float(log_v0_mean)

    def log_volume_readout(self, z: torch.Tensor) -> torch.Tensor:
        """ln V read out of standardised latents z [..., Z]."""
        return (z * self.readout_weight).sum(-1) + self.readout_bias

    # ------------------------------------------------------------------ the model
    def subject_prior(self, z_obs: torch.Tensor, obs_mask: torch.Tensor) -> GompertzPrior3:
        """Per-subject prior from the covariates f_b = masked mean of the observed standardised latents."""
        w = obs_mask.to(z_obs.dtype).unsqueeze(-1)
        f = (w * z_obs).sum(1) / w.sum(1).clamp_min(1.0)
        h = self.covariates(f) if self.use_covariates else torch.zeros(f.shape[0], 6, dtype=f.dtype, device=f.device)
        mean = self.prior_mean + h[:, :3]
        log_sd = (self.prior_log_sd + (h[:, 3:] if self.covariate_sd else torch.zeros_like(h[:, 3:]))).clamp(
            *LOG_SD_BOUNDS
        )
        return GompertzPrior3(mean=mean.double(), sd=torch.exp(log_sd).double())

    def predict(
        self,
        z_obs: torch.Tensor,
        y_obs: torch.Tensor,
        measured: torch.Tensor,
        t_obs: torch.Tensor,
        t_target: torch.Tensor,
        obs_mask: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
        with_latents: bool = True,
        y_images: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Forecast of every subject; inputs padded and left-aligned (see the module docstring).

        z_obs [B, k, Z] standardised encoder means; y_obs [B, k] measured ln V where ``measured`` [B, k] is True
        (entries elsewhere are replaced by the read-out of z_obs); t_obs [B, k], t_target [B, m] in years (any
        origin; the first observed scan becomes t = 0). ``y_images`` [B, k] (optional): a segmentation network's ln V,
        used with noise sd ``seg_volume_sd`` instead of the read-out where a scan is not ``measured`` and it is
        finite. Returns ``mean_log_v``, ``sd_log_v`` (with the target
        measurement noise), ``sd_curve`` (without), ``map`` (ln a, gap, ln V0) [B, 3], ``a_mean`` (exp of the
        posterior mean of ln a), ``images_only`` [B] (no segmentation observed) and, with ``with_latents``,
        ``z_pred`` [B, m, Z] (standardised forecast latents).
        """
        if obs_mask is None:
            obs_mask = torch.ones_like(t_obs, dtype=torch.bool)
        measured = measured & obs_mask
        t0 = t_obs[:, :1]
        s_obs, s_tgt = (t_obs - t0).double(), (t_target - t0).double()
        readout = self.log_volume_readout(z_obs).double()
        y = torch.where(measured, torch.nan_to_num(y_obs.double()), readout)
        sigma_meas = torch.exp(self.log_sigma_meas).double()
        r = torch.where(measured, sigma_meas**2, self.readout_sd.double() ** 2).expand_as(y)
        if y_images is not None and self.seg_volume_sd is not None:
            use_seg = ~measured & obs_mask & torch.isfinite(y_images)
            y = torch.where(use_seg, torch.nan_to_num(y_images.double()), y)
            r = torch.where(use_seg, torch.full_like(r, self.seg_volume_sd**2), r)
        prior = self.subject_prior(z_obs, obs_mask)
        post = GompertzPosterior(self.log_a_grid.double()).fit(s_obs, y, r, obs_mask.double(), prior)
        mean, var = GompertzPosterior.predict(post, s_tgt)
        dt = z_obs.dtype
        out = {
            "mean_log_v": mean.to(dt),
            "sd_curve": var.sqrt().to(dt),
            "sd_log_v": (var + sigma_meas**2).sqrt().to(dt),
            "map": post["map"].to(dt),
            "a_mean": torch.exp(post["log_a_mean"]).to(dt),
            "images_only": ~measured.any(1),
            "prior_mean": prior.mean.to(dt),
            "prior_sd": prior.sd.to(dt),
        }
        if with_latents:
            out["z_pred"] = self._latents(z_obs, s_obs, s_tgt, obs_mask, target_mask, post["map"], mean)
        return out

    def _latents(self, z_obs, s_obs, s_tgt, obs_mask, target_mask, theta, mean_log_v) -> torch.Tensor:
        n_obs = obs_mask.long().sum(1)
        rows = torch.arange(z_obs.shape[0], device=z_obs.device)
        z_last, s_last = z_obs[rows, n_obs - 1], s_obs[rows, n_obs - 1]
        tau = (s_tgt - s_last.unsqueeze(1)).to(z_obs.dtype)
        if target_mask is not None:
            tau = torch.where(target_mask, tau, torch.zeros_like(tau))
        self.ode.dynamics.set_drive(theta.to(z_obs.dtype), s_last.to(z_obs.dtype))
        z_free = self.ode.solve(z_last[:, self.free_index], tau)
        z = z_obs.new_zeros(*tau.shape, self.z_dim)
        z[..., self.free_index] = z_free
        if self.vol_index is not None:
            w = self.readout_weight[self.vol_index]
            z[..., self.vol_index] = (mean_log_v.to(z.dtype) - self.readout_bias) / w
        return z

    def forward(
        self,
        z_obs: torch.Tensor,
        y_obs: torch.Tensor,
        measured: torch.Tensor,
        t_obs: torch.Tensor,
        t_target: torch.Tensor,
        obs_mask: torch.Tensor | None = None,
        target_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Forecast mean ln V [B, m] at ``t_target`` (see :meth:`predict` for the inputs and the full output)."""
        return self.predict(z_obs, y_obs, measured, t_obs, t_target, obs_mask, target_mask, with_latents=False)[
            "mean_log_v"
        ]


def build_from_config(config: dict[str, Any]) -> HybridGompertzForecaster:
    """Rebuild the network from the constructor arguments in ``models/model_config.json``."""
    keys = HybridGompertzForecaster.__init__.__code__.co_varnames[
        1 : HybridGompertzForecaster.__init__.__code__.co_argcount
    ]
    return HybridGompertzForecaster(**{k: v for k, v in config.items() if k in keys})
