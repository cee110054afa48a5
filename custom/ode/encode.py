"""Encode every scan of a longitudinal datalist with a trained encoder bundle, with an input-keyed cache.

The trajectories file (``torch.save`` dict, contract in :mod:`custom.ode.data`) holds per scan mu, logvar,
subject, timepoint, time, factors and split, plus the encoder's latent partition and volume scale
(``models/latent_partition.json`` of an Exp3 dipvae) and, for the synthetic cohort, each subject's true
Gompertz parameters from ``cohort.csv``. It is rebuilt only when its inputs change: the key hashes the
encoder weights, its model_config.json and latent_partition.json, the datalist and the cohort table.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

_SPLITS = {"training": "train", "validation": "validation", "test": "test"}


def _file_digest(path: Path, h: "hashlib._Hash") -> None:
    if path.exists():
        h.update(path.name.encode())
        h.update(path.read_bytes())


def inputs_key(encoder_bundle: str, datalist: str, cohort_csv: str | None = None) -> str:
    """SHA-256 over everything the trajectories depend on (weights, encoder config, partition, data tables)."""
    h = hashlib.sha256()
    models = Path(encoder_bundle) / "models"
    for name in ("model.pt", "model_config.json", "latent_partition.json"):
        _file_digest(models / name, h)
    _file_digest(Path(datalist), h)
    if cohort_csv:
        _file_digest(Path(cohort_csv), h)
    return h.hexdigest()


def read_truth(cohort_csv: str | Path) -> dict[str, dict[str, Any]]:
    """Per-subject true Gompertz parameters from a synthetic ``cohort.csv`` (empty dict when absent)."""
    p = Path(cohort_csv)
    if not p.exists():
        return {}
    truth: dict[str, dict[str, Any]] = {}
    with p.open(newline="") as fh:
        for row in csv.DictReader(fh):
            if "true_a_per_year" not in row:
                return {}
            truth[row["subject_id"]] = {
                "V0_ml": float(row["true_V0_ml"]),
                "a_per_year": float(row["true_a_per_year"]),
                "K_ml": float(row["true_K_ml"]),
                "growth_class": row.get("growth_class", ""),
            }
    return truth


def load_encoder(encoder_bundle: str, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict[str, Any]]:
    """Rebuild a trained encoder bundle's VAE from ``models/model_config.json`` and load ``models/model.pt``."""
    from custom.engines.handlers.model_config import network_kwargs, read_model_config
    from custom.networks import ResNetVAE

    models = Path(encoder_bundle) / "models"
    weights = models / "model.pt"
    if not weights.exists():
        raise FileNotFoundError(f"encoder bundle {encoder_bundle} has no trained weights at {weights}: train it first")
    cfg = read_model_config(str(models))
    kwargs = network_kwargs(cfg)
    vae = ResNetVAE(**kwargs)
    vae.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return vae.to(device).eval(), cfg


@torch.no_grad()
def encode_trajectories(
    encoder_bundle: str,
    datalist: str,
    out: str,
    cohort_csv: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 4,
    num_workers: int = 0,
    force: bool = False,
    encode: bool = True,
) -> str:
    """Write (or reuse) the trajectories file ``out`` for all splits of ``datalist``; returns its path.

    ``encode=False`` uses an existing ``out`` as it is (a trajectories file made elsewhere, e.g. on another
    machine or by :func:`custom.ode.toy.make_toy_trajectories`) without looking at the encoder or the datalist."""
    from custom.utils import as_bool

    if not as_bool(encode):
        if not Path(out).exists():
            raise FileNotFoundError(f"encode is off but the trajectories file {out} does not exist")
        return str(out)
    from monai.data import DataLoader, Dataset

    from custom.data.datalist import read_datalist
    from custom.data.factors import FACTOR_NAMES
    from custom.data.transforms import get_preprocessing

    out_p = Path(out)
    if cohort_csv is None:
        cand = Path(datalist).parent / "cohort.csv"
        cohort_csv = str(cand) if cand.exists() else None
    key = inputs_key(encoder_bundle, datalist, cohort_csv)
    if out_p.exists() and not force:
        cached = torch.load(out_p, map_location="cpu", weights_only=False)
        if cached.get("inputs_key") == key:
            logger.info("trajectories up to date: %s", out_p)
            return str(out_p)
        logger.info("inputs changed: re-encoding trajectories %s", out_p)

    device = (
        torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    )
    vae, cfg = load_encoder(encoder_bundle, device)
    spacing = cfg.get("spacing", 1.875)
    transform = get_preprocessing(
        spacing=spacing, spatial_size=cfg.get("spatial_size", (128, 128, 128)), with_label=True, with_factors=True
    )
    items: list[dict[str, Any]] = []
    for split, short in _SPLITS.items():
        try:
            part = read_datalist(datalist, split)
        except (KeyError, ValueError):
            part = []
        for it in part:
            items.append({**it, "split": short})
    if not items:
        raise ValueError(f"{datalist} lists no scans to encode")
    loader = DataLoader(
        Dataset(items, transform=transform), batch_size=batch_size, shuffle=False, num_workers=num_workers
    )
    mus, logvars, factors = [], [], []
    for batch in loader:
        x = batch["image"].as_tensor().to(device).float()
        mu, logvar = vae.encode(x)
        mus.append(mu.float().cpu())
        logvars.append(logvar.float().cpu())
        factors.append(
            batch["factors"].as_tensor().float().cpu()
            if hasattr(batch["factors"], "as_tensor")
            else torch.as_tensor(batch["factors"]).float()
        )
    traj: dict[str, Any] = {
        "mu": torch.cat(mus),
        "logvar": torch.cat(logvars),
        "factors": torch.cat(factors),
        "factor_names": list(FACTOR_NAMES),
        "subject_id": [it["subject_id"] for it in items],
        "case_id": [it["case_id"] for it in items],
        "timepoint": torch.tensor([int(it.get("timepoint", 0)) for it in items]),
        "time_years": torch.tensor(
            [float(it["time_years"]) if it.get("time_years") is not None else float("nan") for it in items],
            dtype=torch.float64,
        ),
        "split": [it["split"] for it in items],
        "truth": read_truth(cohort_csv) if cohort_csv else {},
        "encoder_bundle": str(encoder_bundle),
        "encoder_config": cfg,
        "inputs_key": key,
    }
    part_file = Path(encoder_bundle) / "models" / "latent_partition.json"
    if part_file.exists():
        part = json.loads(part_file.read_text())
        if part.get("partition") and part.get("volume"):
            traj["partition"] = part["partition"]
            traj["vol_scale"] = {"mean": float(part["volume"]["mean"]), "std": float(part["volume"]["std"])}
    out_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_p.with_suffix(".tmp")
    torch.save(traj, tmp)
    tmp.replace(out_p)
    logger.info("encoded %d scans of %d subjects -> %s", len(items), len(set(traj["subject_id"])), out_p)
    return str(out_p)
