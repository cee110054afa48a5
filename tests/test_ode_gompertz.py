"""Gompertz closed forms, the Gompertz vector field under torchdiffeq, and the per-subject fit."""

import math

import numpy as np
import pytest
import torch
from torchdiffeq import odeint

from custom.ode.dynamics import LatentDynamics
from custom.ode.gompertz import (
    GompertzPrior,
    fit_gompertz,
    gompertz_log_volume,
    gompertz_volume,
    log_volume_to_z,
    z_to_log_volume,
)


def _closed_form_volume(t, v0, a, k):
    # independent of the package: V(t) = K exp(ln(V0/K) exp(-a t))
    return np.array([k * math.exp(math.log(v0 / k) * math.exp(-a * s)) for s in t])


def test_closed_form_matches_hand_formula_and_ode():
    t = np.linspace(0, 4, 9)
    v = gompertz_volume(t, 2.0, 0.7, 30.0)
    np.testing.assert_allclose(v, _closed_form_volume(t, 2.0, 0.7, 30.0), rtol=1e-12)
    np.testing.assert_allclose(np.exp(gompertz_log_volume(t, math.log(2.0), 0.7, math.log(30.0))), v, rtol=1e-12)
    # dV/dt = a V ln(K/V) by central differences
    h = 1e-5
    dv = (gompertz_volume(t + h, 2.0, 0.7, 30.0) - gompertz_volume(t - h, 2.0, 0.7, 30.0)) / (2 * h)
    np.testing.assert_allclose(dv, 0.7 * v * np.log(30.0 / v), rtol=1e-6)


def test_z_log_volume_maps_roundtrip():
    y = np.array([0.0, 1.5, 3.2])
    np.testing.assert_allclose(z_to_log_volume(log_volume_to_z(y, 2.0, 0.5), 2.0, 0.5), y)
    assert log_volume_to_z(3.0, 2.0, 0.5) == pytest.approx(2.0)


@pytest.mark.parametrize("v0,a,k", [(2.0, 0.8, 40.0), (50.0, 0.4, 20.0)])  # growing and shrinking
def test_gompertz_field_integrated_by_dopri5_matches_closed_form(v0, a, k):
    m, s = math.log(10.0), 0.8  # vol_scale: ln V = m + s z
    f = LatentDynamics(z_dim=1, vol_index=0).double()
    f.set_subject_params(
        torch.tensor([a], dtype=torch.float64), torch.tensor([(math.log(k) - m) / s], dtype=torch.float64)
    )
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    z0 = torch.tensor([[(math.log(v0) - m) / s]], dtype=torch.float64)
    rtol, atol = 1e-6, 1e-8
    with torch.no_grad():
        z = odeint(f, z0, t, method="dopri5", rtol=rtol, atol=atol)[:, 0, 0].numpy()
    log_v = m + s * z
    truth_v = _closed_form_volume(t.numpy(), v0, a, k)
    np.testing.assert_allclose(log_v, np.log(truth_v), atol=1e-5)
    np.testing.assert_allclose(np.exp(log_v), truth_v, rtol=1e-5)


def test_fit_gompertz_recovers_parameters_from_noise_free_samples():
    t = np.array([0.0, 0.7, 1.5, 2.6, 4.0, 5.5])
    a, k, v0 = 0.45, 35.0, 3.0
    y = np.log(_closed_form_volume(t, v0, a, k))
    a_hat, log_k_hat, y0_hat = fit_gompertz(t, y)
    assert a_hat == pytest.approx(a, rel=1e-3)
    assert math.exp(log_k_hat) == pytest.approx(k, rel=1e-3)
    assert math.exp(y0_hat) == pytest.approx(v0, rel=1e-3)


def test_fit_gompertz_two_points_uses_prior_and_passes_through_data():
    t = np.array([0.0, 1.0])
    y = np.array([1.0, 1.4])
    prior = GompertzPrior(a_pop=0.5, log_k_pop=3.0, w_a=1.0, w_k=0.01)
    a, log_k, y0 = fit_gompertz(t, y, prior=prior)
    assert 1e-4 <= a <= 5.0
    # with a nearly pinned by the prior, the two points are fitted (almost) exactly
    fitted = log_k + (y0 - log_k) * np.exp(-a * t)
    np.testing.assert_allclose(fitted, y, atol=2e-2)
    assert a == pytest.approx(0.5, rel=0.3)


def test_volume_probe_recovers_linear_log_volume_map():
    from custom.ode.readout import fit_volume_probe

    rng = np.random.default_rng(0)
    z = rng.normal(size=(50, 4))
    log_v = 2.0 + 0.5 * z[:, 0] - 1.0 * z[:, 2]
    log_v[3] = np.nan  # unknown volumes are ignored
    probe = fit_volume_probe(z, log_v, ridge=1e-9)
    np.testing.assert_allclose(probe.weight, [0.5, 0.0, -1.0, 0.0], atol=1e-6)
    assert probe.bias == pytest.approx(2.0, abs=1e-6)
