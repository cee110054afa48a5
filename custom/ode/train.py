"""Plain-Python training of the latent ODE forecaster on a trajectories dict (bundle configs call this).

Objective, on standardised latents of the target scans (those after the first k observed ones):

    L = mean_{targets, dims} (z_pred - z_true)^2  +  w_vol * mean_{targets} (ln V(z_pred) - ln V(z_true))^2

(the second term is the MSE of the volume read out of the latent, i.e. of the volume coordinate scaled to
ln mL), plus, with a volume coordinate and ``rate_weight > 0``, a rate-distillation term

    w_rate * mean_subjects (ln alpha_enc - ln a_fit)^2

where a_fit is the unregularised least-squares Gompertz rate of the subject's FULL training trajectory
(>= 3 scans, :func:`~custom.ode.gompertz.fit_gompertz` on read-out log-volumes). Two observed scans only
pin the product alpha * gap; this term teaches the encoder which split of it the later scans support.
The whole objective is minimised with AdamW (Loshchilov & Hutter 2019) over minibatches of subjects. With
``all_windows=True`` every run of k consecutive scans serves as a conditioning window (valid because the
field is autonomous), which multiplies the number of training examples for short trajectories.
The model state with the lowest validation loss (when a validation split exists) is returned.
"""

from __future__ import annotations

import copy
import time
from typing import Callable

import numpy as np
import torch

from custom.ode.data import (
    ConditionedBatch,
    LatentSpace,
    Trajectories,
    build_trajectories,
    condition_on_first_k,
    fit_latent_space,
    volume_index,
)
from custom.ode.evaluate import evaluate_forecasts, growth_plot_rows  # noqa: F401  (re-exported API)
from custom.ode.gompertz import fit_gompertz
from custom.ode.model import LatentODEForecaster

__all__ = ["fit_latent_ode", "evaluate_forecasts", "growth_plot_rows", "forecast_loss", "store_latent_space"]


def store_latent_space(model: LatentODEForecaster, space: LatentSpace) -> None:
    """Copy the standardisation and log-volume readout into the model's buffers (saved with its weights)."""
    dev, dt = model.latent_mean.device, model.latent_mean.dtype
    model.latent_mean.copy_(torch.as_tensor(space.mean, dtype=dt, device=dev))
    model.latent_std.copy_(torch.as_tensor(space.std, dtype=dt, device=dev))
    model.readout_weight.copy_(torch.as_tensor(space.readout.weight, dtype=dt, device=dev))
    model.readout_bias.fill_(float(space.readout.bias))


def shifted(tr: Trajectories, offset: int) -> Trajectories:
    """The same subjects with their first ``offset`` scans dropped (re-padded to the same length)."""
    pad = lambda x, fill: torch.cat([x[:, offset:], torch.full_like(x[:, :offset], fill)], dim=1)  # noqa: E731
    return Trajectories(
        subject_ids=list(tr.subject_ids),
        z=pad(tr.z, 0.0),
        t=pad(tr.t, 0.0),
        mask=pad(tr.mask, False),
        log_volume=pad(tr.log_volume, float("nan")),
        truth=tr.truth,
        growth_class=tr.growth_class,
    )


def conditioning_windows(
    tr: Trajectories, k: int, all_windows: bool, per_subject: torch.Tensor | None = None
) -> tuple[ConditionedBatch, torch.Tensor | None]:
    """First-k split of every subject, or of every k-scan window when ``all_windows``; also returns
    ``per_subject`` values [S] aligned to the windows (None when not given)."""
    offsets = range(max(1, tr.z.shape[1] - k)) if all_windows else range(1)
    parts = [shifted(tr, o) for o in offsets]
    merged = Trajectories(
        subject_ids=sum((p.subject_ids for p in parts), []),
        z=torch.cat([p.z for p in parts]),
        t=torch.cat([p.t for p in parts]),
        mask=torch.cat([p.mask for p in parts]),
        log_volume=torch.cat([p.log_volume for p in parts]),
    )
    batch = condition_on_first_k(merged, k)
    aligned = None if per_subject is None else per_subject.repeat(len(parts))[batch.index]
    return batch, aligned


def _take(batch: ConditionedBatch, idx: torch.Tensor, device) -> ConditionedBatch:
    return ConditionedBatch(**{k: getattr(batch, k)[idx].to(device) for k in batch.__dataclass_fields__})


def subject_rate_fits(tr: Trajectories, model: LatentODEForecaster) -> torch.Tensor:
    """Unregularised Gompertz rate a_fit [S] of each subject's full trajectory (nan with < 3 scans)."""
    logv = model.log_volume(tr.z.to(model.readout_weight.device)).detach().cpu().double().numpy()
    out = np.full(len(tr.subject_ids), np.nan)
    for i in range(len(out)):
        m = tr.mask[i].numpy()
        if m.sum() >= 3:
            t = tr.t[i].numpy()[m].astype(float)
            out[i] = fit_gompertz(t - t[0], logv[i][m], prior=None)[0]
    return torch.as_tensor(out, dtype=tr.z.dtype)


def forecast_loss(
    model: LatentODEForecaster,
    batch: ConditionedBatch,
    vol_weight: float,
    rate_target: torch.Tensor | None = None,
    rate_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Masked latent MSE + w_vol * log-volume MSE (+ w_rate * rate distillation), see module docstring."""
    z_pred = model(batch.z_obs, batch.t_obs, batch.t_tgt, batch.obs_mask, batch.tgt_mask)
    m = batch.tgt_mask
    latent = ((z_pred - batch.z_tgt) ** 2)[m].mean()
    vol = ((model.log_volume(z_pred) - model.log_volume(batch.z_tgt)) ** 2)[m].mean()
    loss = latent + vol_weight * vol
    rate = torch.zeros((), device=loss.device)
    if rate_weight > 0 and rate_target is not None and model.param_encoder is not None:
        ok = torch.isfinite(rate_target)
        if ok.any():
            alpha = model.current_alpha
            rate = ((torch.log(alpha[ok]) - torch.log(rate_target[ok])) ** 2).mean()
            loss = loss + rate_weight * rate
    return {"loss": loss, "latent_mse": latent, "vol_mse": vol, "rate_mse": rate}


def fit_latent_ode(
    traj: dict,
    k_obs: int = 2,
    epochs: int = 200,
    lr: float = 1e-2,
    weight_decay: float = 1e-2,
    method: str = "dopri5",
    seed: int = 0,
    device: str | torch.device = "cpu",
    hidden: int = 64,
    enc_hidden: int = 32,
    vol_weight: float = 1.0,
    batch_size: int | None = None,
    adjoint: bool = False,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    step_size: float | None = None,
    all_windows: bool = True,
    encoder_features: str = "volume",
    rate_weight: float = 0.0,
    val_every: int = 10,
    grad_clip: float = 1.0,
    log_fn: Callable[[dict], None] | None = None,
) -> tuple[LatentODEForecaster, list[dict]]:
    """Train a :class:`LatentODEForecaster` on the "train" split; returns (model in eval mode, history).

    ``history`` is a list of per-epoch dicts: epoch, loss, latent_mse, vol_mse, rate_mse, nfe (field
    evaluations of the last step), seconds, and val_loss every ``val_every`` epochs when a "validation"
    split has subjects with more than ``k_obs`` scans. ``batch_size=None`` uses all training windows in one
    step. Defaults (lr 1e-2, weight decay 1e-2, best-validation state) were chosen on the toy cohort.
    """
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = torch.device(device)
    space = fit_latent_space(traj)
    train_tr = build_trajectories(traj, "train", space)
    try:
        val = condition_on_first_k(build_trajectories(traj, "validation", space), k_obs)
        val = _take(val, torch.arange(len(val.index)), device)
    except ValueError:
        val = None
    vi = volume_index(traj)
    model = LatentODEForecaster(
        z_dim=train_tr.z.shape[-1],
        vol_index=vi,
        hidden=hidden,
        enc_hidden=enc_hidden,
        method=method,
        rtol=rtol,
        atol=atol,
        step_size=step_size,
        adjoint=adjoint,
        encoder_features=encoder_features,
    )
    store_latent_space(model, space)
    rates = subject_rate_fits(train_tr, model) if (vi is not None and rate_weight > 0) else None
    train, rate_target = conditioning_windows(train_tr, k_obs, all_windows, rates)
    model.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(train.index)
    bs = n if not batch_size else min(batch_size, n)
    gen = torch.Generator().manual_seed(seed)
    history: list[dict] = []
    best = (float("inf"), None)
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        perm = torch.randperm(n, generator=gen)
        sums = {"loss": 0.0, "latent_mse": 0.0, "vol_mse": 0.0, "rate_mse": 0.0}
        for start in range(0, n, bs):
            sel = perm[start : start + bs]
            mb = _take(train, sel, device)
            model.dynamics.nfe = 0
            rt = None if rate_target is None else rate_target[sel].to(device)
            terms = forecast_loss(model, mb, vol_weight, rt, rate_weight)
            opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            for k in sums:
                sums[k] += float(terms[k].detach()) * len(mb.index) / n
        row = {"epoch": epoch, **sums, "nfe": model.dynamics.nfe, "seconds": time.perf_counter() - t0}
        if val is not None and (epoch % val_every == 0 or epoch == epochs):
            model.eval()
            with torch.no_grad():
                row["val_loss"] = float(forecast_loss(model, val, vol_weight)["loss"])
            if row["val_loss"] < best[0]:
                best = (row["val_loss"], copy.deepcopy(model.state_dict()))
        history.append(row)
        if log_fn is not None:
            log_fn(row)
    if best[1] is not None:
        model.load_state_dict(best[1])
    model.eval()
    return model, history
