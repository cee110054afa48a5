"""Masked PSNR / SSIM / MSE on tiny z-scored volumes against hand computations."""

from __future__ import annotations

import json
import math

import pytest
import torch
from monai.metrics import SSIMMetric

from custom.constants import MODALITIES
from custom.metrics import default_brain_mask, masked_psnr_ssim

SHAPE = (2, 4, 16, 16, 16)


def _brain(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth z-scored-looking volumes inside a central cube, exactly 0 outside."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=g)
    x = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1) * 3.0 + torch.arange(4.0).view(1, 4, 1, 1, 1)
    mask = torch.zeros(SHAPE[0], 1, *SHAPE[2:], dtype=torch.bool)
    mask[:, :, 3:13, 2:14, 3:13] = True
    return torch.where(mask, x, torch.zeros(())), mask


def test_psnr_and_mse_match_hand_computation():
    x, mask = _brain()
    delta = torch.tensor([0.1, 0.2, 0.3, 0.4]).view(1, 4, 1, 1, 1)
    x_hat = torch.where(mask, x + delta, x - 5.0)  # outside-mask error must be ignored
    out = masked_psnr_ssim(x, x_hat, mask)
    for c, m in enumerate(MODALITIES):
        inside = x[:, c][mask[:, 0]]
        rng = float(inside.max() - inside.min())
        d = float(delta.flatten()[c])
        assert out[f"mse_{m}"] == pytest.approx(d**2, rel=1e-5)
        assert out[f"psnr_{m}"] == pytest.approx(10 * math.log10(rng**2 / d**2), rel=1e-5)
    assert out["mse"] == pytest.approx((0.01 + 0.04 + 0.09 + 0.16) / 4, rel=1e-5)
    assert out["psnr_mean"] == pytest.approx(sum(out[f"psnr_{m}"] for m in MODALITIES) / 4)
    json.dumps(out)


def test_ssim_identity_is_one_and_decreases_with_noise():
    x, mask = _brain()
    same = masked_psnr_ssim(x, x.clone(), mask)
    assert all(same[f"ssim_{m}"] == pytest.approx(1.0, abs=1e-5) for m in MODALITIES)
    assert same["mse"] == 0.0 and math.isinf(same["psnr_mean"])
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(SHAPE, generator=g)
    scores = [masked_psnr_ssim(x, x + s * noise, mask)["ssim_mean"] for s in (0.1, 0.5, 2.0)]
    assert 1.0 > scores[0] > scores[1] > scores[2]


def test_scale_invariance_data_range_from_data():
    x, mask = _brain()
    x_hat = x + 0.3 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(2))
    a = masked_psnr_ssim(x, x_hat, mask)
    b = masked_psnr_ssim(10 * x, 10 * x_hat, mask)
    for m in MODALITIES:
        assert b[f"psnr_{m}"] == pytest.approx(a[f"psnr_{m}"], rel=1e-5)
        assert b[f"ssim_{m}"] == pytest.approx(a[f"ssim_{m}"], rel=1e-4)
        assert b[f"mse_{m}"] == pytest.approx(100 * a[f"mse_{m}"], rel=1e-5)


def test_full_mask_ssim_equals_monai_ssim_metric():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(1, 1, 16, 16, 16, generator=g)
    x_hat = x + 0.5 * torch.randn(1, 1, 16, 16, 16, generator=g)
    rng = float(x.max() - x.min())
    expected = float(SSIMMetric(spatial_dims=3, data_range=rng)(x_hat, x).mean())
    out = masked_psnr_ssim(x, x_hat, torch.ones(1, 1, 16, 16, 16, dtype=torch.bool), modalities=("t1c",))
    assert out["ssim_t1c"] == pytest.approx(expected, rel=1e-5)


def test_default_mask_is_nonzero_voxels():
    x, mask = _brain()
    torch.testing.assert_close(default_brain_mask(x), mask)
    x_hat = x + 0.2
    assert masked_psnr_ssim(x, x_hat) == pytest.approx(masked_psnr_ssim(x, x_hat, mask))


def test_rejects_bad_shapes():
    x, mask = _brain()
    with pytest.raises(ValueError):
        masked_psnr_ssim(x, x[:, :3], mask)
    with pytest.raises(ValueError):
        masked_psnr_ssim(x[:, :3], x[:, :3], mask)
