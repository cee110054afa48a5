"""One VAE training iteration for MONAI's ``SupervisedTrainer(iteration_update=...)``.

The same step serves every encoder bundle: the loss module decides which terms exist (ELBO,
DIP-VAE-II), an optional :class:`~custom.losses.supervised.PartitionSupervision` adds the Exp3
terms, and the schedule handler puts the current ``beta`` / ``capacity`` / ``lambda_scale`` in
``engine.state.loss_kwargs``.

Non-finite loss or gradient: the optimizer step is skipped (weights and optimizer moments stay at
the last good state), the event is counted in ``engine.state.nonfinite`` with the batch's case ids,
and :class:`~custom.engines.handlers.nan_guard.NonFiniteGuard` decides when to stop.
This check costs one device->host sync per step (a bool); everything else stays on the device (the loss terms are
averaged on the device by :class:`~custom.engines.handlers.EpochAverager`, the latents kept for the probes are
copied to the host once per epoch).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from custom.constants import TUMOUR_LABELS
from custom.engines.batch import autocast_context, batch_case_ids, batch_to_device
from custom.losses.elbo import TUMOUR_WEIGHT_MODES, tumour_voxel_weight
from custom.utils import as_bool


class VAETrainStep:
    """Callable ``(engine, batchdata) -> dict`` of detached loss terms.

    Args:
        amp: bf16 autocast for the network (loss statistics are computed in fp32 by the loss modules).
        grad_clip: max global gradient norm (``clip_grad_norm_``); ``0`` disables clipping but the norm
            is still measured and logged.
        supervision: Exp3 supervision on latent subspaces (needs ``factors`` in the batch), or None.
        channels_last: feed the image as ``channels_last_3d``.
        tumour_weight: weight of the segmented tumour's voxels in the reconstruction likelihood
            (:func:`custom.losses.elbo.tumour_voxel_weight`); 1 = unweighted. Cases without a label are unweighted.
            A ``tumour_weight`` in ``engine.state.loss_kwargs`` (set each epoch by the schedule handler) replaces it.
        tumour_weight_mode: ``"voxel"`` (the same weight on every tumour voxel) or ``"balanced"`` (the same total
            weight on every scan's tumour, whatever its size); see :func:`custom.losses.elbo.tumour_voxel_weight`.
        latents: :class:`custom.engines.latent_buffer.TrainingLatents` that keeps each batch's mu, factors and
            subject ids for the validation probes; None keeps nothing.
        augment: a batch augmentation ``(image, label) -> (image, label)`` run on the device before the forward
            pass (:class:`custom.data.batch_augment.BatchRandAffine`, the ``augment_on: "batch"`` wiring); None when
            the data chain augments (or nothing does). The label it warps is the one the tumour weight uses.
    """

    def __init__(
        self,
        amp: bool = False,
        grad_clip: float = 5.0,
        supervision: nn.Module | None = None,
        channels_last: bool = False,
        tumour_weight: float = 1.0,
        latents: Any = None,
        tumour_weight_mode: str = "voxel",
        augment: Any = None,
    ) -> None:
        if float(tumour_weight) < 1.0:
            raise ValueError(f"tumour_weight must be >= 1, got {tumour_weight}")
        if tumour_weight_mode not in TUMOUR_WEIGHT_MODES:
            raise ValueError(f"tumour_weight_mode must be one of {TUMOUR_WEIGHT_MODES}, got {tumour_weight_mode!r}")
        self.tumour_weight_mode = tumour_weight_mode
        self.tumour_weight = float(tumour_weight)
        self.amp = as_bool(amp)
        self.grad_clip = float(grad_clip)
        self.supervision = supervision
        self.channels_last = as_bool(channels_last)
        self.latents = latents
        self.augment = augment

    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        device = engine.state.device
        batch = batch_to_device(batchdata, device, channels_last=self.channels_last)
        x = batch["image"]
        network, optimizer = engine.network, engine.optimizer
        network.train()
        optimizer.zero_grad(set_to_none=True)
        loss_kwargs = dict(getattr(engine.state, "loss_kwargs", None) or {"beta": 1.0})
        tumour_weight = float(loss_kwargs.pop("tumour_weight", self.tumour_weight))
        label = batchdata.get("label") if tumour_weight > 1.0 else None
        if isinstance(label, torch.Tensor) and label.shape[2:] == x.shape[2:]:
            label = (label.as_tensor() if hasattr(label, "as_tensor") else label).to(device, non_blocking=True)
        else:
            label = None
        if self.augment is not None:
            x, label = self.augment(x.as_tensor() if hasattr(x, "as_tensor") else x, label)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last_3d)
        if label is not None:
            loss_kwargs["voxel_weight"] = tumour_voxel_weight(
                label, tumour_weight, TUMOUR_LABELS, self.tumour_weight_mode
            )

        with autocast_context(device, self.amp):
            x_hat, mu, logvar, _ = network(x)
        terms = engine.loss_function(x, x_hat, mu, logvar, **loss_kwargs)
        if self.supervision is not None and "factors" in batch:
            self.supervision.to(device)
            sup = self.supervision(mu, batch["factors"])
            terms.update(sup)
            terms["loss"] = terms["loss"] + sup["sup_loss"]
        loss = terms["loss"]
        loss.backward()

        max_norm = self.grad_clip if self.grad_clip > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(network.parameters(), max_norm)
        finite = torch.isfinite(loss.detach()) & torch.isfinite(grad_norm)
        if bool(finite):
            optimizer.step()
            _record_finite(engine)
        else:
            optimizer.zero_grad(set_to_none=True)
            _record_nonfinite(engine, batch_case_ids(batchdata), loss.detach(), grad_norm)
        if self.latents is not None and isinstance(batch.get("factors"), torch.Tensor):
            # kept on the device: read once per epoch by the validation probes, not copied to the host per step
            self.latents.add(mu, batch["factors"], batchdata.get("subject_id"))

        out = {k: v.detach() for k, v in terms.items() if isinstance(v, torch.Tensor)}
        out["grad_norm"] = grad_norm.detach()
        out["finite"] = finite
        return out


def _nonfinite_state(engine: Any) -> dict[str, Any]:
    state = getattr(engine.state, "nonfinite", None)
    if state is None:
        state = {"count": 0, "consecutive": 0, "events": []}
        engine.state.nonfinite = state
    return state


def _record_finite(engine: Any) -> None:
    _nonfinite_state(engine)["consecutive"] = 0


def _record_nonfinite(engine: Any, case_ids: list[str], loss: torch.Tensor, grad_norm: torch.Tensor) -> None:
    state = _nonfinite_state(engine)
    state["count"] += 1
    state["consecutive"] += 1
    state["events"].append(
        {
            "epoch": int(engine.state.epoch),
            "iteration": int(engine.state.iteration),
            "case_ids": case_ids,
            "loss": float(loss),
            "grad_norm": float(grad_norm),
        }
    )
