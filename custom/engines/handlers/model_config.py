"""Record the hyper-parameters a trained network needs to be rebuilt, next to its weights.

``models/model_config.json`` (spatial size, spacing, z_dim, decoder switch, ...) lets downstream code
(the latent_ode bundle, the demo, traversals) rebuild exactly the trained network from ``models/model.pt``
without knowing which command-line overrides the training run used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ignite.engine import Engine, Events


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
