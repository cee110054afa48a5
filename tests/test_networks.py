"""Network shapes, the SBD coordinate grid, posterior clamp, eval-mode reparameterisation and traceable wrappers."""

from __future__ import annotations

import pytest
import torch

from custom.networks import (
    ConvTransposeDecoder3D,
    DecoderNet,
    EncoderNet,
    ReconstructionNet,
    ResNetEncoder3D,
    ResNetVAE,
    SpatialBroadcastDecoder3D,
    coordinate_grid,
)

torch.set_num_threads(2)
Z = 8
#: Narrow widths keep the tests fast; the architecture (depth, strides, shapes) is the default one.
SMALL = dict(
    widths=(8, 8, 16, 16), head_channels=8, decoder_channels=(16, 16, 16, 8, 8, 8), sbd_channels=(16, 16, 8, 8, 8)
)


def small_vae(**kwargs) -> ResNetVAE:
    return ResNetVAE(z_dim=Z, **SMALL, **kwargs)


@pytest.fixture(scope="module")
def x32() -> torch.Tensor:
    return torch.randn(2, 4, 32, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("use_sbd", [False, True])
def test_default_width_vae_shapes_32(x32: torch.Tensor, use_sbd: bool) -> None:
    vae = ResNetVAE(spatial_size=[32, 32, 32], z_dim=Z, use_sbd=use_sbd).eval()
    with torch.no_grad():
        x_hat, mu, logvar, z = vae(x32)
    assert x_hat.shape == x32.shape
    assert mu.shape == logvar.shape == z.shape == (2, Z)
    assert mu.dtype == logvar.dtype == torch.float32


@pytest.mark.parametrize("use_sbd", [False, True])
def test_vae_train_step_32(x32: torch.Tensor, use_sbd: bool) -> None:
    vae = small_vae(spatial_size=32, use_sbd=use_sbd, sbd_coords_every_stage=use_sbd)
    x_hat, mu, logvar, z = vae(x32)
    assert x_hat.shape == x32.shape and z.shape == (2, Z)
    (x_hat.square().mean() + mu.square().mean() + logvar.square().mean()).backward()
    assert all(p.grad is not None for p in vae.parameters())


@pytest.mark.parametrize("use_sbd", [False, True])
def test_vae_shapes_64_eval(use_sbd: bool) -> None:
    vae = small_vae(spatial_size=64, use_sbd=use_sbd, sbd_coords_every_stage=use_sbd).eval()
    with torch.no_grad():
        x_hat, mu, _, _ = vae(torch.zeros(1, 4, 64, 64, 64))
    assert x_hat.shape == (1, 4, 64, 64, 64) and mu.shape == (1, Z)


def test_encoder_feature_map_keeps_spatial_layout() -> None:
    enc = ResNetEncoder3D(z_dim=Z, spatial_size=128)
    # 128 / (2 * 1*2*2*2) = 8 -> 32 head channels x 8^3 flattened into the linear heads
    assert enc.feature_shape == (32, 8, 8, 8)
    assert enc.fc_mu.in_features == 32 * 8**3


def test_decoder_initial_volume() -> None:
    assert ConvTransposeDecoder3D(z_dim=Z, spatial_size=128).initial_shape == (256, 4, 4, 4)
    assert ConvTransposeDecoder3D(z_dim=Z, spatial_size=32).initial_shape == (256, 1, 1, 1)


def test_bad_spatial_size_raises_clear_error() -> None:
    with pytest.raises(ValueError, match="divisible"):
        ResNetEncoder3D(spatial_size=40)
    with pytest.raises(ValueError, match="divisible"):
        ConvTransposeDecoder3D(spatial_size=48)
    with pytest.raises(ValueError, match="power of two"):
        SpatialBroadcastDecoder3D(spatial_size=48, grid=8)
    enc = ResNetEncoder3D(z_dim=Z, spatial_size=32)
    with pytest.raises(ValueError, match="spatial size"):
        enc(torch.zeros(1, 4, 64, 64, 64))


def test_coordinate_grid_is_linspace_along_each_axis() -> None:
    d, h, w = 3, 4, 5
    grid = coordinate_grid((d, h, w))
    assert grid.shape == (1, 3, d, h, w) and grid.dtype == torch.float32
    for i in range(d):
        assert torch.allclose(grid[0, 0, i], torch.full((h, w), -1.0 + 2.0 * i / (d - 1)))
    for j in range(h):
        assert torch.allclose(grid[0, 1, :, j], torch.full((d, w), -1.0 + 2.0 * j / (h - 1)))
    for k in range(w):
        assert torch.allclose(grid[0, 2, :, :, k], torch.full((d, h), -1.0 + 2.0 * k / (w - 1)))


def test_sbd_broadcasts_coordinates_into_first_conv() -> None:
    dec = SpatialBroadcastDecoder3D(z_dim=Z, spatial_size=32, grid=8)
    assert torch.equal(dec.coords, coordinate_grid((8, 8, 8)))
    assert dec.broadcast_conv[0].in_channels == Z + 3
    assert len(dec.stages) == 2  # 8 -> 16 -> 32
    every = SpatialBroadcastDecoder3D(z_dim=Z, spatial_size=32, grid=8, coords_every_stage=True)
    assert torch.equal(every.coords_2, coordinate_grid((32, 32, 32)))


def test_logvar_is_clamped_below() -> None:
    enc = ResNetEncoder3D(z_dim=Z, spatial_size=32, posterior_logvar_min=-6.0)
    with torch.no_grad():
        enc.fc_logvar.weight.zero_()
        enc.fc_logvar.bias.fill_(-50.0)
        _, logvar = enc(torch.randn(2, 4, 32, 32, 32))
    assert torch.equal(logvar, torch.full((2, Z), -6.0))


def test_reparameterize_train_samples_eval_returns_mu() -> None:
    vae = small_vae(spatial_size=32)
    mu, logvar = torch.randn(1000, Z), torch.full((1000, Z), 2.0 * torch.tensor(0.5).log().item())
    vae.eval()
    assert torch.equal(vae.reparameterize(mu, logvar), mu)
    vae.train()
    z = vae.reparameterize(mu, logvar)
    # z - mu ~ N(0, 0.5^2): the sample std over 8000 draws is within a few % of 0.5
    assert (z - mu).std().item() == pytest.approx(0.5, rel=0.05)


def test_activation_checkpointing_same_gradients(x32: torch.Tensor) -> None:
    torch.manual_seed(0)
    plain = small_vae(spatial_size=32)
    ckpt = small_vae(spatial_size=32, activation_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    ckpt.train()
    ckpt.reparameterize = lambda mu, logvar: mu  # type: ignore[method-assign]
    plain.reparameterize = lambda mu, logvar: mu  # type: ignore[method-assign]
    for net in (plain, ckpt):
        net(x32)[0].square().mean().backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        if name.startswith("encoder.fc_logvar"):  # logvar does not reach the loss when z = mu
            assert p.grad is None and q.grad is None
            continue
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6), name


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # GroupNorm's batch-size check inside torch
@pytest.mark.parametrize("use_sbd", [False, True])
def test_wrappers_trace_equal_eager(x32: torch.Tensor, use_sbd: bool) -> None:
    vae = small_vae(spatial_size=32, use_sbd=use_sbd).eval()
    z = torch.randn(2, Z)
    with torch.no_grad():
        mu, logvar = vae.encode(x32)
        for net, inp, expected_shape in (
            (ReconstructionNet(vae), x32, x32.shape),
            (EncoderNet(vae), x32, (2, 2 * Z)),
            (DecoderNet(vae), z, x32.shape),
        ):
            eager = net(inp)
            traced = torch.jit.trace(net, inp, check_trace=False)
            assert eager.shape == expected_shape
            assert torch.allclose(traced(inp), eager, atol=1e-6)
            assert torch.allclose(traced(inp[:1]), net(inp[:1]), atol=1e-6)  # batch size is not baked in
        assert torch.equal(EncoderNet(vae)(x32), torch.cat([mu, logvar], 1))
        assert torch.allclose(ReconstructionNet(vae)(x32), vae.decode(mu))
