"""Held-out evaluation of a latent ODE forecaster against baselines, and per-subject rows for growth plots.

Every method gets the same information: the encoded first k scans of a held-out subject and their times.
Volume ground truth is the target scan's measured ``log_volume`` factor (from its segmentation); when the
trajectories carry no such factor, the volume read out of the target's own latent is used instead.
"""

from __future__ import annotations

import numpy as np
import torch

from custom.ode.baselines import (
    gompertz_fit_forecast,
    linear_forecast,
    locf_forecast,
    oracle_log_volume,
    population_gompertz_prior,
)
from custom.ode.data import ConditionedBatch, LatentSpace, Trajectories, build_trajectories, condition_on_first_k
from custom.ode.gompertz import gompertz_volume
from custom.ode.metrics import forecast_metrics, spearman
from custom.ode.model import LatentODEForecaster
from custom.ode.readout import VolumeReadout


def space_from_model(model: LatentODEForecaster) -> LatentSpace:
    """The standardisation + readout stored in the model's buffers."""
    readout = VolumeReadout(
        weight=model.readout_weight.detach().cpu().double().numpy(),
        bias=float(model.readout_bias),
        vol_index=model.vol_index,
    )
    return LatentSpace(
        mean=model.latent_mean.detach().cpu().double().numpy(),
        std=model.latent_std.detach().cpu().double().numpy(),
        readout=readout,
    )


def _true_log_volume(batch: ConditionedBatch, readout: VolumeReadout) -> torch.Tensor:
    lv = batch.logv_tgt
    if not torch.isfinite(lv[batch.tgt_mask]).any():
        lv = readout.log_volume(batch.z_tgt)
    return lv


def _has_truth(tr: Trajectories, index: torch.Tensor) -> bool:
    return bool(tr.truth) and all(
        np.isfinite(tr.truth[k][index.numpy()]).all() for k in ("V0_ml", "a_per_year", "K_ml")
    )


def _model_predict(
    model: LatentODEForecaster, batch: ConditionedBatch, t_target: torch.Tensor, target_mask: torch.Tensor | None
) -> torch.Tensor:
    dev = model.latent_mean.device
    with torch.no_grad():
        z = model(
            batch.z_obs.to(dev),
            batch.t_obs.to(dev),
            t_target.to(dev),
            batch.obs_mask.to(dev),
            None if target_mask is None else target_mask.to(dev),
        )
    return z.cpu()


def evaluate_forecasts(
    model: LatentODEForecaster, traj: dict, split: str = "test", k_obs: int = 2, include_baselines: bool = True
) -> dict[str, dict[str, float]]:
    """Metrics table ``method -> metrics`` on the subjects of ``split`` with more than ``k_obs`` scans.

    Methods: "latent_ode", and with ``include_baselines`` "locf", "linear", "gompertz_fit" and, when the
    trajectories carry per-subject truth, "oracle". Metrics (see :mod:`custom.ode.metrics`): latent_mse,
    logvol_mae, rel_vol_err_pct(+_median) at all targets and with suffix ``_last`` at each subject's last
    scan; for the ODE with a volume coordinate also alpha_spearman (recovered alpha vs true a; z_vol is a
    standardised ln V so alpha is in 1/yr), k_spearman and k_log_mae (|ln K_pred - ln K_true|), alpha_median.
    """
    model.eval()
    space = space_from_model(model)
    tr = build_trajectories(traj, split, space, dtype=model.latent_mean.dtype)
    batch = condition_on_first_k(tr, k_obs)
    lv_true = _true_log_volume(batch, space.readout)
    truth_ok = _has_truth(tr, batch.index)
    idx = batch.index.numpy()
    table: dict[str, dict[str, float]] = {}

    z_pred = _model_predict(model, batch, batch.t_tgt, batch.tgt_mask)
    res = forecast_metrics(z_pred, batch.z_tgt, space.readout.log_volume(z_pred), lv_true, batch.tgt_mask)
    if model.vol_index is not None:
        alpha = model.last_subject_params["alpha"].cpu().double().numpy()
        log_k = (
            float(model.readout_bias)
            + float(model.readout_weight[model.vol_index]) * model.last_subject_params["z_k"].cpu().double().numpy()
        )
        res["alpha_median"] = float(np.median(alpha))
        if truth_ok:
            a_true, k_true = tr.truth["a_per_year"][idx], tr.truth["K_ml"][idx]
            res["alpha_spearman"] = spearman(alpha, a_true)
            res["k_spearman"] = spearman(log_k, np.log(k_true))
            res["k_log_mae"] = float(np.mean(np.abs(log_k - np.log(k_true))))
    table["latent_ode"] = res
    if not include_baselines:
        return table

    for name, fn in (("locf", locf_forecast), ("linear", linear_forecast)):
        zb = fn(batch)
        table[name] = forecast_metrics(zb, batch.z_tgt, space.readout.log_volume(zb), lv_true, batch.tgt_mask)

    train_tr = build_trajectories(traj, "train", space, dtype=model.latent_mean.dtype)
    prior, gap_pop = population_gompertz_prior(train_tr, space.readout, k_obs)
    lv_g, a_fit = gompertz_fit_forecast(batch, space.readout, prior, gap_pop)
    zg = None
    if space.readout.vol_index is not None:
        zg = locf_forecast(batch)
        zg[..., space.readout.vol_index] = torch.as_tensor(
            space.readout.z_from_log_volume(lv_g.double().numpy()), dtype=zg.dtype
        )
    table["gompertz_fit"] = forecast_metrics(zg, batch.z_tgt, lv_g, lv_true, batch.tgt_mask)
    if truth_ok:
        table["gompertz_fit"]["alpha_spearman"] = spearman(a_fit, tr.truth["a_per_year"][idx])
        sub_truth = {k: v[idx] for k, v in tr.truth.items()}
        table["oracle"] = forecast_metrics(
            None, batch.z_tgt, oracle_log_volume(batch.t_tgt, sub_truth), lv_true, batch.tgt_mask
        )
    return table


def growth_plot_rows(
    model: LatentODEForecaster,
    traj: dict,
    split: str = "test",
    k_obs: int = 2,
    n_subjects: int = 12,
    n_dense: int = 60,
    extend_years: float = 1.0,
) -> list[dict]:
    """Per-subject curves for :func:`custom.plots.growth.plot_growth` (volumes in mL, times in years).

    Each row: subject_id, growth_class, t_scans, v_scans (measured, nan unknown), n_obs (= k_obs),
    t_dense, v_model (ODE forecast through all dense times), baselines {name: (t_dense, v)}, and
    truth (t_dense, v) when the subject's true Gompertz parameters are known, else None.
    """
    model.eval()
    space = space_from_model(model)
    tr = build_trajectories(traj, split, space, dtype=model.latent_mean.dtype)
    batch = condition_on_first_k(tr, k_obs)
    sel = torch.arange(min(n_subjects, len(batch.index)))
    sub = ConditionedBatch(**{k: getattr(batch, k)[sel] for k in batch.__dataclass_fields__})
    t_first = sub.t_obs[:, 0]
    t_end = torch.where(sub.tgt_mask, sub.t_tgt, sub.t_tgt.new_full((), -np.inf)).amax(1) + extend_years
    s = torch.linspace(0, 1, n_dense, dtype=t_first.dtype)
    t_dense = t_first[:, None] + s[None] * (t_end - t_first)[:, None]
    z_dense = _model_predict(model, sub, t_dense, None)
    v_model = torch.exp(space.readout.log_volume(z_dense)).numpy()
    dense_batch = ConditionedBatch(
        **{
            **{k: getattr(sub, k) for k in sub.__dataclass_fields__},
            "t_tgt": t_dense,
            "tgt_mask": torch.ones_like(t_dense, dtype=torch.bool),
            "z_tgt": torch.zeros(*t_dense.shape, sub.z_obs.shape[-1]),
        }
    )
    curves = {"LOCF": locf_forecast(dense_batch), "linear": linear_forecast(dense_batch)}
    curves = {k: np.exp(space.readout.log_volume(v.double().numpy())) for k, v in curves.items()}
    train_tr = build_trajectories(traj, "train", space, dtype=model.latent_mean.dtype)
    prior, gap_pop = population_gompertz_prior(train_tr, space.readout, k_obs)
    curves["Gompertz fit"] = np.exp(gompertz_fit_forecast(dense_batch, space.readout, prior, gap_pop)[0].numpy())
    rows = []
    for i, src in enumerate(sub.index.tolist()):
        m = tr.mask[src].numpy()
        truth = None
        if tr.truth and np.isfinite([tr.truth[k][src] for k in ("V0_ml", "a_per_year", "K_ml")]).all():
            td = t_dense[i].numpy().astype(float)
            truth = (
                td,
                gompertz_volume(td, tr.truth["V0_ml"][src], tr.truth["a_per_year"][src], tr.truth["K_ml"][src]),
            )
        rows.append(
            {
                "subject_id": tr.subject_ids[src],
                "growth_class": tr.growth_class[src] if tr.growth_class else "",
                "t_scans": tr.t[src].numpy()[m].astype(float),
                "v_scans": np.exp(tr.log_volume[src].numpy()[m].astype(float)),
                "n_obs": k_obs,
                "t_dense": t_dense[i].numpy().astype(float),
                "v_model": v_model[i],
                "baselines": {k: (t_dense[i].numpy().astype(float), v[i]) for k, v in curves.items()},
                "truth": truth,
            }
        )
    return rows
