"""Every bundle's metadata.json is valid against the MONAI bundle schema and declares image -> pred."""

from __future__ import annotations

import json

import jsonschema
import pytest
from conftest import REPO

#: MONAI's bundle metadata schema (Project-MONAI, Apache-2.0), vendored so that CI validates without network access
SCHEMA = REPO / "tests" / "data" / "meta_schema_20240725.json"
BUNDLES = ["vae_baseline", "dipvae", "latent_ode", "tumour_seg"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_valid(bundle: str) -> None:
    meta = json.loads((REPO / "bundles" / bundle / "configs" / "metadata.json").read_text())
    jsonschema.validate(meta, json.loads(SCHEMA.read_text()))
    assert "image" in meta["network_data_format"]["inputs"]
    assert "pred" in meta["network_data_format"]["outputs"]
    assert meta["changelog"] and meta["required_packages_version"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_bundle_files(bundle: str) -> None:
    root = REPO / "bundles" / bundle
    for rel in ("configs/train.json", "configs/inference.json", "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (root / rel).exists(), rel
    train = json.loads((root / "configs" / "train.json").read_text())
    assert "training" in train and "run" in train and "initialize" in train


def test_dipvae_declares_partition() -> None:
    meta = json.loads((REPO / "bundles" / "dipvae" / "configs" / "metadata.json").read_text())
    exp3 = json.loads((REPO / "bundles" / "dipvae" / "configs" / "exp3.json").read_text())
    assert meta["latent"]["partition"] == exp3["partition"]
    assert meta["latent"]["partition"]["vol"] == [0]
