"""The two encoder bundles stay in step: every config id they share means the same thing in both.

Each config file is flattened to MONAI's ``#``-joined ids (``train#handlers#1#config``); an id whose value differs
between vae_baseline and dipvae, or that only one of them has, must be listed below with the reason. Files outside
the list of intended differences must be byte-identical.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from monai.bundle import ConfigParser

BUNDLES = ("vae_baseline", "dipvae")
CONFIGS = REPO / "bundles"

#: config files that must be the same file in both bundles
IDENTICAL_FILES: tuple[str, ...] = ("multi_gpu_train.json", "logging.conf")

#: config files compared id by id, with the ids that are meant to differ
COMPARED_FILES: tuple[str, ...] = ("train.json", "inference.json", "evaluate.json")

_DIP = "DIP-VAE-II's covariance penalty exists only in dipvae"
_SBD = "the Spatial Broadcast Decoder's coordinate switch exists only in dipvae's decoder choice"

#: (file, id) -> why the two bundles differ there
INTENDED_DIFFERENCES: dict[tuple[str, str], str] = {
    ("train.json", "bundle_root"): "each bundle's own folder",
    ("train.json", "output_dir"): "each bundle writes its own run folder",
    ("inference.json", "bundle_root"): "each bundle's own folder",
    ("train.json", "augment"): "vae_baseline's default since 0.4.0 (held-out error from mu 0.505 -> 0.388); "
    "dipvae's recorded runs are without augmentation",
    ("train.json", "tumour_weight"): "vae_baseline 10 (its five collapse criteria met on held-out subjects); "
    "dipvae 1 (plain likelihood; its exp3.json layer sets 20)",
    ("train.json", "tumour_weight_mode"): "vae_baseline balanced (0.5.0); dipvae voxel, what its recorded runs used",
    ("train.json", "free_bits"): "the original design's recipes: 0.1 nats for the VAE, 0.2 under the DIP penalty",
    ("train.json", "best_after_epoch"): "dipvae keeps model.pt only once the DIP penalty is at full strength",
    ("train.json", "loss#_target_"): "ELBO (custom.losses.elbo.VAELoss) against ELBO + DIP penalty (DIPVAELoss)",
    ("train.json", "loss#lambda_od"): _DIP,
    ("train.json", "loss#lambda_d"): _DIP,
    ("train.json", "loss#gather"): _DIP + " (global-batch covariance under DDP)",
    ("train.json", "loss#exempt_dims"): _DIP + " (optionally not on the supervised Exp3 coordinates)",
    ("train.json", "lambda_od"): _DIP,
    ("train.json", "lambda_d"): _DIP,
    ("train.json", "lambda_start_epoch"): _DIP,
    ("train.json", "lambda_cov_annealing_epochs"): _DIP,
    ("train.json", "likelihood_scale"): _DIP + " (its lambdas are per 4 x 32^3 likelihood terms)",
    ("train.json", "dip_gather"): _DIP,
    ("train.json", "dip_exempt_supervised"): _DIP,
    ("train.json", "dip_lambda_schedule"): "null in vae_baseline: no DIP penalty to schedule",
    ("train.json", "dip_lambda_schedule#_target_"): _DIP,
    ("train.json", "dip_lambda_schedule#start_epoch"): _DIP,
    ("train.json", "dip_lambda_schedule#warmup_epochs"): _DIP,
    ("train.json", "sbd_coords_every_stage"): _SBD,
    ("train.json", "vae#sbd_coords_every_stage"): _SBD,
    ("train.json", "train#handlers#1#config#sbd_coords_every_stage"): _SBD + " (written to model_config.json)",
    ("inference.json", "sbd_coords_every_stage"): _SBD,
    ("inference.json", "vae#sbd_coords_every_stage"): _SBD,
    ("inference.json", "model_config#defaults#sbd_coords_every_stage"): _SBD + " (read from model_config.json)",
    ("evaluate.json", "vae#sbd_coords_every_stage"): _SBD + " (read from model_config.json)",
    ("evaluate.json", "model_config#defaults#sbd_coords_every_stage"): _SBD + " (read from model_config.json)",
}

_ABSENT = "<absent>"


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": [1, 2]}}`` -> ``{"a#b#0": 1, "a#b#1": 2}``; an empty dict or list is a value of its own."""
    if isinstance(config, dict) and config:
        items = config.items()
    elif isinstance(config, list) and config:
        items = enumerate(config)
    else:
        return {prefix: config}
    out: dict[str, Any] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}#{key}" if prefix else str(key)))
    return out


def drift(file: str) -> dict[str, tuple[Any, Any]]:
    """Ids of ``file`` whose values differ between the two bundles: id -> (vae_baseline value, dipvae value)."""
    a, b = (flatten(json.loads((CONFIGS / n / "configs" / file).read_text())) for n in BUNDLES)
    return {
        k: (a.get(k, _ABSENT), b.get(k, _ABSENT))
        for k in sorted(set(a) | set(b))
        if a.get(k, _ABSENT) != b.get(k, _ABSENT)
    }


def test_flatten_uses_monai_ids() -> None:
    config = {"a": {"b": [1, {"c": 2}]}, "d": [], "e": None}
    flat = flatten(config)
    assert flat == {"a#b#0": 1, "a#b#1#c": 2, "d": [], "e": None}
    parser = ConfigParser(config)  # the same ids address the same values in MONAI's parser
    assert all(parser[k] == v for k, v in flat.items())


@pytest.mark.parametrize("file", IDENTICAL_FILES)
def test_shared_files_are_identical(file: str) -> None:
    a, b = ((CONFIGS / n / "configs" / file).read_bytes() for n in BUNDLES)
    assert (
        a == b
    ), f"{file} differs between {BUNDLES[0]} and {BUNDLES[1]}: keep one text (or move it to {COMPARED_FILES})"


@pytest.mark.parametrize("file", COMPARED_FILES)
def test_shared_ids_agree_unless_listed(file: str) -> None:
    unlisted = {k: v for k, v in drift(file).items() if (file, k) not in INTENDED_DIFFERENCES}
    assert not unlisted, f"{file}: ids that differ between the bundles without a listed reason: {unlisted}"


def test_every_listed_difference_still_exists() -> None:
    stale = [key for key in INTENDED_DIFFERENCES if key[1] not in drift(key[0])]
    assert not stale, f"listed as different but now the same (remove them): {stale}"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_evaluate_layer_parses_with_monai(bundle: str, tiny_cohort: Path) -> None:
    """evaluate.json writes the two encoding passes once (``encode_pass``) and both resolve to their own split."""
    cfg = CONFIGS / bundle / "configs"
    parser = ConfigParser()
    parser.read_config([str(cfg / "train.json"), str(cfg / "evaluate.json")])
    parser["dataset_dir"] = str(tiny_cohort)  # an existing cohort: the default folder would be generated first
    parser.parse()
    dataset = parser.get_parsed_content("encode_pass#dataset")
    assert dataset.func.__name__ == "make_dataset" and "split" not in dataset.keywords
    assert parser["probe_fit_split"] == "training" and parser["probe_select_split"] == "validation"
    assert parser.get_parsed_content("eval_checkpoint_loader").load_path.endswith("/model.pt")
    for name in ("validate#handlers#0", "probe_fit#handlers#0", "probe_select#handlers#0"):
        assert parser[name] == "@eval_checkpoint_loader", name


@pytest.mark.parametrize("bundle", BUNDLES)
def test_handler_aliases_point_at_their_handlers(bundle: str) -> None:
    """``train#latents`` / ``train#checkpoints`` are references into ``train#handlers`` by index: inserting a
    handler before them must move the index too."""
    train = json.loads((CONFIGS / bundle / "configs" / "train.json").read_text())["train"]
    expected = {"latents": "TrainingLatents", "checkpoints": "TrainingCheckpoints"}
    for alias, cls in expected.items():
        ref = train[alias]
        assert ref.startswith("@train#handlers#"), ref
        target = train["handlers"][int(ref.rsplit("#", 1)[1])]["_target_"]
        assert target.rsplit(".", 1)[-1] == cls, f"train#{alias} -> {target}"
