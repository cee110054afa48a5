"""Latent ODE forecaster: batched irregular-time solves, baselines, conditioning splits, and a tiny training run."""

import math
import time

import numpy as np
import pytest
import torch

from custom.ode.baselines import linear_forecast, locf_forecast
from custom.ode.data import ConditionedBatch, build_trajectories, condition_on_first_k, fit_latent_space
from custom.ode.model import LatentODEForecaster
from custom.ode.toy import make_toy_trajectories
from custom.ode.train import evaluate_forecasts, fit_latent_ode, growth_plot_rows
from custom.plots.growth import plot_growth


def _random_model(method="dopri5", adjoint=False, seed=0, **kw):
    torch.manual_seed(seed)
    m = LatentODEForecaster(z_dim=3, vol_index=1, hidden=16, method=method, adjoint=adjoint, **kw).double()
    with torch.no_grad():  # non-trivial field and encoder (the zero-initialised last layers would hide bugs)
        for p in m.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return m


def test_batched_irregular_solve_equals_one_by_one():
    m = _random_model(rtol=1e-9, atol=1e-11)
    z_obs = torch.randn(3, 2, 3, dtype=torch.float64)
    t_obs = torch.tensor([[0.0, 1.0], [0.0, 0.4], [2.0, 3.5]], dtype=torch.float64)
    obs_mask = torch.tensor([[True, True], [True, True], [True, False]])  # subject 3 has one scan
    t_tgt = torch.tensor([[1.5, 3.0, 3.0], [0.9, 2.2, 0.0], [2.7, 4.1, 6.0]], dtype=torch.float64)
    tgt_mask = torch.tensor([[True, True, False], [True, True, False], [True, True, True]])
    with torch.no_grad():
        batched = m(z_obs, t_obs, t_tgt, obs_mask, tgt_mask)
        for b in range(3):
            n = int(tgt_mask[b].sum())
            alone = m(
                z_obs[b : b + 1, : int(obs_mask[b].sum())],
                t_obs[b : b + 1, : int(obs_mask[b].sum())],
                t_tgt[b : b + 1, :n],
            )
            torch.testing.assert_close(batched[b, :n], alone[0], atol=1e-5, rtol=0)


def test_volume_coordinate_follows_closed_form_forward_and_backward():
    m = _random_model(rtol=1e-9, atol=1e-11)
    z_obs = torch.randn(2, 2, 3, dtype=torch.float64)
    t_obs = torch.tensor([[0.0, 1.0], [0.0, 2.0]], dtype=torch.float64)
    t_tgt = torch.tensor([[0.0, 0.5, 3.0], [1.0, 2.5, 4.0]], dtype=torch.float64)  # includes times before t_last
    with torch.no_grad():
        z = m(z_obs, t_obs, t_tgt)
    alpha, z_k = m.last_subject_params["alpha"], m.last_subject_params["z_k"]
    z_last = z_obs[:, 1, 1]
    expected = z_k[:, None] + (z_last - z_k)[:, None] * torch.exp(-alpha[:, None] * (t_tgt - t_obs[:, 1:2]))
    torch.testing.assert_close(z[..., 1], expected, atol=1e-6, rtol=0)


def test_two_point_rate_parameterisation_reproduces_observed_volumes():
    m = _random_model(rtol=1e-9, atol=1e-11)
    with torch.no_grad():  # no free correction of z_K: the curve must pass through both observed scans
        m.param_encoder.net[-1].weight[1].zero_()
        m.param_encoder.net[-1].bias[1].zero_()
    z_obs = torch.randn(4, 2, 3, dtype=torch.float64)
    t_obs = torch.tensor([[0.0, 1.0]] * 4, dtype=torch.float64) + torch.arange(4.0, dtype=torch.float64)[:, None]
    with torch.no_grad():
        z = m(z_obs, t_obs, t_obs[:, :1])  # back to the first scan's time
    torch.testing.assert_close(z[:, 0, 1], z_obs[:, 0, 1], atol=1e-6, rtol=0)


def test_adjoint_gradients_match_direct_backprop():
    z_obs = torch.randn(2, 2, 3, dtype=torch.float64)
    t_obs = torch.tensor([[0.0, 1.0], [0.0, 0.5]], dtype=torch.float64)
    t_tgt = torch.tensor([[2.0, 3.0], [1.0, 1.5]], dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        m = _random_model(adjoint=adjoint, rtol=1e-9, atol=1e-11)
        m(z_obs, t_obs, t_tgt).pow(2).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], atol=1e-5, rtol=1e-4)
    assert grads[0][-2:].abs().sum() > 0  # encoder parameters do receive gradient


def _batch(z_obs, t_obs, obs_mask, t_tgt):
    b, m = t_tgt.shape
    return ConditionedBatch(
        index=torch.arange(b),
        z_obs=z_obs,
        t_obs=t_obs,
        obs_mask=obs_mask,
        z_tgt=torch.zeros(b, m, z_obs.shape[-1]),
        t_tgt=t_tgt,
        tgt_mask=torch.ones(b, m, dtype=torch.bool),
        logv_tgt=torch.zeros(b, m),
        logv_obs=torch.zeros(b, z_obs.shape[1]),
    )


def test_locf_and_linear_baselines_on_constructed_trajectories():
    # subject 0: z = (1 + 2t, 5 - t) observed at t = 0, 1, 3; subject 1: one scan (padded) at t = 2
    z_obs = torch.tensor([[[1.0, 5.0], [3.0, 4.0], [7.0, 2.0]], [[0.5, -1.0], [0.0, 0.0], [0.0, 0.0]]])
    t_obs = torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]])
    obs_mask = torch.tensor([[True, True, True], [True, False, False]])
    t_tgt = torch.tensor([[4.0, 6.0], [3.0, 10.0]])
    b = _batch(z_obs, t_obs, obs_mask, t_tgt)
    locf = locf_forecast(b)
    torch.testing.assert_close(locf[0], torch.tensor([[7.0, 2.0], [7.0, 2.0]]))
    torch.testing.assert_close(locf[1], torch.tensor([[0.5, -1.0], [0.5, -1.0]]))
    lin = linear_forecast(b)
    torch.testing.assert_close(lin[0], torch.tensor([[9.0, 1.0], [13.0, -1.0]]))
    torch.testing.assert_close(lin[1], locf[1])  # one observation: LOCF


def test_condition_on_first_k_splits_and_masks():
    traj = make_toy_trajectories(n_subjects=5, n_times=4, z_dim=3, split_fractions=(1.0, 0.0), seed=1)
    keep = [
        i
        for i, (s, tp) in enumerate(zip(traj["subject_id"], traj["timepoint"].tolist()))
        if not (s == "BraTS-MEN-00000" and tp >= 2) and not (s == "BraTS-MEN-00001" and tp == 3)
    ]
    sub = {
        k: (
            (v[keep] if isinstance(v, torch.Tensor) else [v[i] for i in keep])
            if k in ("mu", "logvar", "subject_id", "timepoint", "time_years", "factors", "split")
            else v
        )
        for k, v in traj.items()
    }
    order = list(reversed(range(len(keep))))  # scans given out of time order
    per_scan = ("mu", "logvar", "subject_id", "timepoint", "time_years", "factors", "split")
    sub = {
        k: ((v[order] if isinstance(v, torch.Tensor) else [v[i] for i in order]) if k in per_scan else v)
        for k, v in sub.items()
    }
    tr = build_trajectories(sub, "train", fit_latent_space(sub))
    assert tr.mask.sum(1).tolist() == [2, 3, 4, 4, 4]
    assert bool((tr.t[:, 1:] >= tr.t[:, :-1])[tr.mask[:, 1:]].all())  # sorted by time
    cb = condition_on_first_k(tr, 2)
    assert cb.index.tolist() == [1, 2, 3, 4]  # the 2-scan subject has nothing to forecast
    assert cb.tgt_mask.sum(1).tolist() == [1, 2, 2, 2]
    torch.testing.assert_close(cb.z_obs, tr.z[1:, :2])


def test_tiny_latent_ode_trains_fast_beats_locf_and_recovers_rates(tmp_path):
    torch.set_num_threads(1)
    traj = make_toy_trajectories(
        n_subjects=60, n_times=4, z_dim=6, split_fractions=(0.5, 0.1), class_probs=(0.15, 0.0), seed=1
    )
    start = time.perf_counter()
    model, history = fit_latent_ode(traj, k_obs=2, epochs=100, lr=1e-2, weight_decay=1e-2, seed=0)
    assert time.perf_counter() - start < 30.0
    assert history[-1]["loss"] < history[0]["loss"]
    table = evaluate_forecasts(model, traj, split="test", k_obs=2)
    assert set(table) == {"latent_ode", "locf", "linear", "gompertz_fit", "oracle"}
    ode, locf = table["latent_ode"], table["locf"]
    assert ode["n_subjects"] == 24
    assert ode["rel_vol_err_pct"] < locf["rel_vol_err_pct"]
    assert ode["rel_vol_err_pct_last"] < locf["rel_vol_err_pct_last"]
    assert ode["latent_mse"] < locf["latent_mse"]
    assert ode["alpha_spearman"] > 0.5
    assert table["oracle"]["rel_vol_err_pct"] < 5.0  # measurement-noise floor (2% log noise)
    rows = growth_plot_rows(model, traj, split="test", k_obs=2, n_subjects=4)
    out = plot_growth(rows, tmp_path / "growth.png")
    assert out.stat().st_size > 10_000
    assert all(np.isfinite(r["v_model"]).all() for r in rows)


def test_plain_vae_without_volume_coordinate_uses_probe_and_evaluates():
    torch.set_num_threads(1)
    traj = make_toy_trajectories(n_subjects=20, n_times=3, z_dim=4, seed=2)
    for key in ("partition", "vol_scale", "truth"):
        traj.pop(key)
    model, _ = fit_latent_ode(traj, k_obs=1, epochs=3, seed=0)
    assert model.vol_index is None and model.param_encoder is None
    table = evaluate_forecasts(model, traj, split="test", k_obs=1)
    assert set(table) == {"latent_ode", "locf", "linear", "gompertz_fit"}
    assert math.isnan(table["gompertz_fit"]["latent_mse"])  # no latent forecast without a volume coordinate
    # with one observation the linear baseline is LOCF
    assert table["linear"]["rel_vol_err_pct"] == pytest.approx(table["locf"]["rel_vol_err_pct"])
    assert all(np.isfinite(table[m]["logvol_mae"]) for m in table)
