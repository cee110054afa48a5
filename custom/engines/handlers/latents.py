"""Write each inferred case's posterior (mu, logvar) next to its reconstruction."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events


class LatentWriter:
    """Evaluator handler for ``inference.json``: ``<output_dir>/<case>_latents.json`` with mu and logvar.

    Encodes the batch images again with ``vae.encode`` (the inferer returns only the reconstruction,
    one tensor, as MONAI Label requires); the encoder pass is cheap next to the decoder.
    """

    def __init__(self, vae: Any, output_dir: str) -> None:
        self.vae = vae
        self.output_dir = Path(output_dir)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    @torch.no_grad()
    def __call__(self, engine: Engine) -> None:
        batch = engine.state.batch
        items = batch if isinstance(batch, list) else [batch]
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for item in items:
            image = item["image"]
            x = image.as_tensor() if hasattr(image, "as_tensor") else image
            if x.ndim == 4:
                x = x.unsqueeze(0)
            mu, logvar = self.vae.encode(x.to(engine.state.device).float())
            case = item.get("case_id") or Path(str(getattr(image, "meta", {}).get("filename_or_obj", "case"))).name
            case = case[0] if isinstance(case, (list, tuple)) else case
            payload = {
                "case_id": str(case),
                "mu": mu.float().cpu().flatten().tolist(),
                "logvar": logvar.float().cpu().flatten().tolist(),
            }
            (self.output_dir / f"{Path(str(case)).name.split('.')[0]}_latents.json").write_text(json.dumps(payload))
