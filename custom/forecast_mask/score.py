"""Score forecast masks and images at every held-out target scan against copy-the-last-scan references.

For each subject of the evaluation split with more than k scans, each later (target) scan and each volume mode of
the forecaster (segmentations at the observed scans, images only):

* masks, on the grid of the last observed segmentation (its own geometry): ``forecast`` (the last mask grown or
  shrunk along its signed distance to the forecast volume, :func:`custom.forecast_mask.level_set.forecast_mask`:
  ``mask_method="ranked"``, the exact voxel count, or ``"level_set"``, whole distance shells), ``copy_last`` (the
  last mask), and ``oracle_volume`` (the same construction at the target scan's true measured volume: the best an
  isotropic growth of the last shape can do);
  Dice, HD95, RVD, |RVD| and centroid error (:mod:`custom.forecast_mask.metrics`); ``mask_volume_fidelity`` =
  |V(forecast mask) - V_forecast| / V_forecast, the volume the grid could not match;
* images, in the model's grid (z-scored channels): ``forecast`` = x_last + D(z_t) - D(z_last)
  (:mod:`custom.forecast_mask.images`) and ``copy_last`` = x_last; SSIM and PSNR inside the box of the last and
  target tumours dilated by ``margin`` voxels.

Summaries (per k, mode and stratum: all, growth class strata and the 20 % fastest changers of
:mod:`custom.forecast.strata`): the mean of each score over target scans and the paired difference forecast -
copy_last with a subject-level bootstrap 95 % interval (:mod:`custom.forecast.bootstrap`). Target scans whose
segmentation is not on the last observed scan's grid (unregistered follow-ups) cannot be compared voxel-wise: they
are counted in ``n_skipped_geometry`` and listed in the log, not scored.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from custom.constants import TUMOUR_LABELS
from custom.forecast_mask.images import anchored_image
from custom.forecast_mask.level_set import forecast_mask, signed_distance, tumour_mask, voxel_sizes
from custom.forecast_mask.metrics import image_scores, mask_scores, tumour_box

logger = logging.getLogger(__name__)

MASK_METHODS: tuple[str, ...] = ("forecast", "copy_last", "oracle_volume")
MASK_METRICS: tuple[str, ...] = ("dice", "hd95_mm", "abs_rvd", "centroid_err_mm")
IMAGE_METRICS: tuple[str, ...] = ("ssim", "psnr")


def datalist_cases(datalist: str | Path) -> dict[str, dict[str, Any]]:
    """Every item of every split of ``datalist`` by ``case_id`` (absolute paths)."""
    from custom.data.datalist import read_datalist

    cases: dict[str, dict[str, Any]] = {}
    for split in ("training", "validation", "test"):
        try:
            cases.update({str(it["case_id"]): it for it in read_datalist(datalist, split)})
        except (KeyError, ValueError):
            continue
    return cases


def load_seg(path: str) -> tuple[np.ndarray, np.ndarray]:
    """(label map, affine) of a segmentation NIfTI."""
    import nibabel as nib

    img = nib.load(path)
    return np.asarray(img.dataobj).squeeze(), np.asarray(img.affine, dtype=np.float64)


def _preprocessed(cache: dict, case: dict[str, Any], transform) -> tuple[torch.Tensor, np.ndarray]:
    cid = str(case["case_id"])
    if cid not in cache:
        d = transform(dict(case))
        cache[cid] = (d["image"].as_tensor().float(), tumour_mask(d["label"].as_tensor().numpy()[0]))
    return cache[cid]


@torch.no_grad()
def score_forecast_masks(
    network: Any,
    dataset: Any,
    frames: pd.DataFrame,
    datalist: str | Path,
    encoder_bundle: str | None,
    k_values: Sequence[int] = (1, 2),
    margin: int = 3,
    device: str | torch.device = "cpu",
    mask_method: str = "ranked",
    tie_break: str = "smooth",
) -> pd.DataFrame:
    """One row per (mode, k, subject, target scan) with every mask and image score (module docstring).

    ``frames``: the forecast frames of ``dataset``'s subjects (``custom.ode.frames``; methods
    ``latent_ode_hybrid`` / ``latent_ode_images_only``); ``encoder_bundle``: the decoder for the image forecasts
    (None: masks only).
    """
    from custom.data.transforms import get_preprocessing
    from custom.ode.engine import run_forecast
    from custom.ode.frames import HYBRID, IMAGES_ONLY
    from custom.ode.subjects import pad_collate

    cases = datalist_cases(datalist)
    vae, transform = None, None
    if encoder_bundle:
        from custom.ode.encode import load_encoder

        vae, cfg = load_encoder(encoder_bundle, device)
        transform = get_preprocessing(
            spacing=cfg.get("spacing", 1.875), spatial_size=cfg.get("spatial_size", (128, 128, 128)), with_label=True
        )
    pp_cache: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
    seg_cache: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    lookup = {key: f for key, f in frames.groupby(["method", "k_obs", "subject_id"])}
    rows: list[dict[str, Any]] = []
    skipped = 0
    for k in (int(v) for v in k_values):
        items = [it for it in dataset.items if len(it["t"]) > k]
        if not items:
            continue
        batch = pad_collate(items)
        for method, seg_mode in ((HYBRID, True), (IMAGES_ONLY, False)):
            z_pred = None
            if vae is not None:
                pred, _, _ = run_forecast(network, batch, torch.full((len(items),), k), seg_mode, with_latents=True)
                z_pred = pred["z_pred"] * network.latent_std + network.latent_mean  # encoder means [B, T, Z]
            for b, it in enumerate(items):
                ids = it["case_id"]
                if len(ids) != len(it["t"]) or any(c not in cases for c in ids):
                    raise ValueError(
                        f"subject {it['subject_id']}: its scans {ids} are not all in the datalist {datalist}"
                    )
                last = cases[ids[k - 1]]
                if "label" not in last:
                    raise ValueError(f"case {ids[k - 1]} has no segmentation in {datalist}: no last mask to forecast")
                seg_last, aff = seg_cache.setdefault(ids[k - 1], load_seg(last["label"]))
                m_last = tumour_mask(seg_last)
                spacing = voxel_sizes(aff)
                dist = signed_distance(m_last, spacing)
                vox_ml = float(np.prod(spacing)) / 1000.0
                f = lookup[(method, k, it["subject_id"])]
                decoded_last = None
                if z_pred is not None:
                    decoded_last = vae.decode(z_pred[b, k - 1 : k].to(device)).float().cpu()[0]
                    x_last, pp_last = _preprocessed(pp_cache, last, transform)
                t_end = float(it["t"][-1])
                for j in range(k, len(ids)):
                    target = cases[ids[j]]
                    if "label" not in target:
                        raise ValueError(f"case {ids[j]} has no segmentation in {datalist}: no true mask to score")
                    t_j = float(it["t"][j])
                    seg_t, aff_t = seg_cache.setdefault(ids[j], load_seg(target["label"]))
                    if seg_t.shape != seg_last.shape or not np.allclose(aff_t, aff, atol=1e-3):
                        logger.warning("%s is not on the grid of %s: not scored", target["label"], last["label"])
                        skipped += 1
                        continue
                    m_true = tumour_mask(seg_t)
                    v_pred = float(f.loc[np.isclose(f["time_years"], t_j), "pred_volume_ml"].iloc[0])
                    grow = lambda v: forecast_mask(m_last, v, spacing, dist, mask_method, tie_break)  # noqa: E731
                    masks = {
                        "forecast": grow(v_pred),
                        "copy_last": m_last,
                        "oracle_volume": grow(m_true.sum() * vox_ml),
                    }
                    row: dict[str, Any] = {
                        "method": method,
                        "mask_method": mask_method,
                        "k_obs": k,
                        "subject_id": it["subject_id"],
                        "growth_class": it["growth_class"],
                        "t_last_obs": float(it["t"][k - 1]),
                        "time_years": t_j,
                        "horizon_years": t_j - float(it["t"][k - 1]),
                        "is_last": bool(math.isclose(t_j, t_end)),
                        "volume_ml": float(m_true.sum() * vox_ml),
                        "last_obs_volume_ml": float(m_last.sum() * vox_ml),
                        "pred_volume_ml": v_pred,
                        "mask_volume_fidelity": abs(masks["forecast"].sum() * vox_ml - v_pred) / v_pred,
                    }
                    for name, m in masks.items():
                        row |= {f"{name}_{key}": v for key, v in mask_scores(m, m_true, aff).items()}
                    if decoded_last is not None:
                        x_t, pp_t = _preprocessed(pp_cache, target, transform)
                        decoded_t = vae.decode(z_pred[b, j : j + 1].to(device)).float().cpu()[0]
                        box = tumour_box(pp_last | pp_t, margin)
                        fc = anchored_image(x_last, decoded_t, decoded_last)
                        row |= {f"forecast_{key}": v for key, v in image_scores(fc, x_t, box).items()}
                        row |= {f"copy_last_{key}": v for key, v in image_scores(x_last, x_t, box).items()}
                    rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs["n_skipped_geometry"] = skipped
    return out


def _strata(scores: pd.DataFrame) -> dict[str, pd.Series]:
    """Boolean row selections: all, each growth-class stratum, the 20 % fastest changers (per k)."""
    from custom.forecast.strata import FASTEST, change_rate, class_stratum, fastest_subjects

    out = {"all": pd.Series(True, index=scores.index)}
    strata = class_stratum(scores["growth_class"])
    for name in sorted(set(strata) - {""}):
        out[name] = strata == name
    fast = fastest_subjects(change_rate(scores))
    out[FASTEST] = pd.Series([(s, k) in fast for s, k in zip(scores["subject_id"], scores["k_obs"])], scores.index)
    return out


def summarise(scores: pd.DataFrame, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Per (method, k, scans, stratum, metric): n subjects, n scans, the mean of each mask/image method and the paired
    difference forecast - copy_last with its subject-bootstrap 95 % interval (module docstring). ``scans`` is
    ``all`` (every held-out target scan) and, where ``is_last`` marks them, ``last`` (each subject's last scan)."""
    from custom.forecast.bootstrap import boot_mean, percentile_ci, resample_counts

    rng = np.random.default_rng(seed)
    rows = []
    for (method, k), g in scores.groupby(["method", "k_obs"], sort=False):
        strata = _strata(g)
        subsets = {"all": pd.Series(True, index=g.index)}
        if "is_last" in g:
            subsets["last"] = g["is_last"].astype(bool)
        for (scans, on), (stratum, sel) in itertools.product(subsets.items(), strata.items()):
            s = g[sel & on]
            if s.empty:
                continue
            subj, index = np.unique(s["subject_id"].to_numpy(), return_inverse=True)
            counts = resample_counts(len(subj), n_boot, rng)
            metrics = [*MASK_METRICS, "rvd"] + [m for m in IMAGE_METRICS if f"forecast_{m}" in s]
            for metric in [*metrics, "mask_volume_fidelity"]:
                row = {"method": method, "k_obs": int(k), "scans": scans, "stratum": stratum, "metric": metric}
                row |= {"n_subjects": len(subj), "n_scans": len(s)}
                if metric == "mask_volume_fidelity":
                    rows.append(row | {"forecast": float(s[metric].mean())})
                    continue
                for name in MASK_METHODS:
                    col = f"{name}_{metric}"
                    row[name] = float(np.nanmean(s[col])) if col in s and s[col].notna().any() else math.nan
                diff = (s[f"forecast_{metric}"] - s[f"copy_last_{metric}"]).to_numpy(float)
                ok = np.isfinite(diff)
                lo, hi = percentile_ci(boot_mean(diff[ok], index[ok], counts)) if ok.any() else (math.nan, math.nan)
                rows.append(row | {"diff": float(np.mean(diff[ok])) if ok.any() else math.nan, "lo": lo, "hi": hi})
    return pd.DataFrame(rows)


def _fmt(v: float, digits: int = 3) -> str:
    return "" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"


def headline(summary: pd.DataFrame, stratum: str = "growers") -> list[str]:
    """One line per (mode, k): ``stratum``'s Dice, |RVD| and signed RVD differences with their intervals and the
    mean volume gap (all target scans and ``stratum``)."""
    lines = []
    for (method, k), g in summary.groupby(["method", "k_obs"], sort=False):
        scans = "last" if (g["scans"] == "last").any() else "all"
        g = g[g["scans"] == scans]
        pick = lambda st, m: g[(g["stratum"] == st) & (g["metric"] == m)]  # noqa: E731
        parts = []
        for metric in ("dice", "abs_rvd", "rvd"):
            r = pick(stratum, metric)
            if len(r):
                r = r.iloc[0]
                parts.append(f"{metric} {_fmt(r['diff'])} [{_fmt(r['lo'])}, {_fmt(r['hi'])}]")
        gaps = [f"{st} {_fmt(pick(st, 'mask_volume_fidelity')['forecast'].iloc[0])}" for st in ("all", stratum)
                if len(pick(st, "mask_volume_fidelity"))]  # fmt: skip
        if parts or gaps:
            lines.append(
                f"- {method}, k = {k}: {stratum} ({'last held-out scan' if scans == 'last' else 'all target scans'}) "
                f"forecast - copy_last {'; '.join(parts)}; "
                f"mean volume gap {', '.join(gaps)}"
            )
    return lines


def write_mask_report(scores: pd.DataFrame, summary: pd.DataFrame, out_dir: str | Path) -> dict[str, str]:
    """``mask_scores.csv`` (per target scan), ``mask_metrics.json`` and ``mask_report.md`` in ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    scores.to_csv(out / "mask_scores.csv", index=False)
    meta = {
        "n_subjects": int(scores["subject_id"].nunique()) if len(scores) else 0,
        "n_target_scans": int(len(scores)),
        "n_skipped_geometry": int(scores.attrs.get("n_skipped_geometry", 0)),
        "tumour_labels": list(TUMOUR_LABELS),
        "summary": summary.to_dict(orient="records"),
    }
    (out / "mask_metrics.json").write_text(json.dumps(meta, indent=1, default=float))
    how = {
        "ranked": "the forecast-volume voxel count ranked along the last mask's signed distance (exact volume)",
        "level_set": "the last mask's signed-distance level set nearest the forecast volume (whole shells)",
    }
    methods = sorted(set(scores["mask_method"])) if "mask_method" in scores else []
    lines = [
        "# Forecast masks and images against copy-the-last-scan",
        "",
        f"{meta['n_target_scans']} held-out target scans of {meta['n_subjects']} subjects "
        f"({meta['n_skipped_geometry']} not on the last scan's grid, not scored). Masks: the tumour (labels "
        f"{', '.join(map(str, TUMOUR_LABELS))}); forecast = "
        f"{'; '.join(how.get(m, m) for m in methods)}; "
        "oracle_volume = the same at the true target volume. Images: SSIM / PSNR in the tumours' box (model grid). "
        "diff = forecast - copy_last, [95 % CI] from a subject bootstrap. mask_volume_fidelity = "
        "|V(forecast mask) - V_forecast| / V_forecast (the mean volume gap).",
        "",
        *headline(summary),
        "",
        "| mode | k | scans | stratum | n subj | metric | forecast | copy_last | oracle_volume | diff [95 % CI] |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary.to_dict(orient="records"):
        ci = (
            f"{_fmt(r.get('diff'))} [{_fmt(r.get('lo'))}, {_fmt(r.get('hi'))}]"
            if np.isfinite(r.get("diff", np.nan))
            else ""
        )
        lines.append(
            f"| {r['method']} | {r['k_obs']} | {r['scans']} | {r['stratum']} | {r['n_subjects']} | {r['metric']} | "
            f"{_fmt(r.get('forecast'))} | {_fmt(r.get('copy_last'))} | {_fmt(r.get('oracle_volume'))} | {ci} |"
        )
    (out / "mask_report.md").write_text("\n".join(lines) + "\n")
    return {"report": str(out / "mask_report.md"), "json": str(out / "mask_metrics.json")}


def write_subject_figures(
    scores: pd.DataFrame,
    dataset: Any,
    frames: pd.DataFrame,
    datalist: str | Path,
    out_dir: str | Path,
    k_obs: int,
    method: str = "latent_ode_hybrid",
    n_subjects: int = 3,
    mask_method: str = "ranked",
    tie_break: str = "smooth",
) -> list[str]:
    """``masks_<subject>.png`` (:func:`custom.forecast_mask.figure.plot_mask_forecast`) for ``n_subjects`` subjects
    spread over the change from the last observed to the last target scan (shrinking to fastest growing)."""
    import nibabel as nib

    from custom.forecast_mask.figure import plot_mask_forecast

    s = scores[(scores["method"] == method) & (scores["k_obs"] == k_obs) & scores["is_last"]]
    if s.empty:
        return []
    order = s.assign(change=np.log(s["volume_ml"] / s["last_obs_volume_ml"])).sort_values("change")["subject_id"]
    pick = [order.iloc[int(i)] for i in np.unique(np.linspace(0, len(order) - 1, min(n_subjects, len(order))))]
    cases = datalist_cases(datalist)
    items = {it["subject_id"]: it for it in dataset.items}
    written = []
    for sid in pick:
        it = items[sid]
        imgs = [nib.as_closest_canonical(nib.load(cases[c]["image"][0])) for c in it["case_id"]]
        segs = [nib.as_closest_canonical(nib.load(cases[c]["label"])) for c in it["case_id"]]
        t1c = [np.asarray(i.dataobj, dtype=np.float32).reshape(i.shape[:3]) for i in imgs]
        masks = [tumour_mask(np.asarray(g.dataobj).reshape(g.shape[:3])) for g in segs]
        spacing = voxel_sizes(segs[k_obs - 1].affine)
        f = frames[(frames["method"] == method) & (frames["k_obs"] == k_obs) & (frames["subject_id"] == sid)]
        forecasts = {}
        for j in range(k_obs, len(masks)):
            v = f.loc[np.isclose(f["time_years"], float(it["t"][j])), "pred_volume_ml"]
            if len(v):
                forecasts[j] = forecast_mask(masks[k_obs - 1], float(v.iloc[0]), spacing, None, mask_method, tie_break)
        row = s[s["subject_id"] == sid].iloc[0]
        title = (
            f"{sid} ({it['growth_class']}): forecast from {k_obs} scans; last target Dice "
            f"{row['forecast_dice']:.2f} (copy-last {row['copy_last_dice']:.2f})"
        )
        written.append(
            plot_mask_forecast(
                t1c, masks, it["t"].tolist(), k_obs, forecasts, Path(out_dir) / f"masks_{sid}.png",
                voxel_mm=float(spacing[0]), title=title,
            )  # fmt: skip
        )
    return written
