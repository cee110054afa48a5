"""One-tensor view of the hybrid forecaster, for MONAI's bundle tools (``verify_net_in_out``, ``ckpt_export``) and
for serving.

Packed input x [B, C] of one subject per row, with k observed scans, Z latent coordinates and m target times,
C = k (Z + 3) + m::

    x = [ mu_1 .. mu_k  (k*Z: the encoder's posterior means, raw),
          y_1 .. y_k    (measured ln V in mL; any value where the flag is 0),
          s_1 .. s_k    (1 where y_i is a segmentation-measured ln V, 0 where only the image is known),
          t_1 .. t_k    (scan times in years),
          T_1 .. T_m ]  (target times in years)

Output [B, m]: the forecast mean ln V at T_1..T_m (the predictive mean of
:class:`~custom.ode.hybrid.HybridGompertzForecaster`; flags are thresholded at 0.5). Latents are standardised
with the training ``latent_mean`` / ``latent_std`` stored in the forecaster's buffers, so the packed network
takes the encoder's output as it is.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from custom.ode.hybrid import HybridGompertzForecaster, build_from_config

__all__ = ["PackedForecastNet", "packed_size", "pack_inputs", "build_packed", "packed_data_format"]


def packed_size(z_dim: int, n_observed: int, n_targets: int) -> int:
    """C = k (Z + 3) + m."""
    return int(n_observed) * (int(z_dim) + 3) + int(n_targets)


def pack_inputs(
    mu: torch.Tensor, log_v: torch.Tensor, measured: torch.Tensor, t_obs: torch.Tensor, t_target: torch.Tensor
) -> torch.Tensor:
    """Pack mu [B, k, Z], log_v [B, k] (NaN allowed where not measured), measured [B, k], t_obs [B, k] and
    t_target [B, m] into x [B, k (Z + 3) + m] (layout in the module docstring)."""
    b = mu.shape[0]
    flags = measured.to(mu.dtype)
    y = torch.where(measured, torch.nan_to_num(log_v.to(mu.dtype)), torch.zeros_like(flags))
    return torch.cat([mu.reshape(b, -1), y, flags, t_obs.to(mu.dtype), t_target.to(mu.dtype)], 1)


class PackedForecastNet(nn.Module):
    """``forecaster`` behind a one-tensor interface; see the module docstring for the layout.

    Args:
        forecaster: the trained hybrid forecaster (its ``state_dict`` is this module's, prefixed ``forecaster.``
            only in memory: :meth:`load_state_dict` and :meth:`state_dict` use the forecaster's own keys, so
            ``models/model.pt`` of training loads as it is).
        n_observed: k, observed scans per row.
        n_targets: m, target times per row.

    Example:
        >>> net = PackedForecastNet(HybridGompertzForecaster(z_dim=3, vol_index=0), n_observed=2, n_targets=1)
        >>> net(torch.zeros(4, packed_size(3, 2, 1))).shape
        torch.Size([4, 1])
    """

    def __init__(self, forecaster: HybridGompertzForecaster, n_observed: int = 2, n_targets: int = 1) -> None:
        super().__init__()
        self.forecaster = forecaster
        self.n_observed, self.n_targets = int(n_observed), int(n_targets)
        self.z_dim = int(forecaster.z_dim)
        self.in_channels = packed_size(self.z_dim, self.n_observed, self.n_targets)

    def unpack(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x [B, C] -> standardised z [B, k, Z], y [B, k], measured [B, k] (bool), t_obs [B, k], t_target [B, m]."""
        k, z = self.n_observed, self.z_dim
        f = self.forecaster
        mu = x[:, : k * z].reshape(-1, k, z)
        y, flags, t_obs = (x[:, k * z + i * k : k * z + (i + 1) * k] for i in range(3))
        t_target = x[:, k * (z + 3) :]
        return (mu - f.latent_mean) / f.latent_std, y, flags > 0.5, t_obs, t_target

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecast mean ln V [B, m] of the packed rows x [B, k (Z + 3) + m]."""
        if not torch.jit.is_tracing() and (x.dim() != 2 or x.shape[1] != self.in_channels):
            raise ValueError(
                f"PackedForecastNet expects [B, {self.in_channels}] (k={self.n_observed} scans, z_dim {self.z_dim}, "
                f"{self.n_targets} target times), got {list(x.shape)}"
            )
        z, y, measured, t_obs, t_target = self.unpack(x)
        return self.forecaster(z, y, measured, t_obs, t_target)

    # the weights file of training is the forecaster's state_dict: keep its keys
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        return self.forecaster.state_dict(*args, **kwargs)

    def load_state_dict(self, state_dict: Any, strict: bool = True, assign: bool = False):  # type: ignore[override]
        return self.forecaster.load_state_dict(state_dict, strict=strict, assign=assign)


def build_packed(model_dir: str, n_observed: int = 2, n_targets: int = 1) -> PackedForecastNet:
    """The packed network of the forecaster recorded in ``<model_dir>/model_config.json`` (weights not loaded)."""
    path = Path(model_dir) / "model_config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: train the latent_ode bundle first (training writes it)")
    return PackedForecastNet(build_from_config(json.loads(path.read_text())), n_observed, n_targets)


def packed_data_format(z_dim: int, n_observed: int, n_targets: int) -> dict[str, Any]:
    """``network_data_format`` of metadata.json for the packed network: input ``image`` [B, C], output ``pred``
    [B, m] (the key names MONAI's ``verify_net_in_out`` reads), with the layout as ``channel_def`` ranges."""
    k, z, m = int(n_observed), int(z_dim), int(n_targets)
    ranges = {
        f"0-{k * z - 1}": f"encoder posterior means of the {k} observed scans (scan-major, z_dim {z})",
        f"{k * z}-{k * z + k - 1}": "measured ln V (mL) of each observed scan (any value where its flag is 0)",
        f"{k * z + k}-{k * z + 2 * k - 1}": "1 where the scan's ln V is segmentation-measured, 0 for images only",
        f"{k * z + 2 * k}-{k * (z + 3) - 1}": "observed scan times (years)",
        f"{k * (z + 3)}-{k * (z + 3) + m - 1}": "target times (years)",
    }
    return {
        "inputs": {
            "image": {
                "type": "series",
                "format": "packed",
                "num_channels": packed_size(z, k, m),
                "spatial_shape": [],
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": False,
                "channel_def": ranges,
            }
        },
        "outputs": {
            "pred": {
                "type": "series",
                "format": "log_volume",
                "num_channels": m,
                "spatial_shape": [],
                "dtype": "float32",
                "value_range": [],
                "is_patch_data": False,
                "channel_def": {f"0-{m - 1}": "forecast mean ln V (mL) at the target times"},
            }
        },
    }
