"""latent_ode with forecast masks at 32^3 on the tiny synthetic cohort: ``inference.json`` writes a forecast mask and
the anchored images per target time on the last observed scan's grid, and the evaluation's mask scorer compares
them with the true future masks. The encoder and the forecaster are untrained (the files, not the skill, are
under test)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import REPO

INFERENCE = REPO / "bundles" / "latent_ode" / "configs" / "inference.json"


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(encoder bundle, forecaster model dir): a random 32^3 ResNetVAE and an untrained hybrid forecaster."""
    from custom.networks import ResNetVAE
    from custom.ode.hybrid import HybridGompertzForecaster

    root = tmp_path_factory.mktemp("models")
    enc = root / "encoder"
    (enc / "models").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(ResNetVAE(spatial_size=[32, 32, 32], z_dim=16).state_dict(), enc / "models" / "model.pt")
    cfg = {"spatial_size": [32, 32, 32], "z_dim": 16, "spacing": 7.5, "decoder_output_layer": "transposed"}
    (enc / "models" / "model_config.json").write_text(json.dumps(cfg))
    ode = root / "ode"
    ode.mkdir()
    net = HybridGompertzForecaster(z_dim=16, vol_index=None, hidden=8)
    for p in net.ode.dynamics.mlp.parameters():  # a non-zero latent vector field, so later latents change
        torch.nn.init.normal_(p, std=0.5)
    torch.save(net.state_dict(), ode / "model.pt")
    (ode / "model_config.json").write_text(json.dumps(net.config()))
    return enc, ode


def _infer(cohort: Path, enc: Path, ode: Path, subject: str, times: list[float], out: Path, **extra: str) -> None:
    """``python -m monai.bundle run --config_file inference.json ...`` in-process (``monai.bundle.run``)."""
    from monai.bundle import run

    run(config_file=str(INFERENCE), encoder_bundle=str(enc), ode_dir=str(ode), datalist=str(cohort / "datalist.json"),
        subject=subject, n_observed=2, target_times=times, output_dir=str(out), device="cpu", **extra)  # fmt: skip


def _scans(cohort: Path, subject: str) -> list[dict]:
    from custom.ode.forecast import subject_scans

    return subject_scans(str(cohort / "datalist.json"), subject)


def test_inference_writes_masks_and_images_on_the_input_grid(tiny_cohort: Path, models, tmp_path: Path) -> None:
    enc, ode = models
    subject = "BraTS-MEN-00002"
    scans = _scans(tiny_cohort, subject)
    t_last = float(scans[1]["time_years"])
    _infer(tiny_cohort, enc, ode, subject, [t_last, t_last + 1.5], tmp_path)
    result = json.loads((tmp_path / f"{subject}_forecast.json").read_text())
    ref = nib.load(scans[1]["image"][0])
    last = np.isin(np.asarray(nib.load(scans[1]["label"]).dataobj), (1, 3))
    assert len(result["forecast_masks"]) == 2 and len(result["forecast_images"]) == 8
    for path, v in zip(result["forecast_masks"], result["forecast_volume_ml"]):
        m = nib.load(path)
        assert m.shape == ref.shape and np.allclose(m.affine, ref.affine)
        mask = np.asarray(m.dataobj).astype(bool)
        # the level set only grows or only shrinks the last mask
        assert (
            (mask >= last).all() if v >= last.sum() * np.prod(ref.header.get_zooms()) / 1000 else (mask <= last).all()
        )
    for path in result["forecast_images"]:
        img = nib.load(path)
        assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    # at the last observed scan's own time the forecast latent is the anchor: the images are the input scans
    for c, path in enumerate(result["forecast_images"][:4]):
        assert np.array_equal(np.asarray(nib.load(path).dataobj), np.asarray(nib.load(scans[1]["image"][c]).dataobj))
    later = np.asarray(nib.load(result["forecast_images"][4]).dataobj)
    assert not np.array_equal(later, np.asarray(ref.dataobj))


def test_inference_takes_the_last_mask_from_a_file(tiny_cohort: Path, models, tmp_path: Path) -> None:
    enc, ode = models
    subject = "BraTS-MEN-00003"
    scans = _scans(tiny_cohort, subject)
    seg = nib.load(scans[1]["label"])
    box = np.zeros(seg.shape, np.uint8)
    c = np.argwhere(np.asarray(seg.dataobj) > 0).mean(axis=0).round().astype(int)
    box[c[0] - 1 : c[0] + 2, c[1] - 1 : c[1] + 2, c[2] - 1 : c[2] + 2] = 3  # a 27-voxel cube as the "given" mask
    given = tmp_path / "given_seg.nii.gz"
    nib.save(nib.Nifti1Image(box, seg.affine), str(given))
    _infer(tiny_cohort, enc, ode, subject, [9.0], tmp_path / "out", last_mask_file=str(given))
    result = json.loads((tmp_path / "out" / f"{subject}_forecast.json").read_text())
    mask = np.asarray(nib.load(result["forecast_masks"][0]).dataobj).astype(bool)
    cube = box > 0
    assert (mask >= cube).all() or (mask <= cube).all()
    assert mask[tuple(c)]  # the forecast is centred on the given mask, not on the datalist's segmentation


def test_mask_scorer_on_the_tiny_cohort(tiny_cohort: Path, models, tmp_path: Path) -> None:
    from custom.forecast_mask.score import score_forecast_masks, summarise, write_mask_report
    from custom.ode.encode import encode_trajectories
    from custom.ode.frames import forecast_frames
    from custom.ode.hybrid import HybridGompertzForecaster
    from custom.ode.subjects import load_subject_data

    enc, _ = models
    datalist = tiny_cohort / "datalist.json"
    traj = encode_trajectories(str(enc), str(datalist), str(tmp_path / "traj.pt"), device="cpu")
    data = load_subject_data(traj, tiny_cohort / "cohort.csv")
    net = HybridGompertzForecaster(z_dim=16, vol_index=None, hidden=8)
    net.set_latent_space(**data.network_space())
    ds = data.dataset("train")
    frames = forecast_frames(net, ds, [1])
    scores = score_forecast_masks(net, ds, frames, datalist, str(enc), [1])
    n_targets = sum(len(it["t"]) - 1 for it in ds.items)
    assert len(scores) == 2 * n_targets  # both volume modes, every target scan
    # copy-the-last-mask Dice recomputed by hand from the NIfTI files
    from custom.forecast_mask.score import datalist_cases

    cases = datalist_cases(datalist)
    items = {it["subject_id"]: it for it in ds.items}
    for r in scores.head(6).to_dict(orient="records"):
        it = items[r["subject_id"]]
        j = list(np.round(it["t"].numpy(), 6)).index(round(r["time_years"], 6))
        last = np.isin(np.asarray(nib.load(cases[it["case_id"][r["k_obs"] - 1]]["label"]).dataobj), (1, 3))
        true = np.isin(np.asarray(nib.load(cases[it["case_id"][j]]["label"]).dataobj), (1, 3))
        assert r["copy_last_dice"] == pytest.approx(2 * (last & true).sum() / (last.sum() + true.sum()), abs=1e-6)
        assert r["copy_last_abs_rvd"] == pytest.approx(abs(last.sum() - true.sum()) / true.sum())
    assert np.isfinite(scores[["forecast_ssim", "copy_last_psnr"]].to_numpy()).all()
    summary = summarise(scores, n_boot=50)
    assert {"all", "fastest20"} <= set(summary["stratum"])
    written = write_mask_report(scores, summary, tmp_path / "report")
    assert "forecast - copy_last" in Path(written["report"]).read_text()


def test_a_last_mask_off_the_scan_grid_is_a_clear_error(tiny_cohort: Path, tmp_path: Path) -> None:
    from custom.ode.forecast import write_forecast_masks

    scan = _scans(tiny_cohort, "BraTS-MEN-00001")[1]
    seg = nib.load(scan["label"])
    other = tmp_path / "other_grid_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(seg.dataobj)[:-2], seg.affine), str(other))
    with pytest.raises(ValueError, match="other_grid_seg.nii.gz.*not on the grid"):
        write_forecast_masks(str(other), scan["image"][0], np.array([5.0]), np.array([3.0]), tmp_path, "s")
    empty = tmp_path / "empty_seg.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(seg.shape, np.uint8), seg.affine), str(empty))
    with pytest.raises(ValueError, match="empty_seg.nii.gz has no tumour voxel"):
        write_forecast_masks(str(empty), scan["image"][0], np.array([5.0]), np.array([3.0]), tmp_path, "s")


def test_four_channel_input_files_give_one_anchored_file(tiny_cohort: Path, models, tmp_path: Path) -> None:
    from custom.ode.forecast import forecast_subject

    enc, ode = models
    scans = []
    for s in _scans(tiny_cohort, "BraTS-MEN-00004")[:2]:
        chans = [nib.load(f) for f in s["image"]]
        path = tmp_path / f"{s['case_id']}_4ch.nii.gz"
        nib.save(nib.Nifti1Image(np.stack([np.asarray(c.dataobj) for c in chans], -1), chans[0].affine), str(path))
        scans.append({**s, "image": str(path)})
    t_last = float(scans[1]["time_years"])
    result = forecast_subject(str(enc), str(ode), str(tmp_path / "out"), scans=scans, target_times=[t_last, 8.0])
    assert [Path(p).name.endswith("_anchored.nii.gz") for p in result["forecast_images"]] == [True, True]
    same = nib.load(result["forecast_images"][0])
    assert same.shape == nib.load(scans[1]["image"]).shape
    assert np.array_equal(np.asarray(same.dataobj), np.asarray(nib.load(scans[1]["image"]).dataobj))
    assert len(result["forecast_masks"]) == 2
