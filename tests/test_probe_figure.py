"""The held-out probe figure (evaluate.json's probes.png) draws the predictions of the probe metrics.json scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from custom.metrics.probes import held_out_probe_r2
from custom.plots.probes import probe_figure

NAMES = np.array(["log_volume", "centroid_x", "centroid_y", "centroid_z", "sphericity"])


def _latents(path: Path, n_subj: int, seed: int, nan_factors: bool = False) -> Path:
    rng = np.random.default_rng(seed)
    subjects = np.repeat([f"S{seed}-{i}" for i in range(n_subj)], 3)
    factors = rng.normal(size=(len(subjects), len(NAMES)))
    # 4 latents carry log volume and the centroid with noise, 10 carry nothing
    mu = np.concatenate(
        [factors[:, :4] + 0.3 * rng.normal(size=(len(subjects), 4)), rng.normal(size=(len(subjects), 10))], axis=1
    )
    if nan_factors:
        factors[:] = np.nan
    np.savez(path, mu=mu, factors=factors, factor_names=NAMES, subject_id=subjects)
    return path


def test_predictions_are_sklearn_s_ridge_with_the_chosen_penalty(tmp_path: Path) -> None:
    fit, ev = np.load(_latents(tmp_path / "f.npz", 20, 0)), np.load(_latents(tmp_path / "e.npz", 6, 1))
    res = held_out_probe_r2(
        fit["mu"], fit["factors"], ev["mu"], ev["factors"], list(NAMES), groups_fit=fit["subject_id"]
    )
    for k, name in enumerate(NAMES):
        model = make_pipeline(StandardScaler(), Ridge(alpha=res["alpha"][name])).fit(fit["mu"], fit["factors"][:, k])
        assert np.allclose(res["pred"][name], model.predict(ev["mu"]), atol=1e-8)


def test_probe_figure_writes_a_png_and_skips_without_segmentations(tmp_path: Path) -> None:
    fit = _latents(tmp_path / "latents_training.npz", 20, 0)
    sel = _latents(tmp_path / "latents_validation.npz", 5, 2)
    out = probe_figure(fit, _latents(tmp_path / "latents.npz", 6, 1), tmp_path / "probes.png", select_latents=sel)
    assert out is not None and Path(out).stat().st_size > 20_000
    assert probe_figure(fit, _latents(tmp_path / "none.npz", 6, 3, nan_factors=True), tmp_path / "no.png") is None
    assert not (tmp_path / "no.png").exists()
    np.savez(tmp_path / "bad.npz", mu=np.zeros((3, 4)))
    with pytest.raises(ValueError, match="bad.npz"):
        probe_figure(fit, tmp_path / "bad.npz", tmp_path / "x.png")
