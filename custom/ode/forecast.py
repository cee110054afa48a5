"""Forecast one subject: encode its observed scans, integrate the latent ODE, decode the future images.

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
    save_images: bool = True,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """Forecast from the first ``n_observed`` scans to ``target_times`` (default: the remaining scan times, and +1 yr)."""
    from monai.data import MetaTensor
    from monai.transforms import SaveImage

    from custom.data.transforms import get_preprocessing
    from custom.ode.encode import load_encoder
    from custom.ode.workflow import load_model
    from custom.plots.growth import plot_growth

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
    model = load_model(ode_dir, "cpu")  # the ODE is tiny: solve on the CPU, encode/decode on `device`
    tf = get_preprocessing(
        spacing=cfg.get("spacing", 1.875),
        spatial_size=cfg.get("spatial_size", (128, 128, 128)),
        with_label=all("label" in s for s in scans),
        with_factors=True,
    )
    data = [tf(dict(s)) for s in scans]
    mu = torch.stack([vae.encode(d["image"].as_tensor()[None].to(device).float())[0][0].float().cpu() for d in data])
    dtype = model.latent_mean.dtype
    z_std = (mu.to(dtype) - model.latent_mean.cpu()) / model.latent_std.cpu()
    t_obs = torch.as_tensor(times[:n_obs], dtype=dtype)[None]
    t_tgt = torch.as_tensor(target, dtype=dtype)[None]
    dense = torch.linspace(float(times[0]), float(target.max()), 60, dtype=dtype)[None]
    z_pred = model(
        z_std[None, :n_obs].to(model.latent_mean.device),
        t_obs.to(model.latent_mean.device),
        t_tgt.to(model.latent_mean.device),
    ).cpu()[0]
    z_dense = model(
        z_std[None, :n_obs].to(model.latent_mean.device),
        t_obs.to(model.latent_mean.device),
        dense.to(model.latent_mean.device),
    ).cpu()[0]
    v_pred = torch.exp(model.log_volume(z_pred)).numpy()
    v_dense = torch.exp(model.log_volume(z_dense)).numpy()
    measured = np.array(
        [float(np.exp(d["factors"][0])) if np.isfinite(float(d["factors"][0])) else np.nan for d in data]
    )
    mu_pred = (z_pred * model.latent_std.cpu() + model.latent_mean.cpu()).float()

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
        "v_scans": measured,
        "n_obs": n_obs,
        "t_dense": dense[0].numpy(),
        "v_model": v_dense,
        "baselines": {},
        "truth": None,
    }
    png = plot_growth([row], out / f"{subject}_growth.png", ncols=1, title=f"{subject}: forecast from {n_obs} scans")
    result = {
        "subject_id": subject,
        "observed_times": times[:n_obs].tolist(),
        "target_times": target.tolist(),
        "forecast_volume_ml": v_pred.tolist(),
        "forecast_mu": mu_pred.tolist(),
        "measured_volume_ml": measured.tolist(),
        "scan_times": times.tolist(),
        "images": written,
        "growth_plot": str(png),
    }
    (out / f"{subject}_forecast.json").write_text(json.dumps(result, indent=1))
    logger.info("forecast for %s written to %s", subject, out)
    return result
