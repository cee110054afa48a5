"""Forecast baselines given exactly what the Neural ODE sees: the encoded observed scans and their times.

* LOCF (last observation carried forward): z(t) = z(t_last).
* Linear: per-subject, per-dimension least-squares line through the observed latents, extrapolated
  (with a single observation it is LOCF). Through the affine readout this is also a linear log-volume trend.
* Gompertz fit: :func:`~custom.ode.gompertz.fit_gompertz` on the log-volumes read out of the observed latents,
  regularised towards population values fit on the training subjects (MAP, see ``GompertzPrior``).
* Oracle (synthetic cohorts): the true Gompertz curve V0, a, K of the subject, scored against the *measured*
  volume, i.e. the floor set by measurement noise.

All functions take a :class:`~custom.ode.data.ConditionedBatch`; latents are standardised.
"""

from __future__ import annotations

import numpy as np
import torch

from custom.ode.data import ConditionedBatch, Trajectories
from custom.ode.gompertz import GompertzPrior, fit_gompertz, gompertz_log_volume
from custom.ode.readout import VolumeReadout


def locf_forecast(batch: ConditionedBatch) -> torch.Tensor:
    """z_pred [B, m, Z] = each subject's last observed latent."""
    n = batch.obs_mask.long().sum(1) - 1
    z_last = batch.z_obs[torch.arange(len(n)), n]
    return z_last.unsqueeze(1).expand_as(batch.z_tgt).clone()


def linear_forecast(batch: ConditionedBatch) -> torch.Tensor:
    """Per-subject ordinary-least-squares line z = c + s t over the observed scans, evaluated at the targets.

    slope s = sum w (t - tbar)(z - zbar) / sum w (t - tbar)^2 with w the observation mask; subjects with one
    observation (sum w (t - tbar)^2 = 0) get s = 0 (LOCF).
    """
    w = batch.obs_mask.to(batch.z_obs.dtype)
    n = w.sum(1, keepdim=True)
    tbar = (w * batch.t_obs).sum(1, keepdim=True) / n
    dt = (batch.t_obs - tbar) * w
    zbar = (w.unsqueeze(-1) * batch.z_obs).sum(1) / n
    sxx = (dt * dt).sum(1)
    sxz = (dt.unsqueeze(-1) * (batch.z_obs - zbar.unsqueeze(1))).sum(1)
    slope = torch.where(sxx.unsqueeze(-1) > 1e-12, sxz / sxx.clamp_min(1e-12).unsqueeze(-1), torch.zeros_like(sxz))
    return zbar.unsqueeze(1) + slope.unsqueeze(1) * (batch.t_tgt - tbar).unsqueeze(-1)


def population_gompertz_prior(
    train: Trajectories, readout: VolumeReadout, k: int, w_a: float = 0.3, w_k: float = 0.05
) -> tuple[GompertzPrior, float]:
    """Population rate a_pop and gap g_pop = ln K - y(t_k) from unregularised fits of training subjects
    with >= 3 scans (medians); returns (prior with a_pop, g_pop). ln K_pop of a subject = y_last_obs + g_pop.
    """
    a_list, gaps = [], []
    logv = readout.log_volume(train.z.double().numpy())
    for i in range(len(train.subject_ids)):
        m = train.mask[i].numpy()
        if m.sum() < 3:
            continue
        t, y = train.t[i].numpy()[m].astype(float), logv[i][m]
        a, log_k, _ = fit_gompertz(t - t[0], y, prior=None)
        a_list.append(a)
        gaps.append(log_k - y[min(k, len(y)) - 1])
    a_pop = float(np.median(a_list)) if a_list else 0.3
    g_pop = float(np.median(gaps)) if gaps else 0.5
    return GompertzPrior(a_pop=a_pop, log_k_pop=0.0, w_a=w_a, w_k=w_k), g_pop


def gompertz_fit_forecast(
    batch: ConditionedBatch, readout: VolumeReadout, prior: GompertzPrior, gap_pop: float
) -> tuple[torch.Tensor, np.ndarray]:
    """Per-subject MAP Gompertz fit on read-out observed log-volumes; returns (ln V at targets [B, m], a [B])."""
    logv_obs = readout.log_volume(batch.z_obs.double().numpy())
    out = np.zeros(tuple(batch.t_tgt.shape))
    a_fit = np.zeros(len(out))
    for i in range(len(out)):
        m = batch.obs_mask[i].numpy()
        t, y = batch.t_obs[i].numpy()[m].astype(float), logv_obs[i][m]
        p = GompertzPrior(a_pop=prior.a_pop, log_k_pop=float(y[-1] + gap_pop), w_a=prior.w_a, w_k=prior.w_k)
        a, log_k, y0 = fit_gompertz(t - t[0], y, prior=p)
        a_fit[i] = a
        out[i] = gompertz_log_volume(batch.t_tgt[i].numpy().astype(float) - t[0], y0, a, log_k)
    return torch.as_tensor(out, dtype=batch.z_obs.dtype), a_fit


def oracle_log_volume(t_tgt: torch.Tensor, truth: dict[str, np.ndarray]) -> torch.Tensor:
    """ln V of the true Gompertz curve V(t) = K exp(ln(V0/K) e^{-a t}) (t in years, V0 at t = 0)."""
    v0, a, k = (np.asarray(truth[key], dtype=float)[:, None] for key in ("V0_ml", "a_per_year", "K_ml"))
    y = gompertz_log_volume(t_tgt.numpy().astype(float), np.log(v0), a, np.log(k))
    return torch.as_tensor(y, dtype=t_tgt.dtype)
