"""The trajectories file is rebuilt only when its inputs (weights, encoder config, datalist) change."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from custom.networks import ResNetVAE
from custom.ode.encode import encode_trajectories


def _encoder_bundle(root: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    torch.save(ResNetVAE(spatial_size=32, z_dim=8).state_dict(), models / "model.pt")
    (models / "model_config.json").write_text(
        json.dumps({"spatial_size": [32, 32, 32], "spacing": 7.5, "z_dim": 8, "decoder_output_layer": "transposed"})
    )
    return root


def test_cache_reused_then_invalidated(tiny_cohort: Path, tmp_path: Path) -> None:
    enc = _encoder_bundle(tmp_path / "enc", seed=0)
    out = tmp_path / "traj.pt"
    datalist = tiny_cohort / "datalist.json"
    encode_trajectories(str(enc), str(datalist), str(out))
    first = torch.load(out, weights_only=False)
    n_scans = sum(
        len(v) for k, v in json.loads(datalist.read_text()).items() if k in ("training", "validation", "test")
    )
    assert first["mu"].shape == (n_scans, 8)
    assert set(first["split"]) <= {"train", "validation", "test"}
    assert first["truth"], "synthetic cohort truth (true a, K) is carried"
    mtime = out.stat().st_mtime_ns
    time.sleep(0.05)
    encode_trajectories(str(enc), str(datalist), str(out))
    assert out.stat().st_mtime_ns == mtime, "unchanged inputs must reuse the cache"
    _encoder_bundle(enc, seed=1)  # new weights
    encode_trajectories(str(enc), str(datalist), str(out))
    second = torch.load(out, weights_only=False)
    assert second["inputs_key"] != first["inputs_key"]
    assert not torch.equal(second["mu"], first["mu"])


def test_model_config_without_decoder_layer_rebuilds_the_legacy_decoder(tmp_path: Path) -> None:
    """Encoders trained before ``decoder_output_layer`` was recorded load with their own (older) decoder layout."""
    from custom.engines.handlers.model_config import LEGACY_DECODER, network_kwargs
    from custom.ode.encode import load_encoder

    legacy = ResNetVAE(spatial_size=32, z_dim=8, **LEGACY_DECODER)
    models = tmp_path / "enc" / "models"
    models.mkdir(parents=True)
    torch.save(legacy.state_dict(), models / "model.pt")
    (models / "model_config.json").write_text(json.dumps({"spatial_size": [32, 32, 32], "z_dim": 8}))
    vae, _ = load_encoder(str(tmp_path / "enc"))
    assert isinstance(vae.decoder.out, torch.nn.Conv3d)  # the 3x3x3 output convolution of the old layout
    assert network_kwargs({"z_dim": 8, "decoder_output_layer": "transposed"}) == {
        "z_dim": 8,
        "decoder_output_layer": "transposed",
    }
    assert network_kwargs({}) == {}
