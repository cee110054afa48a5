"""The training epoch's posterior means, kept for the validation probes ("online" linear probes).

A probe fitted and cross-validated inside the validation split alone has too few rows: 128 latents against a few
dozen subjects scores R^2 <= 0 even for codes whose probe, fitted on the training split and scored on new subjects,
reaches 0.87 (vae_baseline docs, run E20). The training step already computes mu for every training scan, so
keeping it (a ``[B, Z]`` copy per step) gives the validation pass a fit set of the whole training split at no extra
forward pass. The encoder moves during the epoch, so the rows come from slightly different encoders: the online
probe of self-supervised learning accepts the same staleness. With ``augment`` on, mu is of the augmented image
while the factors describe the un-augmented anatomy, which can only lower the probe.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events

__all__ = ["TrainingLatents"]


class TrainingLatents:
    """Accumulates ``(mu, factors, subject_id)`` of one training epoch; emptied when the next epoch starts.

    Attach it to the trainer (``attach``) and hand it to :class:`custom.engines.train_step.VAETrainStep`
    (``latents``) and to :class:`custom.engines.handlers.ValidationDiagnostics` (``probe_fit_source``).
    """

    def __init__(self) -> None:
        self._mu: list[torch.Tensor] = []
        self._factors: list[torch.Tensor] = []
        self._subjects: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)

    def reset(self, *_: Any) -> None:
        self._mu, self._factors, self._subjects = [], [], []

    def add(self, mu: torch.Tensor, factors: torch.Tensor, subject_ids: Sequence[str] | None) -> None:
        """Keep one batch (detached, float32, on its device until :meth:`arrays`: no device-to-host copy per step)."""
        n = int(mu.shape[0])
        ids = [str(s) for s in subject_ids] if subject_ids is not None else ["?"] * n
        if len(ids) != n or factors.shape[0] != n:
            raise ValueError(f"batch of {n} latents with {factors.shape[0]} factor rows and {len(ids)} subject ids")
        self._mu.append(mu.detach().float())
        self._factors.append(factors.detach().float())
        self._subjects.extend(ids)

    def __len__(self) -> int:
        return len(self._subjects)

    def arrays(self) -> dict[str, np.ndarray] | None:
        """``{"mu", "factors", "subject_id"}`` of the epoch's rows with a finite mu, or None when there are none."""
        if not self._subjects:
            return None
        mu = torch.cat([m.cpu() for m in self._mu]).numpy().astype(np.float64)
        factors = torch.cat([f.cpu() for f in self._factors]).numpy().astype(np.float64)
        keep = np.isfinite(mu).all(axis=1)
        if not keep.any():
            return None
        return {"mu": mu[keep], "factors": factors[keep], "subject_id": np.asarray(self._subjects)[keep]}
