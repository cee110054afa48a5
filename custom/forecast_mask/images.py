"""Forecast images anchored on the last observed scan: only the decoded change is the model's.

With D the encoder bundle's decoder, z_last the forecast latent at the last observed scan's time (elapsed time 0:
the ODE's start, the observed scan's own non-volume coordinates) and z_t the forecast latent at time t,

    x_t = x_last + (D(z_t) - D(z_last)),

so the forecast keeps every detail of the observed scan that the decoder cannot draw, and a forecast without change
(z_t = z_last) reproduces x_last exactly. This is the copy-the-last-scan baseline plus a learned residual (the
baseline to beat for image forecasts, as in Temporal Flow Matching, 2025).

The change is computed in the model's grid (z-scored channels, ``custom.data.transforms``); :func:`change_to_input`
maps it to the scan's own geometry by inverting the preprocessing's spatial transforms and rescales each channel by
that scan's brain standard deviation (the z-score's scale, x = mean + sd z), so x_t can be written beside the input.
"""

from __future__ import annotations

import copy

import numpy as np
import torch


def anchored_image(x_last: torch.Tensor, decoded_t: torch.Tensor, decoded_last: torch.Tensor) -> torch.Tensor:
    """x_last + (decoded_t - decoded_last) (broadcast over a leading time axis of ``decoded_t``)."""
    return x_last + (decoded_t - decoded_last)


def brain_sd(image: np.ndarray) -> np.ndarray:
    """Per-channel standard deviation over the non-zero ("brain") voxels of ``image`` [C, ...] (the scale that
    ``NormalizeIntensity(nonzero=True, channel_wise=True)`` divides by; 1 for an empty channel)."""
    out = []
    for ch in np.asarray(image):
        v = ch[ch != 0]
        out.append(float(v.std()) if v.size and v.std() > 0 else 1.0)
    return np.asarray(out)


def change_to_input(change: torch.Tensor, reference, transform, scale: np.ndarray) -> torch.Tensor:
    """Map a change [C, *model grid] to the input geometry of ``reference`` (the preprocessed last scan, a MetaTensor
    whose ``applied_operations`` record the preprocessing) and multiply channel c by ``scale[c]``."""
    from monai.data import MetaTensor

    mt = MetaTensor(
        change.float(),
        meta=copy.deepcopy(dict(reference.meta)),
        applied_operations=copy.deepcopy(list(reference.applied_operations)),
    )
    inv = transform.inverse({"image": mt})["image"]
    s = torch.as_tensor(scale, dtype=inv.dtype).reshape(-1, *([1] * (inv.ndim - 1)))
    return inv * s
