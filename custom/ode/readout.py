"""Reading tumour log-volume out of a (standardised) latent vector: an affine map ln V = w . z + b.

Two sources, one form:

* a declared volume coordinate (``partition["vol"] = [j]`` with ``vol_scale = {mean: m, std: s}``):
  ln V = m + s * z_j. On the ODE's standardised latents z'_j = (z_j - mu_j) / sd_j this is
  ln V = (m + s mu_j) + (s sd_j) z'_j, i.e. w = s sd_j e_j, b = m + s mu_j;
* no declared coordinate (plain VAE): a ridge-regularised linear probe fit on training latents to the
  measured log-volumes (``factors[:, "log_volume"]``), as in the "linear probe" protocol of
  Alain & Bengio (2016) / disentanglement evaluations (design §6).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VolumeReadout:
    """ln V = weight . z + bias on standardised latents; ``vol_index`` is the declared coordinate or None."""

    weight: np.ndarray
    bias: float
    vol_index: int | None = None

    def log_volume(self, z):
        """ln V for latents z [..., Z] (numpy or torch)."""
        w = self.weight
        if not isinstance(z, np.ndarray):
            import torch

            w = torch.as_tensor(w, dtype=z.dtype, device=z.device)
        return (z * w).sum(-1) + self.bias

    def z_from_log_volume(self, log_volume):
        """Inverse map to the declared coordinate's value (only with a declared volume coordinate)."""
        if self.vol_index is None:
            raise ValueError("no declared volume coordinate: the probe readout is not invertible")
        return (log_volume - self.bias) / self.weight[self.vol_index]


def readout_from_partition(
    vol_index: int, vol_scale: dict, latent_mean: np.ndarray, latent_std: np.ndarray, z_dim: int
) -> VolumeReadout:
    """Readout of a declared volume coordinate after per-dimension standardisation (see module docstring)."""
    m, s = float(vol_scale["mean"]), float(vol_scale["std"])
    w = np.zeros(z_dim)
    w[vol_index] = s * float(latent_std[vol_index])
    return VolumeReadout(weight=w, bias=m + s * float(latent_mean[vol_index]), vol_index=vol_index)


def fit_volume_probe(z: np.ndarray, log_volume: np.ndarray, ridge: float = 1e-3) -> VolumeReadout:
    """Ridge regression ln V ~ w . z + b on the rows with finite targets.

    Closed form w = (Zc^T Zc + ridge * n I)^{-1} Zc^T yc on centred data, b = mean(y) - w . mean(z).
    """
    keep = np.isfinite(log_volume) & np.isfinite(z).all(axis=1)
    zk, yk = z[keep].astype(float), log_volume[keep].astype(float)
    if zk.shape[0] < 2:
        raise ValueError("fit_volume_probe needs at least 2 scans with a measured log_volume")
    zm, ym = zk.mean(0), yk.mean()
    zc, yc = zk - zm, yk - ym
    n, d = zc.shape
    w = np.linalg.solve(zc.T @ zc + ridge * n * np.eye(d), zc.T @ yc)
    return VolumeReadout(weight=w, bias=float(ym - w @ zm), vol_index=None)
