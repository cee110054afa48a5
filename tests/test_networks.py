"""Network shapes, the SBD coordinate grid, posterior clamp, eval-mode reparameterisation and traceable wrappers."""

from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

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
    widths=(8, 8, 16, 16), head_channels=8, decoder_channels=(16, 16, 16, 8, 8), sbd_channels=(16, 16, 8, 8, 8)
)
#: the same narrow decoder in the previous layout (one more block at full resolution + a 3x3x3 output conv)
SMALL_CONV_DECODER = (16, 16, 16, 8, 8, 8)


def small_vae(**kwargs) -> ResNetVAE:
    params = {**SMALL, **kwargs}
    if params.get("decoder_output_layer") == "conv":
        params["decoder_channels"] = SMALL_CONV_DECODER
    return ResNetVAE(z_dim=Z, **params)


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
    # the bare decoder does not trim its channel list: 5 up-samplings with either layout of the 128^3 default
    assert ConvTransposeDecoder3D(z_dim=Z, spatial_size=128).initial_shape == (256, 4, 4, 4)
    assert ConvTransposeDecoder3D(z_dim=Z, spatial_size=32).initial_shape == (256, 1, 1, 1)
    old = ConvTransposeDecoder3D(z_dim=Z, spatial_size=128, channels=(256, 256, 128, 64, 32, 32), output_layer="conv")
    assert old.initial_shape == (256, 4, 4, 4)


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


# ------------------------------------------------------------------------- decoder output layer ("transposed" / "conv")
OUTPUT_LAYERS = ["transposed", "conv"]


@pytest.mark.parametrize("output_layer", OUTPUT_LAYERS)
@pytest.mark.parametrize("size", [32, 64])
def test_decoder_output_layer_shapes_and_4cubed_start(output_layer: str, size: int) -> None:
    vae = small_vae(spatial_size=size, decoder_output_layer=output_layer).eval()
    assert vae.decoder.initial_shape[1:] == (4, 4, 4)
    # number of up-samplings from 4^3: log2(size / 4); "transposed" spends the last one on the output layer
    n_up = {32: 3, 64: 4}[size]
    assert len(vae.decoder.blocks) == (n_up - 1 if output_layer == "transposed" else n_up)
    with torch.no_grad():
        x_hat, mu, _, _ = vae(torch.zeros(1, 4, size, size, size))
    assert x_hat.shape == (1, 4, size, size, size) and mu.shape == (1, Z)


@pytest.mark.parametrize("output_layer", OUTPUT_LAYERS)
def test_default_vae_128_on_meta_device(output_layer: str) -> None:
    kwargs = {"decoder_channels": (256, 256, 128, 64, 32, 32)} if output_layer == "conv" else {}
    with _no_autocast(), torch.device("meta"):
        vae = ResNetVAE(spatial_size=128, z_dim=Z, decoder_output_layer=output_layer, **kwargs)
        x_hat, mu, _, _ = vae(torch.empty(1, 4, 128, 128, 128))
    assert x_hat.shape == (1, 4, 128, 128, 128) and mu.shape == (1, Z)
    assert vae.decoder.initial_shape == (256, 4, 4, 4)


def _full_resolution_outputs(decoder: nn.Module, z: torch.Tensor, size: int) -> list[tuple[str, int]]:
    """(module name, channels) of every leaf module whose output has the full spatial size."""
    found: list[tuple[str, int]] = []
    hooks = [
        m.register_forward_hook(
            lambda mod, inp, out, name=name: (
                found.append((name, out.shape[1])) if out.shape[2:] == (size, size, size) else None
            )
        )
        for name, m in decoder.named_modules()
        if not list(m.children())
    ]
    try:
        with torch.no_grad():
            decoder(z)
    finally:
        for h in hooks:
            h.remove()
    return found


def test_transposed_output_layer_has_no_full_resolution_feature_map() -> None:
    vae = small_vae(spatial_size=32).eval()
    dec = vae.decoder
    last = list(dec.modules())[-1]
    assert isinstance(dec.out, nn.ConvTranspose3d) and last is dec.out
    assert dec.out.out_channels == 4 and dec.out.bias is not None
    assert (dec.out.kernel_size, dec.out.stride, dec.out.padding) == ((4, 4, 4), (2, 2, 2), (1, 1, 1))
    assert _full_resolution_outputs(dec, torch.randn(1, Z), 32) == [("out", 4)]
    # negative control: the previous layout has a multi-channel map (block + norm + ReLU) at full resolution
    old = small_vae(spatial_size=32, decoder_output_layer="conv").eval()
    assert isinstance(old.decoder.out, nn.Conv3d)
    assert any(c > 4 for _, c in _full_resolution_outputs(old.decoder, torch.randn(1, Z), 32))


@pytest.mark.parametrize("output_layer", OUTPUT_LAYERS)
def test_decoder_gradient_reaches_z(output_layer: str) -> None:
    torch.manual_seed(0)
    vae = small_vae(spatial_size=32, decoder_output_layer=output_layer).train()
    z = torch.randn(2, Z, requires_grad=True)
    vae.decode(z).square().mean().backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_decoder_channels_for_keeps_the_4cubed_start() -> None:
    from custom.networks.vae import decoder_channels_for

    new, old = (256, 256, 128, 64, 32), (256, 256, 128, 64, 32, 32)
    # values from the layout: n_up = log2(size / 4) up-samplings; n_up - 1 blocks ("transposed") or n_up ("conv")
    assert decoder_channels_for((32,) * 3, new, 4) == (256, 64, 32)
    assert decoder_channels_for((64,) * 3, new, 4) == (256, 128, 64, 32)
    assert decoder_channels_for((128,) * 3, new, 4) == new
    assert decoder_channels_for((8,) * 3, new, 4) == (256,)  # one up-sampling: the output ConvT alone
    assert decoder_channels_for((32,) * 3, old, 4, "conv") == (256, 64, 32, 32)
    assert decoder_channels_for((64,) * 3, old, 4, "conv") == (256, 128, 64, 32, 32)
    assert decoder_channels_for((128,) * 3, old, 4, "conv") == old
    assert decoder_channels_for((32,) * 3, new, None) == new
    with pytest.raises(ValueError, match="output_layer"):
        ConvTransposeDecoder3D(spatial_size=32, output_layer="pixelshuffle")


def test_conv_layout_matches_checkpoints_of_the_previous_default() -> None:
    """decoder_output_layer="conv" + the old channel list has exactly the previous decoder's parameters."""
    with torch.device("meta"):
        vae = ResNetVAE(
            spatial_size=128, z_dim=Z, decoder_output_layer="conv", decoder_channels=(256, 256, 128, 64, 32, 32)
        )
    got = {k: tuple(v.shape) for k, v in vae.decoder.state_dict().items()}
    # the previous layout written out by hand: fc -> 256 x 4^3, 5 x [ConvT(k4, no bias) + GN], Conv3d(32 -> 4, k3)
    expected = {"fc.weight": (256 * 64, Z), "fc.bias": (256 * 64,)}
    for i, (cin, cout) in enumerate(zip((256, 256, 128, 64, 32), (256, 128, 64, 32, 32))):
        expected[f"blocks.{i}.0.weight"] = (cin, cout, 4, 4, 4)
        expected[f"blocks.{i}.1.weight"] = expected[f"blocks.{i}.1.bias"] = (cout,)
    expected["out.weight"], expected["out.bias"] = (4, 32, 3, 3, 3), (4,)
    assert got == expected


def test_transposed_output_layer_flops_128() -> None:
    """Forward FLOPs of the default decoder at 128^3 equal the hand count (2 FLOPs per multiply-add)."""
    with torch.device("meta"):
        dec = ConvTransposeDecoder3D(z_dim=128, spatial_size=128)
        z = torch.empty(1, 128)
    counter = FlopCounterMode(display=False)
    with counter:
        dec(z)
    # a ConvTranspose3d(k4, s2) does C_in * C_out * 4^3 multiply-adds per *input* voxel
    layers = [(256, 256, 4), (256, 128, 8), (128, 64, 16), (64, 32, 32), (32, 4, 64)]  # (C_in, C_out, input side)
    expected = 2 * 128 * 256 * 4**3 + sum(2 * ci * co * 4**3 * s**3 for ci, co, s in layers)
    assert counter.get_total_flops() == expected


@contextlib.contextmanager
def _no_autocast():
    """The encoder's fp32 heads use ``torch.autocast(enabled=False)``, which has no meta-device backend."""
    original = torch.autocast
    torch.autocast = lambda *args, **kwargs: contextlib.nullcontext()  # type: ignore[assignment]
    try:
        yield
    finally:
        torch.autocast = original  # type: ignore[assignment]
