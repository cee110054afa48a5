"""latent_ode with ``seg_volumes_file``: a scan observed without its segmentation takes the tumour_seg bundle's ln V
(with sigma_seg) instead of the latent read-out; a scan the file does not list is one clear error."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from test_ode_hybrid import _model, _scipy_map

from custom.data.errors import DataValidationError
from custom.ode.engine import run_forecast
from custom.ode.subjects import load_subject_data, pad_collate
from custom.ode.toy import make_toy_trajectories


def _traj() -> dict:
    traj = make_toy_trajectories(n_subjects=10, n_times=4, z_dim=4, seed=1)
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


def test_locf_on_segmented_volumes_carries_the_csv_volume_forward(tmp_path) -> None:
    """The segmented-volume baselines forecast from the CSV's volumes: LOCF (segmented) predicts exp(CSV ln V) of each
    subject's k-th scan at every later scan; EB Gompertz (segmented) gives a finite forecast for the same targets."""
    from custom.ode.evaluation import scan_table
    from custom.ode.seg_volumes import segmented_baseline_frames

    traj = _traj()
    known = 1.0 + 0.01 * np.arange(len(traj["case_id"]))
    data = load_subject_data(traj, seg_volumes_file=str(_csv(traj, tmp_path / "seg_volumes.csv", known)))
    table = scan_table(data)
    names = {"training": "train", "validation": "validation", "test": "test"}
    splits = {s: data.subjects_by_split[k] for s, k in names.items()}
    train = table[table["subject_id"].isin(set(splits["training"]))]
    frames = segmented_baseline_frames(data, train, splits, [2])
    locf = frames["LOCF (segmented)"]["test"]
    for item in data.dataset("test").items:
        second = known[traj["case_id"].index(item["case_id"][1])]
        rows = locf[locf["subject_id"] == item["subject_id"]]
        assert len(rows) == len(item["t"]) - 2
        np.testing.assert_allclose(rows["pred_volume_ml"].to_numpy(float), math.exp(second), rtol=1e-6)
    eb = frames["EBGompertz (segmented)"]["test"]
    assert len(eb) == len(locf) and np.isfinite(eb["pred_volume_ml"]).all()


def test_latent_ode_bundle_trains_and_evaluates_with_a_seg_volumes_file(tmp_path) -> None:
    """train.json + evaluate.json with ``--seg_volumes_file``: sigma_seg is stored with the weights and the forecast
    report carries the segmented-volume baselines beside the images-only forecast."""
    from monai.bundle import run

    from custom.ode.evaluation import load_forecaster

    configs = REPO / "bundles" / "latent_ode" / "configs"
    traj = make_toy_trajectories(n_subjects=24, n_times=4, z_dim=5, enc_noise=0.15, split_fractions=(0.5, 0.25))
    traj["case_id"] = [f"{s}-{int(tp):03d}" for s, tp in zip(traj["subject_id"], traj["timepoint"])]
    torch.save(traj, tmp_path / "trajectories.pt")
    measured = traj["factors"][:, 0].numpy().astype(float)
    seg = measured + np.random.default_rng(3).normal(0.0, 0.07, len(measured))
    csv_path = _csv(traj, tmp_path / "seg_volumes.csv", seg)
    common = {
        "trajectories_file": str(tmp_path / "trajectories.pt"), "encode": False, "output_dir": str(tmp_path / "run"),
        "ckpt_dir": str(tmp_path / "models"), "hidden": 8, "batch_size": 8, "device": "cpu",
        "dataset_dir": str(tmp_path / "no_data"), "seg_volumes_file": str(csv_path), "val_interval": 1,
    }  # fmt: skip
    run("training", config_file=str(configs / "train.json"), epochs=2, **common)
    val = np.asarray(traj["split"]) == "validation"
    net = load_forecaster(tmp_path / "models")
    assert net.seg_volume_sd == pytest.approx(math.sqrt(np.mean((seg[val] - measured[val]) ** 2)), rel=1e-5)
    run(config_file=[str(configs / "train.json"), str(configs / "evaluate.json")], **common)
    forecasts = pd.read_csv(tmp_path / "run" / "eval_test" / "forecast_report" / "forecasts.csv")
    assert {"EBGompertz (segmented)", "LOCF (segmented)", "latent_ode_images_only"} <= set(forecasts["method"])


def test_single_subject_forecast_reads_its_scans_from_the_csv(tmp_path) -> None:
    """inference.json's lookup: the subject's scans in order, and a forecaster trained without a file refuses one."""
    from custom.ode.forecast import _segmented_log_volumes

    traj = _traj()
    known = 1.0 + 0.01 * np.arange(len(traj["case_id"]))
    path = str(_csv(traj, tmp_path / "seg_volumes.csv", known))
    scans = [{"case_id": traj["case_id"][i]} for i in (6, 5)]
    got = _segmented_log_volumes(path, _model(seg_volume_sd=0.1), scans, traj["subject_id"][5], "models")
    np.testing.assert_allclose(got.numpy(), [[known[6], known[5]]], rtol=1e-6)
    with pytest.raises(ValueError, match="trained without seg_volumes_file"):
        _segmented_log_volumes(path, _model(), scans, traj["subject_id"][5], "models")
