"""Record the hyper-parameters a trained network needs to be rebuilt, next to its weights.

``models/model_config.json`` (spatial size, spacing, z_dim, decoder switch, ...) lets downstream code
(the latent_ode bundle, the demo, traversals) rebuild exactly the trained network from ``models/model.pt``
without knowing which command-line overrides the training run used.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events

logger = logging.getLogger(__name__)


class ModelConfigWriter:
    """Trainer handler writing ``<model_dir>/model_config.json`` when training starts."""

    def __init__(self, model_dir: str, config: dict[str, Any]) -> None:
        self.path = Path(model_dir) / "model_config.json"
        self.config = dict(config)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.config, indent=1, default=str))


def read_model_config(bundle_or_model_dir: str) -> dict[str, Any]:
    """Read ``model_config.json`` from a bundle folder or its ``models`` folder (empty dict when absent)."""
    p = Path(bundle_or_model_dir)
    for cand in (p / "model_config.json", p / "models" / "model_config.json"):
        if cand.exists():
            return json.loads(cand.read_text())
    return {}


#: the transposed-conv decoder of networks trained before ``decoder_output_layer`` existed (model configs without it)
LEGACY_DECODER = {"decoder_output_layer": "conv", "decoder_channels": (256, 256, 128, 64, 32, 32)}


def network_kwargs(cfg: dict[str, Any]) -> dict[str, Any]:
    """:class:`custom.networks.ResNetVAE` keyword arguments recorded in a model config.

    A config written before ``decoder_output_layer`` was recorded describes the older decoder (a 3x3x3 output
    convolution after a full-resolution block), so it gets :data:`LEGACY_DECODER`.
    """
    keys = (
        "spatial_size",
        "z_dim",
        "use_sbd",
        "posterior_logvar_min",
        "sbd_coords_every_stage",
        "decoder_output_layer",
    )
    kwargs = {k: cfg[k] for k in keys if k in cfg}
    if cfg and "decoder_output_layer" not in cfg:
        kwargs.update(LEGACY_DECODER)
    return kwargs


def trained_model_config(model_dir: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The sizes a model was trained with: ``defaults`` updated by ``<model_dir>/model_config.json``.

    Inference and evaluation configs read their ``spatial_size``, ``spacing``, ``z_dim`` and decoder switches
    from this dict, so that ``--ckpt_dir <a training run's models>`` is enough to rebuild that run's network.
    A config written before ``decoder_output_layer`` was recorded gets :data:`LEGACY_DECODER`. Without a
    ``model_config.json`` the defaults are used and a warning names the missing file.

    Args:
        model_dir: the folder holding ``model.pt`` (and, after training, ``model_config.json``).
        defaults: the values to use for keys the file does not record.

    Example:
        >>> trained_model_config("runs/vae/models", {"z_dim": 128, "spatial_size": [128, 128, 128]})["z_dim"]
        16
    """
    path = Path(model_dir) / "model_config.json"
    out = dict(defaults)
    if not path.is_file():
        logger.warning("%s not found: using the config's sizes %s", path, {k: out[k] for k in sorted(out)})
        return out
    recorded = json.loads(path.read_text())
    if not isinstance(recorded, dict):
        raise ValueError(f"{path}: expected a JSON object of training sizes, found {type(recorded).__name__}")
    out.update(recorded)
    out.update(network_kwargs(recorded))
    return out
