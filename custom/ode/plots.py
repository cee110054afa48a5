"""Per-subject rows of the hybrid forecaster for :func:`custom.plots.growth.plot_growth` (volumes in mL, years)."""

from __future__ import annotations

import math

import numpy as np
import torch

from custom.ode.subjects import SubjectTrajectories, pad_collate


@torch.no_grad()
def hybrid_growth_rows(
    network, dataset: SubjectTrajectories, k_obs: int = 2, n_subjects: int = 12, n_dense: int = 60, extend: float = 1.0
) -> list[dict]:
    """Dense forecast curves from the first ``k_obs`` scans with segmentations (the model line) and from the images
    alone (drawn as a baseline), the measured scans and, on synthetic cohorts, the true Gompertz curve."""
    items = [it for it in dataset.items if len(it["t"]) > k_obs][:n_subjects]
    if not items:
        raise ValueError(f"no {dataset.split} subject has more than k_obs={k_obs} scans to plot")
    dev = network.latent_mean.device
    batch = pad_collate(items)
    batch = {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
    t_end = batch["t"].amax(1) + extend
    dense = torch.linspace(0, 1, n_dense, device=dev).unsqueeze(0) * t_end.unsqueeze(1)
    curves = {}
    for seg in (True, False):
        obs = batch["mask"] & (torch.arange(batch["t"].shape[1], device=dev) < int(k_obs))
        measured = obs & torch.isfinite(batch["logv_measured"]) & seg
        pred = network.predict(batch["z"], batch["logv_measured"], measured, batch["t"], dense, obs, with_latents=False)
        curves[seg] = torch.exp(pred["mean_log_v"]).double().cpu().numpy()
    rows = []
    for b, it in enumerate(items):
        td = dense[b].double().cpu().numpy()
        tr = it["truth"]
        truth = None
        if all(np.isfinite([tr["V0_ml"], tr["a_per_year"], tr["K_ml"]])):
            truth = (td, tr["K_ml"] * np.exp(math.log(tr["V0_ml"] / tr["K_ml"]) * np.exp(-tr["a_per_year"] * td)))
        rows.append(
            {
                "subject_id": it["subject_id"],
                "growth_class": it["growth_class"],
                "t_scans": it["t"].double().numpy(),
                "v_scans": np.exp(it["logv_measured"].double().numpy()),
                "n_obs": int(k_obs),
                "t_dense": td,
                "v_model": curves[True][b],
                "model_label": "hybrid (segmentations)",
                "baselines": {"images only": (td, curves[False][b])},
                "truth": truth,
            }
        )
    return rows
