"""Per-subject latent trajectories from an encoded-scan table, padded and masked, and conditioning splits.

Input contract (the encoder stage's trajectories file, a ``torch.save`` dict): per scan ``mu [N, Z]``,
``logvar [N, Z]``, ``subject_id`` (N), ``timepoint [N]``, ``time_years [N]``, ``factors [N, K]`` (nan when
unknown), ``factor_names``, ``split`` (train/validation/test); optional ``truth`` (subject -> V0_ml,
a_per_year, K_ml, growth_class), ``partition`` (e.g. {"vol": [0], ...}) and ``vol_scale`` {mean, std}
with z_vol = (ln V_ml - mean) / std.

Latents are standardised per dimension with the *training* split's mean and standard deviation (floored at
``STD_FLOOR`` so that inactive units do not blow up); every model and baseline works on these standardised
latents, and :class:`~custom.ode.readout.VolumeReadout` maps them to ln V.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from custom.ode.readout import VolumeReadout, fit_volume_probe, readout_from_partition

STD_FLOOR: float = 1e-3


def load_trajectories(path: str | Path) -> dict:
    """Load a trajectories file written with ``torch.save`` (CPU tensors / arrays / lists)."""
    return torch.load(str(path), map_location="cpu", weights_only=False)


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def scan_times(traj: dict) -> np.ndarray:
    """Scan times in years; unknown ``time_years`` (nan) falls back to the integer timepoint (with a warning)."""
    t = _np(traj["time_years"]).astype(float) if "time_years" in traj else np.full(len(traj["subject_id"]), np.nan)
    bad = ~np.isfinite(t)
    if bad.any():
        warnings.warn(f"{int(bad.sum())} scans have no time_years; using their timepoint index as years")
        t[bad] = _np(traj["timepoint"]).astype(float)[bad]
    return t


def measured_log_volume(traj: dict) -> np.ndarray:
    """The ``log_volume`` factor per scan (ln mL, from the segmentation); all-nan when the factor is absent."""
    names = list(traj.get("factor_names", []))
    if "log_volume" not in names or "factors" not in traj:
        return np.full(len(traj["subject_id"]), np.nan)
    return _np(traj["factors"]).astype(float)[:, names.index("log_volume")]


def volume_index(traj: dict) -> int | None:
    """The declared volume coordinate ``partition["vol"][0]``, or None for a plain VAE."""
    part = traj.get("partition") or {}
    vol = part.get("vol")
    if not vol:
        return None
    if "vol_scale" not in traj:
        raise ValueError("partition declares a volume coordinate but the trajectories have no vol_scale")
    return int(vol[0])


@dataclass
class LatentSpace:
    """Per-dimension standardisation (train statistics) plus the log-volume readout of standardised latents."""

    mean: np.ndarray
    std: np.ndarray
    readout: VolumeReadout

    def standardise(self, mu: np.ndarray) -> np.ndarray:
        return (mu - self.mean) / self.std

    def unstandardise(self, z: np.ndarray) -> np.ndarray:
        return z * self.std + self.mean


def fit_latent_space(traj: dict, train_split: str = "train") -> LatentSpace:
    """Standardisation statistics and volume readout from the training scans (never from held-out ones)."""
    mu = _np(traj["mu"]).astype(float)
    split = np.asarray(traj["split"])
    tr = split == train_split
    if not tr.any():
        raise ValueError(f"no scans in split {train_split!r}")
    mean = mu[tr].mean(0)
    std = np.maximum(mu[tr].std(0), STD_FLOOR)
    vi = volume_index(traj)
    if vi is not None:
        readout = readout_from_partition(vi, traj["vol_scale"], mean, std, mu.shape[1])
    else:
        readout = fit_volume_probe((mu[tr] - mean) / std, measured_log_volume(traj)[tr])
    return LatentSpace(mean=mean, std=std, readout=readout)


@dataclass
class Trajectories:
    """Subjects of one split, time-sorted and padded: z [S, T, Z], t [S, T], mask [S, T] (True = real scan)."""

    subject_ids: list[str]
    z: torch.Tensor
    t: torch.Tensor
    mask: torch.Tensor
    log_volume: torch.Tensor  # measured ln V [S, T]; nan when unknown or padding
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # a_per_year, K_ml, V0_ml [S] (nan unknown)
    growth_class: list[str] = field(default_factory=list)


def build_trajectories(traj: dict, split: str, space: LatentSpace, dtype=torch.float32) -> Trajectories:
    """Group the scans of ``split`` by subject, sort each by time, standardise and pad to the longest."""
    split_arr = np.asarray(traj["split"])
    sid = np.asarray(traj["subject_id"])
    mu = space.standardise(_np(traj["mu"]).astype(float))
    times = scan_times(traj)
    logv = measured_log_volume(traj)
    sel = np.flatnonzero(split_arr == split)
    subjects = sorted(set(sid[sel].tolist()))
    rows = [sel[sid[sel] == s] for s in subjects]
    rows = [r[np.argsort(times[r], kind="stable")] for r in rows]
    s_n, t_n, z_dim = len(subjects), max((len(r) for r in rows), default=0), mu.shape[1]
    z = np.zeros((s_n, t_n, z_dim))
    t = np.zeros((s_n, t_n))
    m = np.zeros((s_n, t_n), dtype=bool)
    lv = np.full((s_n, t_n), np.nan)
    for i, r in enumerate(rows):
        n = len(r)
        z[i, :n], t[i, :n], m[i, :n], lv[i, :n] = mu[r], times[r], True, logv[r]
    truth_src = traj.get("truth") or {}
    truth = {
        key: np.array([float(truth_src.get(s, {}).get(key, np.nan)) for s in subjects])
        for key in ("a_per_year", "K_ml", "V0_ml")
    }
    gclass = [str(truth_src.get(s, {}).get("growth_class", "")) for s in subjects]
    return Trajectories(
        subject_ids=subjects,
        z=torch.as_tensor(z, dtype=dtype),
        t=torch.as_tensor(t, dtype=dtype),
        mask=torch.as_tensor(m),
        log_volume=torch.as_tensor(lv, dtype=dtype),
        truth=truth,
        growth_class=gclass,
    )


@dataclass
class ConditionedBatch:
    """First-k observed scans (conditioning) and the remaining scans (targets) of each kept subject."""

    index: torch.Tensor  # [B] rows of the source Trajectories
    z_obs: torch.Tensor  # [B, k, Z]
    t_obs: torch.Tensor  # [B, k]
    obs_mask: torch.Tensor  # [B, k]
    z_tgt: torch.Tensor  # [B, m, Z]
    t_tgt: torch.Tensor  # [B, m]
    tgt_mask: torch.Tensor  # [B, m]
    logv_tgt: torch.Tensor  # [B, m] measured ln V of the targets (nan unknown)
    logv_obs: torch.Tensor  # [B, k]


def condition_on_first_k(tr: Trajectories, k: int) -> ConditionedBatch:
    """Split every subject with at least k+1 scans into its first k scans and its later scans.

    Subjects with <= k scans have nothing to forecast and are left out (``index`` says which rows are kept).
    Targets are padded to the longest remainder with ``tgt_mask``; padded times repeat the last real one.
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    n = tr.mask.sum(1)
    keep = torch.nonzero(n >= k + 1).flatten()
    if keep.numel() == 0:
        raise ValueError(f"no subject has more than k={k} scans")
    z, t, m, lv = tr.z[keep], tr.t[keep], tr.mask[keep], tr.log_volume[keep]
    tgt_mask = m[:, k:]
    width = int(tgt_mask.sum(1).max())
    tgt_mask = tgt_mask[:, :width]
    t_tgt = t[:, k : k + width].clone()
    last_real = t.gather(1, (n[keep] - 1).unsqueeze(1)).expand_as(t_tgt)
    t_tgt = torch.where(tgt_mask, t_tgt, last_real)
    return ConditionedBatch(
        index=keep,
        z_obs=z[:, :k],
        t_obs=t[:, :k],
        obs_mask=m[:, :k],
        z_tgt=z[:, k : k + width],
        t_tgt=t_tgt,
        tgt_mask=tgt_mask,
        logv_tgt=torch.where(tgt_mask, lv[:, k : k + width], torch.full_like(t_tgt, float("nan"))),
        logv_obs=lv[:, :k],
    )
