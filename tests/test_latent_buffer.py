"""The training epoch's latents feed the validation probes (held-out protocol during training)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from custom.data.factors import FACTOR_NAMES
from custom.engines.handlers import ValidationDiagnostics
from custom.engines.latent_buffer import TrainingLatents

K = len(FACTOR_NAMES)


def _code(rng: np.random.Generator, n_subj: int, scans: int, z: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Latents whose first K coordinates are the factors plus N(0, 0.05^2) noise; the rest is noise."""
    factors = rng.standard_normal((n_subj * scans, K))
    mu = rng.standard_normal((n_subj * scans, z))
    mu[:, :K] = factors + 0.05 * rng.standard_normal(factors.shape)
    return mu, factors, [f"S{i:03d}" for i in np.repeat(np.arange(n_subj), scans)]


def _validation_rows(mu: np.ndarray, factors: np.ndarray, subjects: list[str]) -> list[dict]:
    n = len(mu)
    t = torch.as_tensor
    return [
        {
            "mu": t(mu, dtype=torch.float32),
            "logvar": torch.zeros(n, mu.shape[1]),
            "mse_mu": torch.ones(n),
            "mse_z0": 2 * torch.ones(n),
            "mse_sampled": torch.ones(n),
            "case_id": [f"c{i}" for i in range(n)],
            "subject_id": subjects,
            "factors": t(factors, dtype=torch.float32),
            "batch_size": n,
            "val_recon": 1.0,
            "val_kl": 1.0,
            "image_metrics": {},
        }
    ]


def test_buffer_keeps_one_epoch_and_drops_nonfinite_rows() -> None:
    buf = TrainingLatents()
    assert buf.arrays() is None
    buf.add(torch.tensor([[1.0, 2.0], [float("nan"), 0.0]]), torch.zeros(2, 3), ["a", "b"])
    buf.add(torch.tensor([[3.0, 4.0]]), torch.ones(1, 3), ["c"])
    out = buf.arrays()
    np.testing.assert_array_equal(out["mu"], [[1, 2], [3, 4]])
    assert out["subject_id"].tolist() == ["a", "c"] and out["factors"].shape == (2, 3)
    buf.reset()
    assert len(buf) == 0 and buf.arrays() is None
    with pytest.raises(ValueError):
        buf.add(torch.zeros(2, 2), torch.zeros(3, 3), ["a", "b"])


def test_validation_probes_fit_on_the_training_epoch_and_score_on_validation_subjects() -> None:
    # 40 training subjects x 4 scans carry the factors linearly in 16 of 64 latents; 6 validation subjects x 2
    # scans. Noise sd 0.05 on unit-variance factors: the held-out R^2 is close to 1 / (1 + 0.05^2) ~ 0.997.
    rng = np.random.default_rng(0)
    buf = TrainingLatents()
    mu_t, f_t, s_t = _code(rng, 40, 4, 64)
    buf.add(torch.as_tensor(mu_t), torch.as_tensor(f_t), s_t)
    mu_v, f_v, s_v = _code(rng, 6, 2, 64)

    engine = SimpleNamespace(state=SimpleNamespace(metrics={}))
    online = ValidationDiagnostics(probe_fit_source=buf)
    online._rows = _validation_rows(mu_v, f_v, s_v)
    online._compute(engine)
    held_out = engine.state.metrics
    assert held_out["probe/r2_log_volume"] > 0.95 and held_out["probe/r2_centroid"] > 0.95
    # the within-pass probe (10 training rows per fold, 64 latents) is reported beside it, and is far weaker
    assert held_out["probe_cv/r2_log_volume"] < held_out["probe/r2_log_volume"] - 0.2

    engine = SimpleNamespace(state=SimpleNamespace(metrics={}))
    alone = ValidationDiagnostics()
    alone._rows = _validation_rows(mu_v, f_v, s_v)
    alone._compute(engine)
    assert "probe_cv/r2_log_volume" not in engine.state.metrics  # without a fit set: the within-pass probe only
    assert engine.state.metrics["probe/r2_log_volume"] == pytest.approx(held_out["probe_cv/r2_log_volume"])


def test_train_step_hands_mu_factors_and_subjects_to_the_buffer() -> None:
    from torch import nn

    from custom.engines.train_step import VAETrainStep
    from custom.losses.elbo import VAELoss

    class Encoder2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.ones(()))

        def forward(self, x: torch.Tensor):
            mu = self.w * x.flatten(1)[:, :2]  # mu = the first two voxels
            return torch.zeros_like(x) + 0 * self.w, mu, torch.zeros_like(mu), mu

    net = Encoder2()
    engine = SimpleNamespace(
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.0),
        loss_function=VAELoss(recon_reduction="sum"),
        state=SimpleNamespace(device=torch.device("cpu"), loss_kwargs={"beta": 1.0}, epoch=1, iteration=1),
    )
    buf = TrainingLatents()
    x = torch.arange(16, dtype=torch.float32).reshape(2, 1, 2, 2, 2)
    factors = torch.tensor([[0.5] * K, [1.5] * K])
    VAETrainStep(latents=buf)(engine, {"image": x, "factors": factors, "subject_id": ["S1", "S2"]})
    VAETrainStep(latents=buf)(engine, {"image": x})  # no factors (no segmentation): nothing kept
    out = buf.arrays()
    np.testing.assert_array_equal(out["mu"], [[0, 1], [8, 9]])
    np.testing.assert_array_equal(out["factors"][:, 0], [0.5, 1.5])
    assert out["subject_id"].tolist() == ["S1", "S2"]
