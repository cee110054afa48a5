"""latent_ode with ``seg_volumes_file``: a scan observed without its segmentation takes the tumour_seg bundle's ln V
(with sigma_seg) instead of the latent read-out; a scan the file does not list is one clear error."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from test_ode_hybrid import _model, _scipy_map

from custom.data.errors import DataValidationError
from custom.ode.engine import run_forecast
from custom.ode.subjects import load_subject_data, pad_collate
from custom.ode.toy import make_toy_trajectories


def _traj() -> dict:
    traj = make_toy_trajectories(n_subjects=10, n_times=3, z_dim=4, seed=1)
    traj["case_id"] = [f"{s}-{int(tp):03d}" for s, tp in zip(traj["subject_id"], traj["timepoint"])]
    return traj


def _csv(traj: dict, path, logv: np.ndarray, drop: int | None = None):
    rows = pd.DataFrame({"subject_id": traj["subject_id"], "case_id": traj["case_id"], "log_volume": logv})
    if drop is not None:
        rows = rows.drop(index=drop)
    rows.to_csv(path, index=False)
    return path


def test_csv_values_become_the_images_only_log_volumes(tmp_path) -> None:
    traj = _traj()
    n = len(traj["case_id"])
    known = 1.0 + 0.01 * np.arange(n)  # a distinct value per scan
    data = load_subject_data(traj, seg_volumes_file=str(_csv(traj, tmp_path / "seg_volumes.csv", known)))
    ds = data.dataset("test")
    for item in ds.items:
        rows = [traj["case_id"].index(c) for c in item["case_id"]]
        np.testing.assert_allclose(item["logv_segmented"].numpy(), known[rows], rtol=1e-6)
    # sigma_seg: RMSE of segmented against measured ln V over the validation scans, by hand
    measured = traj["factors"][:, 0].numpy().astype(float)
    val = np.asarray(traj["split"]) == "validation"
    assert data.seg_sd == pytest.approx(math.sqrt(np.mean((known[val] - measured[val]) ** 2)), rel=1e-5)

    # images-only forecast of one test subject from 2 scans: the MAP fit of the CSV values with sigma_seg
    net = _model(z_dim=4, seg_volume_sd=0.08)
    item = ds.items[0]
    batch = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
             for k, v in pad_collate([item]).items()}  # fmt: skip
    pred, _, _ = run_forecast(net, batch, torch.tensor([2]), False, with_latents=False)
    mean, sd = net.prior_mean.detach().numpy(), np.exp(net.prior_log_sd.detach().numpy())
    t = item["t"].numpy()[:2].astype(float)
    y = item["logv_segmented"].numpy()[:2].astype(float)
    ref = _scipy_map(t, y, [0.08**2] * 2, mean, sd)
    np.testing.assert_allclose(pred["map"][0].detach().numpy(), ref, atol=2e-4)
    assert bool(pred["images_only"][0])


def test_without_a_file_the_read_out_stays() -> None:
    traj = _traj()
    data = load_subject_data(traj)
    assert data.seg_log_volume is None and data.seg_sd is None
    item = data.dataset("test").items[0]
    assert torch.isnan(item["logv_segmented"]).all()


def test_a_scan_missing_from_the_csv_names_subject_scan_and_file(tmp_path) -> None:
    traj = _traj()
    path = _csv(traj, tmp_path / "seg_volumes.csv", np.ones(len(traj["case_id"])), drop=4)
    with pytest.raises(DataValidationError) as err:
        load_subject_data(traj, seg_volumes_file=str(path))
    msg = str(err.value)
    assert traj["subject_id"][4] in msg and traj["case_id"][4] in msg and str(path) in msg
