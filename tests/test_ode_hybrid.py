"""The hybrid forecaster: its Bayesian Gompertz solve against SciPy and brute-force integration, the population-prior
limit, the hybrid and images-only paths, and the value of an image covariate that carries the growth rate."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import minimize

from custom.ode.gompertz_posterior import GompertzPosterior, GompertzPrior3
from custom.ode.hybrid import HybridGompertzForecaster

GRID = torch.linspace(math.log(0.01), math.log(5.0), 64, dtype=torch.float64)


def _neg_log_post(theta, t, y, r, mean, sd) -> float:
    """-ln p(theta | y) up to a constant, written out by hand: Gaussian priors on (ln a, gap, ln V0) and
    y_i ~ N(ln V0 + gap (1 - exp(-a t_i)), r_i)."""
    la, gap, lv0 = theta
    pred = lv0 + gap * (1.0 - np.exp(-np.exp(la) * t))
    return float(0.5 * np.sum((y - pred) ** 2 / r) + 0.5 * np.sum(((np.asarray(theta) - mean) / sd) ** 2))


CASES = [  # t, y, r (per observation), prior mean, prior sd
    ([0.0, 1.0, 2.0], [1.0, 1.6, 1.9], [0.05**2] * 3, [math.log(0.3), 1.0, 2.0], [1.0, 1.0, 1.0]),
    ([0.0, 0.7], [2.0, 2.3], [0.15**2] * 2, [math.log(0.5), 0.5, 2.0], [0.8, 0.7, 1.2]),
    ([0.0], [3.0], [0.05**2], [math.log(0.2), 0.8, 2.5], [0.5, 0.6, 1.0]),
    ([0.0, 1.5, 2.5], [2.5, 2.2, 2.1], [0.05**2, 0.15**2, 0.05**2], [math.log(0.3), 0.5, 2.0], [1.0, 1.0, 1.0]),
]


def _batch(case):
    t, y, r, mean, sd = case
    as_t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    return as_t(t), as_t(y), as_t(r), torch.ones(1, len(t), dtype=torch.float64), GompertzPrior3(as_t(mean), as_t(sd))


@pytest.mark.parametrize("case", CASES)
def test_posterior_mode_matches_scipy(case) -> None:
    t, y, r, w, prior = _batch(case)
    got = GompertzPosterior(GRID).fit(t, y, r, w, prior)["map"][0].numpy()
    args = tuple(np.asarray(v, dtype=float) for v in case)
    best = min(
        (minimize(_neg_log_post, x0, args=args, method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40000}) for x0 in ([math.log(0.3), 0.5, args[1][0]], [math.log(2.0), 2.0, args[1][0]], [math.log(0.03), 0.1, args[1][0]])),  # fmt: skip
        key=lambda res: res.fun,
    )
    np.testing.assert_allclose(got, best.x, atol=2e-4)


def test_predictive_mean_and_variance_match_brute_force_integration() -> None:
    """Mixture moments of y(s) against a dense 3-D quadrature of the posterior (prior x likelihood on a grid)."""
    case = CASES[1]
    t, y, r, w, prior = _batch(case)
    post = GompertzPosterior(GRID).fit(t, y, r, w, prior)
    s = 1.5
    mean, var = GompertzPosterior.predict(post, torch.tensor([[s]], dtype=torch.float64))
    la = np.linspace(math.log(0.01), math.log(5.0), 240)  # the same support of ln a as the grid
    gap, lv0 = np.linspace(-3.0, 4.0, 160), np.linspace(-1.0, 5.0, 160)
    LA, G, V = np.meshgrid(la, gap, lv0, indexing="ij")
    tt, yy, rr = (np.asarray(v, dtype=float) for v in case[:3])
    pred = V[..., None] + G[..., None] * (1.0 - np.exp(-np.exp(LA)[..., None] * tt))
    m, sd = np.asarray(case[3]), np.asarray(case[4])
    logp = -0.5 * np.sum((yy - pred) ** 2 / rr, -1) - 0.5 * (
        ((LA - m[0]) / sd[0]) ** 2 + ((G - m[1]) / sd[1]) ** 2 + ((V - m[2]) / sd[2]) ** 2
    )
    p = np.exp(logp - logp.max())
    p /= p.sum()
    ys = V + G * (1.0 - np.exp(-np.exp(LA) * s))
    mu_ref = float((p * ys).sum())
    var_ref = float((p * ys**2).sum() - mu_ref**2)
    assert float(mean) == pytest.approx(mu_ref, abs=5e-3)
    assert float(var) == pytest.approx(var_ref, rel=0.03)


def _model(z_dim=4, **kw) -> HybridGompertzForecaster:
    m = HybridGompertzForecaster(z_dim=z_dim, vol_index=0, hidden=8, **kw).double()
    w = np.zeros(z_dim)
    w[0] = 0.8
    m.set_latent_space(np.zeros(z_dim), np.ones(z_dim), w, readout_bias=2.0, readout_sd=0.15, log_v0_mean=2.0)
    return m


def _scipy_map(t, y, r, mean, sd) -> np.ndarray:
    args = (np.asarray(t), np.asarray(y), np.asarray(r), np.asarray(mean), np.asarray(sd))
    starts = ([mean[0], mean[1], y[0]], [math.log(2.0), 2.0, y[0]], [math.log(0.03), 0.1, y[0]])
    opts = {"xatol": 1e-10, "fatol": 1e-13, "maxiter": 40000}
    res = [minimize(_neg_log_post, x0, args=args, method="Nelder-Mead", options=opts) for x0 in starts]
    return min(res, key=lambda q: q.fun).x


def test_untrained_covariate_head_gives_the_population_prior_map_whatever_the_latents() -> None:
    """With the zero-initialised head, the latents do not move the fit: it is the population-prior Gompertz MAP."""
    m = _model()
    t = torch.tensor([[0.0, 1.2]], dtype=torch.float64)
    y = torch.tensor([[1.5, 1.9]], dtype=torch.float64)
    seg = torch.ones(1, 2, dtype=torch.bool)
    maps = []
    for seed in (0, 1):
        z = torch.randn(1, 2, 4, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
        maps.append(m.predict(z, y, seg, t, torch.tensor([[3.0]], dtype=torch.float64), with_latents=False)["map"])
    torch.testing.assert_close(maps[0], maps[1])
    pop_mean = m.prior_mean.detach().numpy()
    pop_sd = np.exp(m.prior_log_sd.detach().numpy())
    ref = _scipy_map([0.0, 1.2], [1.5, 1.9], [0.05**2] * 2, pop_mean, pop_sd)
    np.testing.assert_allclose(maps[0][0].detach().numpy(), ref, atol=2e-4)


def test_hybrid_and_images_only_paths() -> None:
    """Hybrid: the measured ln V with the segmentation noise. Images only: the read-out ln V = 0.8 z_0 + 2 with the
    read-out noise 0.15, whatever y_obs holds; the output says which mode ran."""
    m = _model()
    z = torch.zeros(2, 2, 4, dtype=torch.float64)
    z[:, :, 0] = torch.tensor([[-0.5, 0.25], [-0.5, 0.25]])
    y = torch.tensor([[1.5, 1.9], [1.5, 1.9]], dtype=torch.float64)
    seg = torch.tensor([[True, True], [False, False]])
    t = torch.tensor([[0.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
    out = m.predict(z, y, seg, t, torch.tensor([[2.0], [2.0]], dtype=torch.float64), with_latents=True)
    assert out["images_only"].tolist() == [False, True]
    mean, sd = m.prior_mean.detach().numpy(), np.exp(m.prior_log_sd.detach().numpy())
    ref_h = _scipy_map([0.0, 1.0], [1.5, 1.9], [0.05**2] * 2, mean, sd)
    ref_i = _scipy_map([0.0, 1.0], [1.6, 2.2], [0.15**2] * 2, mean, sd)  # 0.8 * (-0.5) + 2, 0.8 * 0.25 + 2
    np.testing.assert_allclose(out["map"][0].detach().numpy(), ref_h, atol=2e-4)
    np.testing.assert_allclose(out["map"][1].detach().numpy(), ref_i, atol=2e-4)
    # the forecast latent's volume coordinate is the forecast ln V mapped back through the read-out
    vol = (out["z_pred"][..., 0] * 0.8 + 2.0).detach()
    torch.testing.assert_close(vol, out["mean_log_v"].detach())
    assert torch.isfinite(out["z_pred"]).all() and (out["sd_log_v"] > out["sd_curve"]).all()


def _train(data, use_covariates: bool, epochs: int = 80) -> HybridGompertzForecaster:
    from monai.engines import SupervisedTrainer
    from torch.utils.data import DataLoader

    from custom.ode.engine import HybridForecastLoss, HybridTrainStep, parameter_groups, prepare_forecaster
    from custom.ode.subjects import pad_collate

    torch.manual_seed(0)
    net = prepare_forecaster(
        HybridGompertzForecaster(data.z_dim, data.vol_index, hidden=8, use_covariates=use_covariates), data, "cpu"
    )
    loader = DataLoader(
        data.dataset("train"),
        batch_size=48,
        shuffle=True,
        collate_fn=pad_collate,
        generator=torch.Generator().manual_seed(0),
    )
    opt = torch.optim.AdamW(parameter_groups(net, 1e-3), lr=0.03)
    SupervisedTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=loader, network=net, optimizer=opt,
        loss_function=HybridForecastLoss(latent_weight=0.0), iteration_update=HybridTrainStep(k_obs=[1, 2]),
        decollate=False,
    ).run()  # fmt: skip
    return net


def test_latent_that_carries_the_rate_makes_the_trained_hybrid_beat_the_population_model() -> None:
    """Toy cohort whose latent coordinate 1 is the standardised ln a: from one observed scan (where the rate cannot be
    seen in the volumes), the covariate-informed prior must cut the last-scan error by at least 25 % relative."""
    from custom.ode.frames import forecast_frame, last_scan_summary, truth_frame
    from custom.ode.subjects import load_subject_data
    from custom.ode.toy import make_toy_trajectories

    traj = make_toy_trajectories(
        n_subjects=160, n_times=4, z_dim=4, enc_noise=0.15, seg_noise=0.05, split_fractions=(0.6, 0.1),
        class_probs=(0.15, 0.0), seed=1, rate_latent=True,
    )  # fmt: skip
    data = load_subject_data(traj)
    test = data.dataset("test")
    err = {}
    for cov in (True, False):
        net = _train(data, cov)
        err[cov] = last_scan_summary(forecast_frame(net, test, 1, True), truth_frame(test))["rel_vol_err_pct_last"]
    assert err[True] < 0.75 * err[False], err


def test_last_scan_volume_error_by_hand() -> None:
    """Subject 0: last measured target at column 2, predicted ln V one ln(1.1) above -> 10 %; subject 1: its last
    target has no measurement, so column 1 counts, predicted ln(0.8) below -> 20 %; subject 2 has no target."""
    from custom.ode.engine import LastScanVolumeError

    y = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, float("nan")], [1.0, 1.0, 1.0]])
    mu = torch.tensor([[0.0, 0.0, 3.0 + math.log(1.1)], [0.0, 2.0 + math.log(0.8), 9.0], [5.0, 5.0, 5.0]])
    mask = torch.tensor([[False, True, True], [False, True, True], [False, False, False]])
    metric = LastScanVolumeError()
    metric.reset()
    metric.update(({"mean_log_v": mu, "target_log_v": y, "target_mask": mask},))
    assert metric.compute() == pytest.approx(15.0)
