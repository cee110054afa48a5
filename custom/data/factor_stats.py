"""Standardisation statistics of the segmentation factors, and the latent partition file latent_ode reads.

Exp3 supervises latent coordinates with *standardised* factors, e.g. ``z_vol ≈ (ln V − m) / s``. The
mean ``m`` and std ``s`` are measured on the training split (labelled cases only) and written with the
partition to ``models/latent_partition.json`` so that downstream code can map z_vol back to millilitres:
``ln V = m + s · z_vol``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from custom.data.factors import FACTOR_NAMES


def factor_statistics(
    dataset: Any,
    partition: Mapping[str, Sequence[int]] | None = None,
    factor_index: Mapping[str, Sequence[int]] | None = None,
    out: str | None = None,
    key: str = "factors",
) -> dict[str, Any]:
    """Per-factor mean and std over the labelled items of ``dataset`` (a MONAI dataset of dicts).

    Returns ``{"mean": [...], "std": [...], "factor_names": [...], "n_labelled": int}`` (std floored at 1e-6)
    and, when ``out`` is given, also writes it with the partition as JSON.
    Raises a clear error when no item has factors (Exp3 needs segmentations).
    """
    rows = []
    for i in range(len(dataset)):
        f = dataset[i].get(key)
        if f is None:
            continue
        f = f.detach().cpu().numpy() if hasattr(f, "detach") else f  # GPU-cached datasets hold CUDA tensors
        f = np.asarray(f, dtype=np.float64).reshape(-1)
        if np.isfinite(f).all():
            rows.append(f)
    if not rows:
        raise ValueError("Exp3 supervision needs segmentations: no training case has finite segmentation factors")
    arr = np.stack(rows)
    stats: dict[str, Any] = {
        "factor_names": list(FACTOR_NAMES),
        "mean": arr.mean(axis=0).tolist(),
        "std": np.maximum(arr.std(axis=0), 1e-6).tolist(),
        "n_labelled": int(len(rows)),
    }
    if out:
        payload = dict(stats)
        payload["partition"] = {k: list(map(int, v)) for k, v in (partition or {}).items()}
        payload["factor_index"] = {k: list(map(int, v)) for k, v in (factor_index or {}).items()}
        if partition and "vol" in partition and factor_index and "vol" in factor_index:
            j = int(factor_index["vol"][0])
            payload["volume"] = {
                "latent_index": int(partition["vol"][0]),
                "factor": FACTOR_NAMES[j],
                "mean": stats["mean"][j],
                "std": stats["std"][j],
                "meaning": "ln(tumour volume mL) = mean + std * z[latent_index]",
            }
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(payload, indent=1))
    return stats
