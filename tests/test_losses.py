"""Loss terms against hand-worked values and independent NumPy computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from custom.constants import MODALITIES
from custom.losses import (
    DIPVAELoss,
    PartitionSupervision,
    VAELoss,
    capacity_term,
    dip_covariance,
    dip_penalty,
    free_bits_kl,
    gather_for_dip,
    gaussian_reconstruction,
    kl_per_dim,
)


# ---------------------------------------------------------------- KL
def test_kl_of_standard_normal_is_zero() -> None:
    kl = kl_per_dim(torch.zeros(3, 5), torch.zeros(3, 5))
    assert kl.shape == (3, 5)
    assert torch.equal(kl, torch.zeros(3, 5))


def test_kl_hand_case() -> None:
    # mu = 1, var = e (logvar 1): 0.5 * (1 + e - 1 - 1) = (e - 1) / 2
    # mu = 0, logvar = -2: 0.5 * (e^-2 + 1) ... = 0.5 * (0 + e^-2 - 1 + 2)
    kl = kl_per_dim(torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, -2.0]]))
    expected = [(math.e - 1) / 2, 0.5 * (math.exp(-2) + 1)]
    assert kl[0].tolist() == pytest.approx(expected, rel=1e-6)


def test_kl_is_fp32_for_bf16_inputs() -> None:
    kl = kl_per_dim(torch.ones(2, 3, dtype=torch.bfloat16), torch.zeros(2, 3, dtype=torch.bfloat16))
    assert kl.dtype == torch.float32
    assert torch.allclose(kl, torch.full((2, 3), 0.5))


KL_2X3 = torch.tensor([[0.05, 0.3, 1.0], [0.15, 0.0, 2.0]])


def test_free_bits_batch_mean_hand() -> None:
    # column means 0.10, 0.15, 1.50; floor 0.2 -> 0.2 + 0.2 + 1.5
    assert free_bits_kl(KL_2X3, 0.2, "batch_mean").item() == pytest.approx(1.9)


def test_free_bits_per_sample_hand() -> None:
    # row 1: 0.2 + 0.3 + 1.0 = 1.5; row 2: 0.2 + 0.2 + 2.0 = 2.4; mean 1.95
    assert free_bits_kl(KL_2X3, 0.2, "per_sample").item() == pytest.approx(1.95)


def test_free_bits_none_and_zero_floor() -> None:
    # plain: (1.35 + 2.15) / 2 = 1.75
    assert free_bits_kl(KL_2X3, 0.2, "none").item() == pytest.approx(1.75)
    assert free_bits_kl(KL_2X3, 0.0, "batch_mean").item() == pytest.approx(1.75)
    with pytest.raises(ValueError):
        free_bits_kl(KL_2X3, 0.2, "bogus")


def test_free_bits_clamped_dims_get_no_gradient() -> None:
    kl = KL_2X3.clone().requires_grad_()
    free_bits_kl(kl, 0.2, "batch_mean").backward()
    # columns 0 and 1 are below the floor (means 0.10, 0.15): no gradient; column 2: d/dKL of mean = 1/2
    assert torch.allclose(kl.grad, torch.tensor([[0.0, 0.0, 0.5], [0.0, 0.0, 0.5]]))


# ---------------------------------------------------------------- reconstruction
def test_recon_sum_and_mean_hand() -> None:
    x = torch.zeros(2, 2, 1, 1, 2)
    x_hat = torch.tensor([[[[[1.0, 1.0]]], [[[2.0, 0.0]]]], [[[[0.0, 0.0]]], [[[0.0, 2.0]]]]])
    # squared errors: sample 0: ch0 [1, 1], ch1 [4, 0]; sample 1: ch0 [0, 0], ch1 [0, 4]
    total, per = gaussian_reconstruction(x, x_hat, "sum", sigma=1.0)
    # per channel, mean over batch of the sum / 2: ch0 (2 + 0)/2/2 = 0.5; ch1 (4 + 4)/2/2 = 2
    assert per.tolist() == pytest.approx([0.5, 2.0])
    assert total.item() == pytest.approx(2.5)
    total, per = gaussian_reconstruction(x, x_hat, "mean")
    # MSE over 8 values: (1 + 1 + 4 + 0 + 0 + 0 + 0 + 4) / 8; per channel ch0 2/4, ch1 8/4
    assert total.item() == pytest.approx(10 / 8)
    assert per.tolist() == pytest.approx([0.5, 2.0])
    total_s2, _ = gaussian_reconstruction(x, x_hat, "sum", sigma=2.0)
    assert total_s2.item() == pytest.approx(2.5 / 4)


def test_recon_mean_vs_sum_scaling_relation() -> None:
    g = torch.Generator().manual_seed(0)
    x, x_hat = torch.randn(3, 4, 4, 5, 6, generator=g), torch.randn(3, 4, 4, 5, 6, generator=g)
    sigma = 0.7
    s, _ = gaussian_reconstruction(x, x_hat, "sum", sigma=sigma)
    m, _ = gaussian_reconstruction(x, x_hat, "mean")
    n_per_sample = 4 * 4 * 5 * 6
    assert s.item() == pytest.approx(m.item() * n_per_sample / (2 * sigma**2), rel=1e-5)
    assert m.item() == pytest.approx(float(((x_hat - x) ** 2).mean()), rel=1e-6)


def test_recon_mask() -> None:
    x = torch.zeros(1, 2, 1, 1, 2)
    x_hat = torch.tensor([[[[[1.0, 3.0]]], [[[2.0, 5.0]]]]])
    mask = torch.tensor([[[[[1.0, 0.0]]]]])  # keep only the first voxel, broadcast over channels
    total, per = gaussian_reconstruction(x, x_hat, "sum", mask=mask)
    assert per.tolist() == pytest.approx([0.5, 2.0])
    total, per = gaussian_reconstruction(x, x_hat, "mean", mask=mask)
    assert per.tolist() == pytest.approx([1.0, 4.0])
    assert total.item() == pytest.approx(2.5)


# ---------------------------------------------------------------- capacity and ELBO
def test_capacity_term() -> None:
    assert capacity_term(torch.tensor(3.0), 2.0, 5.0).item() == pytest.approx(4.0)
    assert capacity_term(torch.tensor(7.0), 2.0, 5.0).item() == pytest.approx(4.0)


def _elbo_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 2, 2, 2, generator=g)
    x_hat = torch.randn(2, 4, 2, 2, 2, generator=g)
    mu = torch.randn(2, 3, generator=g)
    logvar = 0.5 * torch.randn(2, 3, generator=g)
    return x, x_hat, mu, logvar


def _np_kl(mu: torch.Tensor, logvar: torch.Tensor) -> np.ndarray:
    m, lv = mu.double().numpy(), logvar.double().numpy()
    return 0.5 * (m**2 + np.exp(lv) - 1 - lv)


def test_vae_loss_terms() -> None:
    x, x_hat, mu, logvar = _elbo_inputs()
    out = VAELoss(recon_reduction="sum", free_bits=0.5, free_bits_mode="batch_mean")(x, x_hat, mu, logvar, beta=0.3)
    sq = (x_hat.double() - x.double()).numpy() ** 2
    recon = sq.sum(axis=(1, 2, 3, 4)).mean() / 2
    kl = _np_kl(mu, logvar)
    kl_fb = np.maximum(kl.mean(0), 0.5).sum()
    assert out["recon"].item() == pytest.approx(recon, rel=1e-5)
    for c, name in enumerate(MODALITIES):
        assert out[f"recon_{name}"].item() == pytest.approx(sq[:, c].sum(axis=(1, 2, 3)).mean() / 2, rel=1e-5)
    assert out["kl_raw"].item() == pytest.approx(kl.sum(1).mean(), rel=1e-5)
    assert out["kl_constrained"].item() == pytest.approx(kl_fb, rel=1e-5)
    assert out["loss"].item() == pytest.approx(recon + 0.3 * kl_fb, rel=1e-5)
    assert out["beta"].item() == pytest.approx(0.3)
    assert out["expected_kl_floor"].item() == pytest.approx(0.5 * 3)
    assert all(v.dtype == torch.float32 and v.ndim == 0 for v in out.values())


def test_vae_loss_without_free_bits_and_mean_reduction() -> None:
    x, x_hat, mu, logvar = _elbo_inputs()
    out = VAELoss(recon_reduction="mean")(x, x_hat, mu, logvar, 2.0)
    kl = _np_kl(mu, logvar).sum(1).mean()
    recon = ((x_hat.double() - x.double()).numpy() ** 2).mean()
    assert out["kl_constrained"].item() == pytest.approx(kl, rel=1e-5)
    assert out["expected_kl_floor"].item() == 0.0
    assert out["loss"].item() == pytest.approx(recon + 2.0 * kl, rel=1e-5)


def test_vae_loss_capacity_mode_ignores_beta() -> None:
    x, x_hat, mu, logvar = _elbo_inputs()
    loss = VAELoss(capacity_gamma=10.0, capacity_max=1.0)
    out = loss(x, x_hat, mu, logvar, beta=123.0, capacity=5.0)  # capacity clipped to capacity_max = 1
    kl = _np_kl(mu, logvar).sum(1).mean()
    assert out["capacity"].item() == 1.0
    assert out["loss"].item() == pytest.approx(out["recon"].item() + 10.0 * abs(kl - 1.0), rel=1e-5)


def test_vae_loss_fp32_under_autocast() -> None:
    x, x_hat, mu, logvar = _elbo_inputs()
    ref = VAELoss()(x, x_hat, mu, logvar, 1.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = VAELoss()(x, x_hat.bfloat16(), mu, logvar, 1.0)
    assert out["loss"].dtype == torch.float32
    assert out["kl_raw"].item() == pytest.approx(ref["kl_raw"].item(), rel=1e-6)


# ---------------------------------------------------------------- DIP-VAE-II
def _np_dip(mu: np.ndarray, logvar: np.ndarray, lod: float, ld: float) -> tuple[float, float, float]:
    cov = np.cov(mu, rowvar=False, bias=True) + np.diag(np.exp(logvar).mean(0))
    off = sum(cov[i, j] ** 2 for i in range(cov.shape[0]) for j in range(cov.shape[0]) if i != j)
    diag = sum((cov[i, i] - 1) ** 2 for i in range(cov.shape[0]))
    return lod * off + ld * diag, off, diag


def test_dip_penalty_matches_numpy() -> None:
    g = torch.Generator().manual_seed(2)
    mu, logvar = torch.randn(16, 6, generator=g) * 0.8 + 0.3, torch.randn(16, 6, generator=g) * 0.3
    pen, off, diag = dip_penalty(mu, logvar, 10.0, 5.0)
    ref = _np_dip(mu.double().numpy(), logvar.double().numpy(), 10.0, 5.0)
    assert [pen.item(), off.item(), diag.item()] == pytest.approx(list(ref), rel=1e-5)
    cov_ref = np.cov(mu.double().numpy(), rowvar=False, bias=True) + np.diag(np.exp(logvar.double().numpy()).mean(0))
    assert np.allclose(dip_covariance(mu, logvar).numpy(), cov_ref, rtol=1e-5, atol=1e-6)


def test_dip_penalty_exempts_pairs_within_the_supervised_set() -> None:
    """Pairs with both coordinates in ``exempt_dims`` leave the off-diagonal sum; every other pair stays."""
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(20, 5, generator=g), torch.randn(20, 5, generator=g) * 0.2
    exempt = {0, 2, 3}
    cov = np.cov(mu.double().numpy(), rowvar=False, bias=True) + np.diag(np.exp(logvar.double().numpy()).mean(0))
    off = sum(cov[i, j] ** 2 for i in range(5) for j in range(5) if i != j and not (i in exempt and j in exempt))
    diag = sum((cov[i, i] - 1) ** 2 for i in range(5))
    pen, off_t, diag_t = dip_penalty(mu, logvar, 10.0, 5.0, exempt_dims=sorted(exempt))
    assert [pen.item(), off_t.item(), diag_t.item()] == pytest.approx([10 * off + 5 * diag, off, diag], rel=1e-5)
    full = dip_penalty(mu, logvar, 10.0, 5.0)[1].item()
    assert off_t.item() < full  # the 6 exempt ordered pairs (0,2),(0,3),(2,3) and mirrors are gone


def test_dip_penalty_fp32_under_bf16_autocast() -> None:
    g = torch.Generator().manual_seed(3)
    mu, logvar = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g) * 0.2
    ref = dip_penalty(mu, logvar, 10.0, 5.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = dip_penalty(mu, logvar, 10.0, 5.0)
        cov = dip_covariance(mu, logvar)
    assert cov.dtype == torch.float32
    for a, b in zip(out, ref):
        assert a.dtype == torch.float32
        assert a.item() == b.item()


def test_gather_for_dip_single_process_is_identity() -> None:
    mu, logvar = torch.randn(2, 3), torch.randn(2, 3)
    g_mu, g_lv = gather_for_dip(mu, logvar)
    assert g_mu is mu and g_lv is logvar


def test_dipvae_loss_adds_scaled_penalty() -> None:
    x, x_hat, mu, logvar = _elbo_inputs()
    base = VAELoss()(x, x_hat, mu, logvar, 1.0)
    out = DIPVAELoss(lambda_od=10.0, lambda_d=5.0)(x, x_hat, mu, logvar, 1.0, lambda_scale=0.25)
    pen, off, diag = _np_dip(mu.double().numpy(), logvar.double().numpy(), 10.0, 5.0)
    assert out["cov_penalty"].item() == pytest.approx(pen, rel=1e-5)
    assert out["cov_offdiag"].item() == pytest.approx(off, rel=1e-5)
    assert out["cov_diag"].item() == pytest.approx(diag, rel=1e-5)
    assert out["loss"].item() == pytest.approx(base["loss"].item() + 0.25 * pen, rel=1e-5)


def test_dipvae_penalty_has_gradient_to_mu() -> None:
    mu = torch.randn(4, 3, requires_grad=True)
    logvar = torch.zeros(4, 3, requires_grad=True)
    x = torch.zeros(4, 4, 1, 1, 1)
    DIPVAELoss()(x, x, mu, logvar, 0.0)["cov_penalty"].backward()
    assert mu.grad is not None and mu.grad.abs().sum() > 0


# ---------------------------------------------------------------- Exp3 supervision
def _supervision(**kw) -> PartitionSupervision:
    return PartitionSupervision(
        partition={"vol": [0], "loc": [1, 2]}, factor_index={"vol": [0], "loc": [1, 2]}, weights={"vol": 2.0}, **kw
    )


def test_supervised_loss_excludes_nan_rows() -> None:
    mu = torch.tensor([[1.0, 0.0, 0.0], [2.0, 1.0, 1.0], [0.0, 3.0, 0.0]])
    nan = float("nan")
    factors = torch.tensor([[0.0, 1.0, 1.0], [nan, nan, nan], [1.0, nan, 0.0]])
    out = _supervision()(mu, factors)
    # vol: rows 0 and 2 labelled: ((1-0)^2 + (0-1)^2)/2 = 1 ; loc: row 0 only: (0-1)^2 + (0-1)^2 = 2
    assert out["sup_vol"].item() == pytest.approx(1.0)
    assert out["sup_loc"].item() == pytest.approx(2.0)
    assert out["sup_loss"].item() == pytest.approx(2.0 * 1.0 + 1.0 * 2.0)


def test_supervised_loss_standardises_targets() -> None:
    mu = torch.tensor([[1.0, 0.0, 0.0]])
    factors = torch.tensor([[5.0, 2.0, 4.0]])
    out = _supervision(factor_mean=[3.0, 0.0, 0.0], factor_std=[2.0, 1.0, 2.0])(mu, factors)
    # vol target (5-3)/2 = 1 -> 0; loc targets 2, 2 -> 4 + 4
    assert out["sup_vol"].item() == pytest.approx(0.0)
    assert out["sup_loc"].item() == pytest.approx(8.0)


def test_supervised_loss_no_labelled_rows_is_zero_with_graph() -> None:
    mu = torch.randn(2, 3, requires_grad=True)
    factors = torch.full((2, 3), float("nan"))
    out = _supervision()(mu, factors)
    assert out["sup_loss"].item() == 0.0
    out["sup_loss"].backward()
    assert torch.equal(mu.grad, torch.zeros(2, 3))


def test_supervised_rejects_mismatched_groups() -> None:
    with pytest.raises(ValueError):
        PartitionSupervision({"vol": [0, 1]}, {"vol": [0]}, {})


def test_supervised_loss_scale_multiplies_the_weighted_sum() -> None:
    mu = torch.tensor([[1.0, 0.0, 0.0]])
    factors = torch.tensor([[5.0, 2.0, 4.0]])
    kw = dict(factor_mean=[3.0, 0.0, 0.0], factor_std=[2.0, 1.0, 2.0])
    base = _supervision(**kw)(mu, factors)
    scaled = _supervision(scale=64.0, **kw)(mu, factors)
    # the per-group terms are unweighted and unscaled; only sup_loss = scale * sum_g w_g L_g changes
    assert scaled["sup_loc"].item() == pytest.approx(base["sup_loc"].item())
    assert scaled["sup_loss"].item() == pytest.approx(64.0 * base["sup_loss"].item())


def test_tumour_voxel_weight_and_weighted_likelihood_by_hand():
    """w = 1 + (weight - 1) [label in {1, 3}]; the summed likelihood weights each squared error by w."""
    from custom.losses.elbo import VAELoss, tumour_voxel_weight

    label = torch.zeros(1, 1, 2, 2, 2, dtype=torch.uint8)
    label[0, 0, 0, 0, 0] = 3  # enhancing tumour
    label[0, 0, 0, 0, 1] = 1  # core
    label[0, 0, 0, 1, 0] = 2  # edema: not tumour
    w = tumour_voxel_weight(label, 10.0)
    assert w.flatten().tolist() == [10.0, 10.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    x = torch.zeros(1, 2, 2, 2, 2)
    x_hat = torch.ones(1, 2, 2, 2, 2)  # squared error 1 everywhere, 2 channels
    loss = VAELoss(recon_reduction="sum", recon_sigma=1.0)
    mu, logvar = torch.zeros(1, 3), torch.zeros(1, 3)
    plain = loss(x, x_hat, mu, logvar, beta=1.0)["recon"]
    weighted = loss(x, x_hat, mu, logvar, beta=1.0, voxel_weight=w)["recon"]
    assert float(plain) == pytest.approx(2 * 8 / 2.0)  # sum (x - x_hat)^2 / (2 sigma^2)
    assert float(weighted) == pytest.approx(2 * (10 + 10 + 6) / 2.0)
    with pytest.raises(ValueError):
        tumour_voxel_weight(label, 0.5)


def test_balanced_tumour_weight_gives_every_scan_the_same_total_by_hand():
    """Scan 0: 1 tumour voxel, scan 1: 3, scan 2: none. n_mean = (1 + 3) / 2 = 2, weight 5 (extra 4):
    scan 0's voxel gets 1 + 4 * 2/1 = 9, scan 1's get 1 + 4 * 2/3 = 11/3 each, scan 2 stays 1. Totals of the extra
    weight: 8 and 8 (equal), and 16 over the batch, as with per-voxel weights (4 * 4 voxels)."""
    from custom.losses.elbo import tumour_voxel_weight

    label = torch.zeros(3, 1, 2, 2, 2, dtype=torch.uint8)
    label[0, 0, 0, 0, 0] = 1
    label[1, 0, 0, 0, :] = 3
    label[1, 0, 1, 1, 1] = 1
    label[2, 0, 1, 0, 0] = 2  # edema only: no tumour
    w = tumour_voxel_weight(label, 5.0, mode="balanced")
    assert w[0, 0, 0, 0, 0].item() == pytest.approx(9.0)
    assert w[1][label[1] > 0].tolist() == pytest.approx([11.0 / 3.0] * 3)
    assert torch.all(w[2] == 1.0)
    assert torch.all(w[label == 0] == 1.0)
    extra = (w - 1.0).flatten(1).sum(1)
    assert extra.tolist() == pytest.approx([8.0, 8.0, 0.0])
    assert (tumour_voxel_weight(label, 5.0) - 1.0).sum().item() == pytest.approx(extra.sum().item())
    assert torch.all(tumour_voxel_weight(torch.zeros_like(label), 5.0, mode="balanced") == 1.0)  # no tumour anywhere
    with pytest.raises(ValueError):
        tumour_voxel_weight(label, 5.0, mode="volume")
