"""Forecast one subject: encode its observed scans, run the hybrid forecaster, decode the future images.

Used by ``bundles/latent_ode/configs/inference.json``. Input: the subject's scans (image paths and times;
from a datalist + subject id, or given directly) and the target times. Output in ``output_dir``:
``<subject>_forecast.json`` (times, forecast latents, forecast volumes in mL), one NIfTI per target time
(the encoder bundle's decoder applied to the forecast latent, mapped back to the input scan's geometry
by inverting the preprocessing), and ``<subject>_growth.png``; with the last observed scan's tumour mask (its
segmentation, or ``last_mask_file``) also ``<subject>_forecast_mask_t<t>y.nii.gz`` per target time (the last
mask grown or shrunk along its signed distance to the forecast volume, :mod:`custom.forecast_mask.level_set`) and
``<subject>_forecast_t<t>y_<modality>.nii.gz``, the last scan plus the decoded change (:mod:`custom.forecast_mask.images`), both on the last observed scan's grid (its affine and
shape).
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
    last_mask_file: str | None = None,
    save_masks: bool = True,
    mask_method: str = "ranked",
    mask_tie_break: str = "smooth",
    seg_volumes_file: str | None = None,
) -> dict[str, Any]:
    """Forecast from the first ``n_observed`` scans to ``target_times`` (default: the remaining scan times, and +1 yr).

    Observed scans with a ``label`` (segmentation) give the forecaster their measured volume when
    ``use_segmentations``; the others (or all, without it) give only their images (the read-out volume). The result
    holds the forecast volumes, their predictive sd of ln V, Gaussian P(growth > 15 %) and P(volume + 40 %) from that
    predictive distribution, and, when evaluation saved a conformal calibration next to the weights, calibrated
    80 % / 90 % intervals (otherwise ``intervals`` is null and ``intervals_note`` says why).

    The forecast masks start from ``last_mask_file`` when given (a segmentation of the last observed scan on its
    grid), else from that scan's ``label``; without either no mask is written (``masks_note`` says so).
    ``mask_method`` / ``mask_tie_break``: :func:`custom.forecast_mask.level_set.forecast_mask`.
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
    t_last = torch.full((1, 1), float(times[n_obs - 1] - t0))
    z_anchor = model.predict(z_std[obs], logv[obs], measured[obs], t_all[obs], t_last)["z_pred"][0]
    mu_anchor = (z_anchor * model.latent_std + model.latent_mean).float()  # the forecast latent at elapsed time 0

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
    last_scan = scans[n_obs - 1]
    mask_file = last_mask_file or last_scan.get("label")
    masks, anchored, masks_note = [], [], None
    if as_bool(save_masks) and mask_file:
        first = last_scan["image"] if isinstance(last_scan["image"], (str, Path)) else last_scan["image"][0]
        masks = write_forecast_masks(
            str(mask_file), str(first), target, v_pred, out, subject, mask_method, mask_tie_break
        )
    elif as_bool(save_masks):
        masks_note = f"scan {last_scan.get('case_id', n_obs - 1)} has no segmentation and no last_mask_file was given"
        logger.warning("no forecast masks: %s", masks_note)
    if save_images:
        anchored = write_anchored_images(
            vae, mu_pred, mu_anchor, data[n_obs - 1]["image"], tf, last_scan["image"], target, out, subject, device
        )
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
        "forecast_masks": masks,
        "masks_note": masks_note,
        "forecast_images": anchored,
        "growth_plot": str(png),
    }
    (out / f"{subject}_forecast.json").write_text(json.dumps(result, indent=1))
    logger.info("forecast for %s (%s) written to %s", subject, mode, out)
    return result


def _time_name(subject: str, t: float) -> str:
    return f"{subject}_forecast_t{t:.2f}y".replace(".", "p")  # no dots: SaveImage treats them as suffixes


def write_forecast_masks(
    mask_file: str,
    reference_image: str,
    target: np.ndarray,
    volumes_ml: np.ndarray,
    out: Path,
    subject: str,
    method: str = "ranked",
    tie_break: str = "smooth",
) -> list[str]:
    """``<subject>_forecast_mask_t<t>y.nii.gz`` (uint8 0/1) at each target time: the tumour in ``mask_file`` grown
    or shrunk along its signed distance to the forecast volume (``method``, ``tie_break``:
    :func:`custom.forecast_mask.level_set.forecast_mask`), with the affine and shape of ``reference_image`` (the last observed scan,
    which the mask must share)."""
    import nibabel as nib

    from custom.forecast_mask.level_set import forecast_mask, signed_distance, tumour_mask, voxel_sizes

    seg, ref = nib.load(mask_file), nib.load(reference_image)
    if seg.shape[:3] != ref.shape[:3] or not np.allclose(seg.affine, ref.affine, atol=1e-3):
        raise ValueError(
            f"the last mask {mask_file} (shape {seg.shape}) is not on the grid of the last observed scan "
            f"{reference_image} (shape {ref.shape}): give a segmentation of that scan"
        )
    last = tumour_mask(np.asarray(seg.dataobj).reshape(seg.shape[:3]))
    if not last.any():
        raise ValueError(f"the last mask {mask_file} has no tumour voxel: nothing to grow a forecast mask from")
    spacing = voxel_sizes(ref.affine)
    dist = signed_distance(last, spacing)
    written = []
    for t, v in zip(target, volumes_ml):
        m = forecast_mask(last, float(v), spacing, dist, method, tie_break).astype(np.uint8)
        header = ref.header.copy()
        header.set_data_dtype(np.uint8)
        path = out / f"{_time_name(subject, float(t)).replace('_forecast_', '_forecast_mask_')}.nii.gz"
        nib.save(nib.Nifti1Image(m, ref.affine, header), str(path))
        written.append(str(path))
    return written


def write_anchored_images(
    vae: torch.nn.Module,
    mu_pred: torch.Tensor,
    mu_anchor: torch.Tensor,
    reference: Any,
    transform: Any,
    image_files: Sequence[str],
    target: np.ndarray,
    out: Path,
    subject: str,
    device: str | torch.device,
) -> list[str]:
    """``<subject>_forecast_t<t>y_<modality>.nii.gz``: x_last + (D(z_t) - D(z_last)) on the last scan's grid
    (:mod:`custom.forecast_mask.images`); ``reference`` is the preprocessed last scan, ``image_files`` its inputs
    (four 3D files, or one 4-channel file, which gives one ``<subject>_forecast_t<t>y_anchored.nii.gz``)."""
    import nibabel as nib

    from custom.constants import MODALITIES
    from custom.forecast_mask.images import anchored_image, brain_sd, change_to_input

    if isinstance(image_files, (str, Path)):  # one 4-channel file (X, Y, Z, 4): one 4-channel forecast per time
        src = nib.load(str(image_files))
        x_last = np.moveaxis(np.asarray(src.dataobj, dtype=np.float32), -1, 0)
    else:
        imgs = [nib.load(str(f)) for f in image_files]
        x_last = np.stack([np.asarray(i.dataobj, dtype=np.float32).reshape(i.shape[:3]) for i in imgs])
    decoded = vae.decode(torch.cat([mu_anchor, mu_pred]).to(device)).float().cpu()
    scale = brain_sd(x_last)
    d_last = change_to_input(decoded[0], reference, transform, scale)
    if tuple(d_last.shape) != x_last.shape:
        raise ValueError(f"the inverted preprocessing gave {tuple(d_last.shape)}, not the input's {x_last.shape}")
    written = []
    for t, dec in zip(target, decoded[1:]):
        x_t = anchored_image(torch.from_numpy(x_last), change_to_input(dec, reference, transform, scale), d_last)
        x_t = x_t.numpy()
        if isinstance(image_files, (str, Path)):
            header = src.header.copy()
            header.set_data_dtype(np.float32)
            path = out / f"{_time_name(subject, float(t))}_anchored.nii.gz"
            nib.save(nib.Nifti1Image(np.moveaxis(x_t, 0, -1).astype(np.float32), src.affine, header), str(path))
            written.append(str(path))
            continue
        for c, (mod, src) in enumerate(zip(MODALITIES, imgs)):
            header = src.header.copy()
            header.set_data_dtype(np.float32)
            path = out / f"{_time_name(subject, float(t))}_{mod}.nii.gz"
            nib.save(nib.Nifti1Image(x_t[c].astype(np.float32), src.affine, header), str(path))
            written.append(str(path))
    return written


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
