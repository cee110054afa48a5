"""Per-subject trajectories for the hybrid forecaster: a torch Dataset over a trajectories file and a padding collate.

:func:`load_subject_data` reads the encoder stage's trajectories file (contract in :mod:`custom.ode.data`), fits
the latent standardisation and the ln V read-out on the training scans (:func:`custom.ode.data.fit_latent_space`),
takes each scan's segmentation-measured ln V from ``cohort.csv`` (``ln volume_ml`` by ``case_id``) when given, else
from the trajectories' ``log_volume`` factor, and estimates the read-out noise sd on the training scans,

    sigma_read = sqrt( mean_{training scans} (w . z + c - ln V_measured)^2 ).

Items of :class:`SubjectTrajectories` are one subject each (time-sorted): ``z [T, Z]`` standardised encoder means,
``t [T]`` years since the subject's first scan, ``logv_measured [T]`` (nan without a segmentation),
``logv_segmented [T]`` (the segmentation network's ln V from ``seg_volumes_file``; nan without one), ``subject_id``
and the true Gompertz parameters when the cohort is synthetic (nan otherwise). :func:`pad_collate` pads a list of
them to the longest with ``mask`` (True = real scan).
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from custom.ode.data import LatentSpace, fit_latent_space, load_trajectories, measured_log_volume, scan_times

logger = logging.getLogger(__name__)

_SPLIT_NAMES = {"training": "train", "train": "train", "validation": "validation", "test": "test"}


def _cohort_log_volumes(cohort_csv: str | Path, case_ids: Sequence[str]) -> np.ndarray:
    """ln(volume_ml) of each case from ``cohort.csv`` (nan for cases it does not list or with volume <= 0)."""
    with Path(cohort_csv).open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"case_id", "volume_ml"} <= set(reader.fieldnames or []):
            raise ValueError(f"{cohort_csv} has no case_id and volume_ml columns: it is not a cohort table")
        vol = {
            row["case_id"]: float(row["volume_ml"]) if row["volume_ml"] not in ("", "nan") else math.nan
            for row in reader
        }
    return np.array([math.log(vol[c]) if vol.get(c, math.nan) > 0 else math.nan for c in case_ids])


@dataclass
class SubjectData:
    """Everything the bundle needs from one trajectories file (see the module docstring)."""

    traj: dict
    space: LatentSpace
    log_volume: np.ndarray  # [N scans] measured ln V (nan unknown)
    readout_sd: float
    z_dim: int
    vol_index: int | None
    log_v0_mean: float
    source: str = ""
    subjects_by_split: dict[str, list[str]] = field(default_factory=dict)
    seg_log_volume: np.ndarray | None = None  # [N scans] ln V of the segmentation network (seg_volumes_file)
    seg_sd: float | None = None  # its noise sd sigma_seg in ln V

    def dataset(self, split: str) -> "SubjectTrajectories":
        return SubjectTrajectories(self, split)

    def network_space(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`custom.ode.hybrid.HybridGompertzForecaster.set_latent_space`."""
        return {
            "mean": self.space.mean,
            "std": self.space.std,
            "readout_weight": self.space.readout.weight,
            "readout_bias": float(self.space.readout.bias),
            "readout_sd": self.readout_sd,
            "log_v0_mean": self.log_v0_mean,
        }


def load_subject_data(
    trajectories: str | Path | dict,
    cohort_csv: str | Path | None = None,
    seg_volumes_file: str | Path | None = None,
    seg_volumes_sd: float | None = None,
) -> SubjectData:
    """Read the trajectories (a path or an already loaded dict) and the measured volumes; see the module docstring.

    ``seg_volumes_file`` (the tumour_seg bundle's ``seg_volumes.csv``): every scan's segmented ln V, used where a scan
    is treated as images-only (:mod:`custom.ode.seg_volumes`), with noise sd ``seg_volumes_sd`` (None: estimated on
    the validation scans). None keeps the latent read-out for those scans."""
    source = str(trajectories) if not isinstance(trajectories, dict) else "<trajectories dict>"
    traj = load_trajectories(trajectories) if not isinstance(trajectories, dict) else trajectories
    split = np.asarray(traj["split"])
    if not (split == "train").any():
        raise ValueError(f"{source} has no training scans (split 'train'): nothing to fit the forecaster on")
    if cohort_csv and Path(cohort_csv).exists():
        if "case_id" not in traj:
            raise ValueError(f"{source} has no case_id per scan, so cohort volumes from {cohort_csv} cannot be matched")
        logv = _cohort_log_volumes(cohort_csv, list(traj["case_id"]))
    else:
        logv = measured_log_volume(traj)
    space = fit_latent_space(traj)
    mu = traj["mu"].detach().cpu().numpy() if isinstance(traj["mu"], torch.Tensor) else np.asarray(traj["mu"])
    z = space.standardise(mu.astype(float))
    read = space.readout.log_volume(z)
    tr = (split == "train") & np.isfinite(logv)
    if tr.sum() < 2:
        raise ValueError(
            f"{source}: fewer than 2 training scans have a measured volume; the read-out noise cannot be estimated"
        )
    readout_sd = float(np.sqrt(np.mean((read[tr] - logv[tr]) ** 2)))
    sid = np.asarray(traj["subject_id"])
    times = scan_times(traj)
    firsts = []
    for s in sorted(set(sid[split == "train"].tolist())):
        rows = np.flatnonzero((sid == s) & np.isfinite(logv))
        if rows.size:
            firsts.append(logv[rows[np.argmin(times[rows])]])
    by_split = {name: sorted(set(sid[split == name].tolist())) for name in ("train", "validation", "test")}
    from custom.ode.data import volume_index

    seg_logv, seg_sd = None, None
    if seg_volumes_file:
        from custom.ode.seg_volumes import read_seg_log_volumes, seg_noise_sd

        if "case_id" not in traj:
            raise ValueError(f"{source} has no case_id per scan, so {seg_volumes_file} cannot be matched to its scans")
        seg_logv = read_seg_log_volumes(seg_volumes_file, [str(c) for c in traj["case_id"]], [str(s) for s in sid])
        empty = int((~np.isfinite(seg_logv)).sum())
        if empty:
            logger.warning(
                "%d scan(s) have an empty predicted tumour in %s: those keep the latent read-out",
                empty,
                seg_volumes_file,
            )
        seg_sd = float(seg_volumes_sd) if seg_volumes_sd is not None else seg_noise_sd(seg_logv, logv, split, source)
        logger.info("segmented volumes from %s, noise sd %.3f in ln V", seg_volumes_file, seg_sd)
    return SubjectData(
        traj=traj,
        space=space,
        log_volume=logv,
        readout_sd=readout_sd,
        z_dim=int(z.shape[1]),
        vol_index=volume_index(traj),
        log_v0_mean=float(np.mean(firsts)),
        source=source,
        subjects_by_split=by_split,
        seg_log_volume=seg_logv,
        seg_sd=seg_sd,
    )


class SubjectTrajectories(Dataset):
    """One item per subject of ``split`` ("train"/"training", "validation", "test"); see the module docstring."""

    def __init__(self, data: SubjectData, split: str) -> None:
        if split not in _SPLIT_NAMES:
            raise ValueError(f"unknown split {split!r}; use one of {sorted(_SPLIT_NAMES)}")
        self.split = _SPLIT_NAMES[split]
        traj = data.traj
        mu = traj["mu"].detach().cpu().numpy() if isinstance(traj["mu"], torch.Tensor) else np.asarray(traj["mu"])
        z = data.space.standardise(mu.astype(float))
        times = scan_times(traj)
        sid = np.asarray(traj["subject_id"])
        sel = np.asarray(traj["split"]) == self.split
        truth = traj.get("truth") or {}
        self.items: list[dict[str, Any]] = []
        for s in sorted(set(sid[sel].tolist())):
            rows = np.flatnonzero(sel & (sid == s))
            rows = rows[np.argsort(times[rows], kind="stable")]
            tr = truth.get(s, {})
            self.items.append(
                {
                    "subject_id": str(s),
                    "z": torch.as_tensor(z[rows], dtype=torch.float32),
                    "t": torch.as_tensor(times[rows] - times[rows[0]], dtype=torch.float32),
                    "t_first": float(times[rows[0]]),
                    "logv_measured": torch.as_tensor(data.log_volume[rows], dtype=torch.float32),
                    "logv_segmented": torch.as_tensor(
                        data.seg_log_volume[rows] if data.seg_log_volume is not None else np.full(len(rows), np.nan),
                        dtype=torch.float32,
                    ),
                    "case_id": [str(traj["case_id"][i]) for i in rows] if "case_id" in traj else [],
                    "truth": {
                        k: float(tr.get(k, math.nan)) for k in ("V0_ml", "a_per_year", "K_ml")
                    },  # fmt: skip
                    "growth_class": str(tr.get("growth_class", "")),
                }
            )
        if not self.items:
            raise ValueError(f"{data.source} has no subjects in split {self.split!r}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def pad_collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Pad subjects to the longest: z [B, T, Z], t [B, T] (padding repeats the last time), logv_measured [B, T]
    (nan padding), mask [B, T]; lists subject_id, case_id, growth_class; truth {key: [B]}."""
    n = max(len(it["t"]) for it in items)
    b, zd = len(items), items[0]["z"].shape[-1]
    z = torch.zeros(b, n, zd)
    t = torch.zeros(b, n)
    lv = torch.full((b, n), float("nan"))
    lv_seg = torch.full((b, n), float("nan"))
    mask = torch.zeros(b, n, dtype=torch.bool)
    for i, it in enumerate(items):
        k = len(it["t"])
        z[i, :k], t[i, :k], lv[i, :k], mask[i, :k] = it["z"], it["t"], it["logv_measured"], True
        t[i, k:] = it["t"][-1]
        if "logv_segmented" in it:
            lv_seg[i, :k] = it["logv_segmented"]
    return {
        "z": z,
        "t": t,
        "logv_measured": lv,
        "logv_segmented": lv_seg,
        "mask": mask,
        "subject_id": [it["subject_id"] for it in items],
        "case_id": [c for it in items for c in it["case_id"]],
        "growth_class": [it["growth_class"] for it in items],
        "t_first": torch.tensor([it["t_first"] for it in items]),
        "truth": {k: torch.tensor([it["truth"][k] for it in items]) for k in ("V0_ml", "a_per_year", "K_ml")},
    }
