"""Forecast one subject: encode its observed scans, run the hybrid forecaster, decode the future images.

Used by ``bundles/latent_ode/configs/inference.json``. Input: the subject's scans (image paths and times;
from a datalist + subject id, or given directly) and the target times. Output in ``output_dir``:
``<subject>_forecast.json`` (times, forecast latents, forecast volumes in mL), one NIfTI per target time
(the encoder bundle's decoder applied to the forecast latent, mapped back to the input scan's geometry
by inverting the preprocessing), and ``<subject>_growth.png``.
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

logger = logging.getLogger(__name__)


def subject_scans(datalist: str, subject: str) -> list[dict[str, Any]]:
    """All scans of ``subject`` in any split of ``datalist``, sorted by time (clear error when absent)."""
    from custom.data.datalist import read_datalist

    scans: list[dict[str, Any]] = []
    for split in ("training", "validation", "test"):
        try:
            scans += [it for it in read_datalist(datalist, split) if it.get("subject_id") == subject]
        except (KeyError, ValueError):
            continue
    if not scans:
        raise ValueError(f"subject {subject!r} has no scans in {datalist}")
    return sorted(
        scans, key=lambda it: (float(it.get("time_years", it.get("timepoint", 0)) or 0), it.get("timepoint", 0))
    )


@torch.no_grad()
def forecast_subject(
    encoder_bundle: str,
    ode_dir: str,
    output_dir: str,
    subject: str | None = None,
    datalist: str | None = None,
    scans: list[dict[str, Any]] | None = None,
    n_observed: int = 2,
    target_times: Sequence[float] | None = None,
    use_segmentations: bool = True,
    save_images: bool = True,
    device: str | torch.device = "cpu",
    seg_volumes_file: str | None = None,
) -> dict[str, Any]:
    """Forecast from the first ``n_observed`` scans to ``target_times`` (default: the remaining scan times, and +1 yr).

    Observed scans with a ``label`` (segmentation) give the forecaster their measured volume when
    ``use_segmentations``; the others (or all, without it) give only their images (the read-out volume). The result
    holds the forecast volumes, their predictive sd of ln V, Gaussian P(growth > 15 %) and P(volume + 40 %) from that
    predictive distribution, and, when evaluation saved a conformal calibration next to the weights, calibrated
    80 % / 90 % intervals (otherwise ``intervals`` is null and ``intervals_note`` says why).

    ``seg_volumes_file`` (the tumour_seg bundle's ``seg_volumes.csv``; only for a forecaster trained with one): scans
    observed without their segmentation give their segmented ln V instead of the read-out.
    """
    import pandas as pd
    from monai.data import MetaTensor
    from monai.transforms import SaveImage
    from scipy.stats import norm

    from custom.data.transforms import get_preprocessing
    from custom.ode.encode import load_encoder
    from custom.ode.evaluation import CALIBRATION_FILE, load_forecaster
    from custom.ode.frames import HYBRID, IMAGES_ONLY
    from custom.plots.growth import plot_growth
    from custom.utils import as_bool

    if scans is None:
        if not (datalist and subject):
            raise ValueError("give either `scans` or both `datalist` and `subject`")
        scans = subject_scans(datalist, subject)
    subject = subject or str(scans[0].get("subject_id", "subject"))
    n_obs = int(n_observed)
    if len(scans) < n_obs:
        raise ValueError(f"subject {subject} has {len(scans)} scan(s), fewer than n_observed={n_obs}")
    times = np.array([float(s.get("time_years", s.get("timepoint", 0))) for s in scans])
    if target_times is None:
        target_times = list(times[n_obs:]) + [float(times[-1]) + 1.0]
    target = np.asarray(sorted(float(t) for t in target_times), dtype=np.float64)

    vae, cfg = load_encoder(encoder_bundle, device)
    model = load_forecaster(ode_dir, "cpu")  # the forecaster is tiny: solve on the CPU, encode/decode on `device`
    with_label = all("label" in s for s in scans)
    tf = get_preprocessing(
        spacing=cfg.get("spacing", 1.875),
        spatial_size=cfg.get("spatial_size", (128, 128, 128)),
        with_label=with_label,
        with_factors=True,
    )
    data = [tf(dict(s)) for s in scans]
    mu = torch.stack([vae.encode(d["image"].as_tensor()[None].to(device).float())[0][0].float().cpu() for d in data])
    z_std = ((mu - model.latent_mean) / model.latent_std)[None]
    logv = torch.tensor([[float(d["factors"][0]) if "label" in scans[i] else float("nan") for i, d in enumerate(data)]])
    measured = torch.isfinite(logv) & as_bool(use_segmentations)
    t0 = float(times[0])
    t_all = torch.as_tensor(times - t0, dtype=torch.float32)[None]
    t_tgt = torch.as_tensor(target - t0, dtype=torch.float32)[None]
    dense = torch.linspace(0.0, float(target.max() - t0), 60)[None]
    obs = (slice(None), slice(0, n_obs))
    seg = _segmented_log_volumes(seg_volumes_file, model, scans, subject, ode_dir)
    pred = model.predict(z_std[obs], logv[obs], measured[obs], t_all[obs], t_tgt, y_images=seg[obs])
    dense_pred = model.predict(
        z_std[obs], logv[obs], measured[obs], t_all[obs], dense, with_latents=False, y_images=seg[obs]
    )
    mean, sd = pred["mean_log_v"][0].double().numpy(), pred["sd_log_v"][0].double().numpy()
    v_pred, v_dense = np.exp(mean), torch.exp(dense_pred["mean_log_v"][0]).numpy()
    images_only = bool(pred["images_only"][0])
    y_last = (
        float(logv[0, n_obs - 1])
        if not images_only and measured[0, n_obs - 1]
        else float(model.log_volume_readout(z_std[0, n_obs - 1]))
    )
    if images_only and seg_volumes_file and np.isfinite(float(seg[0, n_obs - 1])):
        y_last = float(seg[0, n_obs - 1])
    p15 = norm.sf((y_last + np.log(1.15) - mean) / sd)
    p40 = norm.sf((y_last + np.log(1.40) - mean) / sd)
    measured_ml = np.exp(logv[0].double().numpy())
    mu_pred = (pred["z_pred"][0] * model.latent_std + model.latent_mean).float()

    intervals, note = None, None
    calib = Path(ode_dir) / CALIBRATION_FILE
    method = IMAGES_ONLY if images_only else HYBRID
    if calib.exists():
        import pickle

        with calib.open("rb") as fh:
            conformal = pickle.load(fh)[method]
        frame = pd.DataFrame(
            {
                "subject_id": subject,
                "k_obs": n_obs,
                "t_last_obs": float(times[n_obs - 1] - t0),
                "time_years": target - t0,
                "horizon_years": target - times[n_obs - 1],
                "pred_volume_ml": v_pred,
                "pred_sd_log": sd,
                "last_obs_volume_ml": float(np.exp(y_last)),
            }
        )
        intervals = conformal.transform(frame).to_dict(orient="list")
    else:
        note = (
            f"no calibration at {calib}: run evaluate.json with the forecast statistics installed to calibrate "
            "intervals; the probabilities below are from the uncalibrated Gaussian predictive distribution"
        )
        logger.warning(note)

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[str] = []
    if save_images:
        ref = data[n_obs - 1]["image"]  # geometry of the last observed scan
        images = vae.decode(mu_pred.to(device)).float().cpu()
        saver = SaveImage(
            output_dir=str(out),
            output_postfix="",
            separate_folder=False,
            resample=False,
            output_dtype=np.float32,
            print_log=False,
        )
        for t, img in zip(target, images):
            mt = MetaTensor(
                img, meta=copy.deepcopy(dict(ref.meta)), applied_operations=copy.deepcopy(list(ref.applied_operations))
            )
            inv = tf.inverse({"image": mt})["image"]
            name = f"{subject}_forecast_t{t:.2f}y".replace(".", "p")  # no dots: SaveImage treats them as suffixes
            inv.meta["filename_or_obj"] = name
            saver(inv, meta_data=inv.meta)
            written.append(str(out / f"{name}.nii.gz"))
    row = {
        "subject_id": subject,
        "t_scans": times,
        "v_scans": measured_ml,
        "n_obs": n_obs,
        "t_dense": dense[0].numpy() + t0,
        "v_model": v_dense,
        "model_label": "forecast (images only)" if images_only else "forecast (segmentations)",
        "baselines": {},
        "truth": None,
    }
    mode = "images only" if images_only else "segmentations at the observed scans"
    png = plot_growth([row], out / f"{subject}_growth.png", ncols=1, title=f"{subject}: from {n_obs} scans ({mode})")
    result = {
        "subject_id": subject,
        "mode": method,
        "observed_times": times[:n_obs].tolist(),
        "target_times": target.tolist(),
        "forecast_volume_ml": v_pred.tolist(),
        "forecast_sd_log": sd.tolist(),
        "p_growth15": p15.tolist(),
        "p_prog40": p40.tolist(),
        "growth_rate_per_year": float(pred["a_mean"][0]),
        "intervals": intervals,
        "intervals_note": note,
        "forecast_mu": mu_pred.tolist(),
        "measured_volume_ml": [None if not np.isfinite(v) else float(v) for v in measured_ml],
        "scan_times": times.tolist(),
        "images": written,
        "growth_plot": str(png),
    }
    (out / f"{subject}_forecast.json").write_text(json.dumps(result, indent=1))
    logger.info("forecast for %s (%s) written to %s", subject, mode, out)
    return result


def _segmented_log_volumes(
    seg_volumes_file: str | None, model: Any, scans: list[dict[str, Any]], subject: str, ode_dir: str
) -> torch.Tensor:
    """[1, n scans] segmented ln V of ``scans`` from ``seg_volumes_file`` (all nan without a file)."""
    if not seg_volumes_file:
        return torch.full((1, len(scans)), float("nan"))
    if getattr(model, "seg_volume_sd", None) is None:
        raise ValueError(
            f"the forecaster in {ode_dir} was trained without seg_volumes_file, so it has no noise sd for segmented "
            "volumes; train latent_ode with --seg_volumes_file or leave it out here"
        )
    from custom.ode.seg_volumes import read_seg_log_volumes

    cases = [str(s.get("case_id", "")) for s in scans]
    return torch.as_tensor(read_seg_log_volumes(seg_volumes_file, cases, [subject] * len(cases)), dtype=torch.float32)[
        None
    ]
