"""Latent traversals: vary one latent coordinate at a time around a subject's mu and decode.

Rows are coordinates (the Exp3 partition's coordinates first: z_vol, z_loc..., then the most variable
active units), columns are offsets in units of that coordinate's spread over the evaluation set.
Looking at it should show z_vol growing the tumour and z_loc moving it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

_GROUP_LABELS = {"vol": ["vol"], "loc": ["loc x", "loc y", "loc z"], "shape": [f"shape {i}" for i in range(16)]}


def traversal_coordinates(
    mu_all: np.ndarray, partition: dict[str, list[int]] | None, max_rows: int = 8
) -> tuple[list[int], list[str]]:
    """Coordinates to traverse and their labels: partition first, then the highest-variance others."""
    coords: list[int] = []
    labels: list[str] = []
    for group, idx in (partition or {}).items():
        for k, j in enumerate(idx):
            if len(coords) < max_rows:
                coords.append(int(j))
                names = _GROUP_LABELS.get(group, [f"{group} {i}" for i in range(len(idx))])
                labels.append(f"z{j} ({names[k] if k < len(names) else group})")
    order = np.argsort(-mu_all.var(axis=0))
    for j in order:
        if len(coords) >= max_rows:
            break
        if int(j) not in coords:
            coords.append(int(j))
            labels.append(f"z{j} (var {mu_all[:, j].var():.2f})")
    return coords, labels


@torch.no_grad()
def traversal_images(
    vae: Any,
    mu_center: np.ndarray,
    coords: list[int],
    spread: np.ndarray,
    steps: int = 7,
    span: float = 2.0,
    channel: int = 0,
    device: str | torch.device = "cpu",
) -> tuple[np.ndarray, list[float]]:
    """Decode ``mu_center`` with coordinate ``j`` set to ``mu_j + s * spread_j`` for ``s`` in ``[-span, span]``.

    Returns images ``[n_coords, steps, D, H, W]`` of one channel (default t1c) and the step values ``s``.
    """
    vae.eval()
    offsets = np.linspace(-span, span, steps)
    rows = []
    for j in coords:
        z = np.repeat(mu_center[None, :], steps, axis=0).astype(np.float32)
        z[:, j] = mu_center[j] + offsets * spread[j]
        x = vae.decode(torch.as_tensor(z, device=device)).float().cpu().numpy()
        rows.append(x[:, channel])
    return np.stack(rows), [float(o) for o in offsets]


@dataclass(frozen=True)
class Traversal:
    """A written traversal: the PNG and what it shows (decoded t1c ``[n_coords, steps, D, H, W]``, the offsets
    ``s``, the traversed coordinates with their labels, and the per-coordinate spread the offsets are in)."""

    png: str
    images: np.ndarray
    values: list[float]
    coords: list[int]
    labels: list[str]
    spread: np.ndarray


def write_traversal(
    vae: Any,
    mu_all: np.ndarray,
    out_png: str,
    partition: dict[str, list[int]] | None = None,
    case: int = 0,
    steps: int = 7,
    span: float = 2.0,
    device: str | torch.device = "cpu",
) -> Traversal:
    """Traversal PNG around case ``case`` of ``mu_all`` (spreads = std of mu over the evaluation set)."""
    from custom.plots.traversal import plot_traversal

    coords, labels = traversal_coordinates(mu_all, partition)
    spread = mu_all.std(axis=0) + 1e-6
    images, values = traversal_images(vae, mu_all[case], coords, spread, steps=steps, span=span, device=device)
    Path(out_png).parent.mkdir(parents=True, exist_ok=True)
    png = plot_traversal(images, out_png, coord_labels=labels, step_values=[f"{v:+.1f}σ" for v in values])
    return Traversal(png, images, values, coords, labels, spread)


def traverse_bundle(
    bundle: str,
    out: str,
    datalist: str = "data/synthetic/datalist.json",
    split: str = "validation",
    case: int = 0,
    steps: int = 7,
    span: float = 2.0,
) -> str:
    """CLI: encode a split with a trained encoder bundle, then write the traversal PNG around one case.

    The network is rebuilt from ``<bundle>/models/model_config.json`` (the sizes it was actually trained with,
    through :func:`custom.ode.encode.load_encoder`), and the Exp3 partition, when there is one, from
    ``models/latent_partition.json``.
    """
    import json

    from custom.data.datalist import read_datalist
    from custom.data.transforms import get_inference_preprocessing
    from custom.ode.encode import load_encoder

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    vae, cfg = load_encoder(bundle, device)
    transform = get_inference_preprocessing(
        spacing=cfg.get("spacing", 1.875), spatial_size=cfg.get("spatial_size", (128, 128, 128))
    )
    mus = []
    with torch.no_grad():
        for item in read_datalist(datalist, split):
            x = transform(dict(item))["image"]
            mus.append(vae.encode(x.as_tensor()[None].to(device).float())[0].float().cpu().numpy())
    mu_all = np.concatenate(mus)
    part_file = Path(bundle) / "models" / "latent_partition.json"
    partition = json.loads(part_file.read_text()).get("partition") if part_file.exists() else None
    return write_traversal(vae, mu_all, out, partition=partition, case=case, steps=steps, span=span, device=device).png
