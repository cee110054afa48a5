"""Training and validation iterations of the hybrid forecaster for MONAI's ``SupervisedTrainer`` /
``SupervisedEvaluator`` (``iteration_update``), its loss, and the validation forecast-error metric.

Training iteration: for each subject of the batch draw k from ``k_obs`` (at most its scans - 1), observe its first
k scans (with their segmentation-measured ln V, or, for a random ``images_only_fraction`` of the subjects, only their
read-out ln V), forecast the later scans, and minimise (:class:`HybridForecastLoss`)

    L = mean_targets [ (y - mu)^2 / (2 sd^2) + ln sd ]  +  w_lat * mean_{targets, free dims} (z_pred - z)^2

(the Gaussian negative log predictive density of the measured ln V of the later scans, and the latent ODE term on
the non-volume coordinates). Non-finite loss or gradient: the step is skipped and counted for the package's
:class:`~custom.engines.handlers.NonFiniteGuard`, as in the encoders' step.

Validation iteration: the first ``k_eval`` scans observed, with segmentations (hybrid) and without (images only);
:class:`LastScanVolumeError` is the mean relative volume error 100 |V_pred / V - 1| at each subject's last scan.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from ignite.metrics import Metric
from torch import nn

from custom.engines.train_step import _record_finite, _record_nonfinite

_TENSOR_KEYS = ("z", "t", "logv_measured", "logv_segmented", "mask")


def to_device(batch: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Shallow copy of a :func:`~custom.ode.subjects.pad_collate` batch with its tensors on ``device``."""
    return {k: (v.to(device) if k in _TENSOR_KEYS else v) for k, v in batch.items()}


def observe_first(mask: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(obs_mask, target_mask) [B, T]: the first k_b real scans of each subject and its later real scans."""
    pos = torch.arange(mask.shape[1], device=mask.device).unsqueeze(0)
    k = k.to(mask.device).unsqueeze(1)
    return mask & (pos < k), mask & (pos >= k)


def run_forecast(
    network: nn.Module,
    batch: dict[str, Any],
    k: torch.Tensor,
    use_segmentations: torch.Tensor | bool,
    with_latents: bool,
) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """Forecast every later scan of each subject from its first k scans; returns (prediction, obs_mask, tgt_mask).

    Scans observed without their segmentation use the batch's ``logv_segmented`` (segmentation network) where it is
    finite, else the latent read-out (:meth:`~custom.ode.hybrid.HybridGompertzForecaster.predict`)."""
    obs, tgt = observe_first(batch["mask"], k)
    seg = torch.as_tensor(use_segmentations, device=obs.device)
    seg = seg.unsqueeze(1) if seg.dim() == 1 else seg
    measured = obs & torch.isfinite(batch["logv_measured"]) & seg
    seg_v = batch.get("logv_segmented")  # tumour_seg's ln V (nan where none), used for the images-only scans
    pred = network.predict(
        batch["z"], batch["logv_measured"], measured, batch["t"], batch["t"], obs, tgt, with_latents, y_images=seg_v
    )
    return pred, obs, tgt


class HybridForecastLoss(nn.Module):
    """Gaussian NLL of the later scans' measured ln V + ``latent_weight`` x latent MSE (module docstring)."""

    def __init__(self, latent_weight: float = 0.1) -> None:
        super().__init__()
        self.latent_weight = float(latent_weight)

    def forward(self, pred: dict[str, torch.Tensor], batch: dict[str, Any], tgt: torch.Tensor, free_index) -> dict:
        y = batch["logv_measured"]
        keep = tgt & torch.isfinite(y)
        mu, sd = pred["mean_log_v"], pred["sd_log_v"]
        d = torch.where(keep, y - mu, torch.zeros_like(mu))
        n = keep.sum().clamp_min(1)
        nll = ((0.5 * (d / sd) ** 2 + torch.log(sd)) * keep).sum() / n
        sq = (d * d).sum() / n
        latent = torch.zeros((), device=mu.device)
        if self.latent_weight > 0 and "z_pred" in pred and free_index:
            diff = (pred["z_pred"] - batch["z"])[..., free_index]
            latent = (diff * diff * tgt.unsqueeze(-1)).sum() / (tgt.sum().clamp_min(1) * len(free_index))
        return {"loss": nll + self.latent_weight * latent, "nll": nll, "logv_sq_err": sq, "latent_mse": latent}


class HybridTrainStep:
    """``(engine, batch) -> dict`` of detached loss terms; see the module docstring.

    Args:
        k_obs: observed scans per training subject, an int or a list to draw from uniformly per subject.
        images_only_fraction: share of training subjects whose observed scans are given without segmentations.
        grad_clip: max global gradient norm (0: measured, not clipped).
    """

    def __init__(self, k_obs: int | Sequence[int] = (1, 2), images_only_fraction: float = 0.25, grad_clip: float = 1.0):
        self.k_choices = torch.as_tensor([int(k_obs)] if isinstance(k_obs, int) else [int(k) for k in k_obs])
        if (self.k_choices < 1).any():
            raise ValueError(f"k_obs must be >= 1, got {k_obs}")
        self.images_only_fraction = float(images_only_fraction)
        self.grad_clip = float(grad_clip)

    def draw_k(self, mask: torch.Tensor) -> torch.Tensor:
        n = mask.long().sum(1).cpu()
        k = self.k_choices[torch.randint(len(self.k_choices), (len(n),))]
        return torch.minimum(k, (n - 1).clamp_min(1))

    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        batch = to_device(batchdata, engine.state.device)
        network, optimizer = engine.network, engine.optimizer
        network.train()
        optimizer.zero_grad(set_to_none=True)
        k = self.draw_k(batch["mask"])
        seg = torch.rand(len(k)) >= self.images_only_fraction
        with_latents = engine.loss_function.latent_weight > 0
        pred, _, tgt = run_forecast(network, batch, k, seg, with_latents)
        terms = engine.loss_function(pred, batch, tgt, network.free_index)
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
            _record_nonfinite(engine, list(batchdata["subject_id"]), loss.detach(), grad_norm)
        out = {key: v.detach() for key, v in terms.items()}
        out["grad_norm"] = grad_norm.detach()
        out["finite"] = finite
        return out


class HybridEvalStep:
    """``(engine, batch) -> dict``: forecasts from the first ``k_eval`` scans with segmentations (``mean_log_v``) and
    from the images alone (``images_only_mean_log_v``), the targets' measured ln V and mask."""

    def __init__(self, k_eval: int = 2) -> None:
        self.k_eval = int(k_eval)

    @torch.no_grad()
    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, Any]:
        batch = to_device(batchdata, engine.state.device)
        network = engine.network
        network.eval()
        k = torch.full((batch["mask"].shape[0],), self.k_eval, dtype=torch.long)
        hybrid, _, tgt = run_forecast(network, batch, k, True, with_latents=False)
        images, _, _ = run_forecast(network, batch, k, False, with_latents=False)
        return {
            "mean_log_v": hybrid["mean_log_v"],
            "images_only_mean_log_v": images["mean_log_v"],
            "target_log_v": batch["logv_measured"],
            "target_mask": tgt,
        }


class LastScanVolumeError(Metric):
    """Mean of 100 |exp(mu - y) - 1| over subjects at their last scan with a measured ln V (lower is better).

    ``pred_key`` selects the forecast in the evaluator's output (``mean_log_v`` or ``images_only_mean_log_v``).
    Subjects without a later measured scan do not count.
    """

    required_output_keys = None  # the evaluator's whole output dict goes to update()

    def __init__(self, pred_key: str = "mean_log_v", output_transform=lambda out: (out,), device="cpu") -> None:
        self.pred_key = pred_key
        super().__init__(output_transform=output_transform, device=device)

    def reset(self) -> None:
        self._sum, self._n = 0.0, 0

    def update(self, output: dict[str, Any] | tuple[dict[str, Any]]) -> None:
        output = output[0] if isinstance(output, (tuple, list)) else output  # Ignite hands over a 1-tuple
        y, mu = output["target_log_v"], output[self.pred_key]
        keep = output["target_mask"] & torch.isfinite(y)
        has = keep.any(1)
        if not has.any():
            return
        pos = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
        last = torch.where(keep, pos, torch.full_like(pos, -1)).amax(1)
        rows = torch.nonzero(has).flatten()
        d = (mu[rows, last[rows]] - y[rows, last[rows]]).double()
        self._sum += float((100.0 * (torch.exp(d) - 1.0).abs()).sum())
        self._n += int(rows.numel())

    def compute(self) -> float:
        return self._sum / self._n if self._n else float("nan")


def prepare_forecaster(network: nn.Module, data: Any, device: torch.device | str) -> nn.Module:
    """Store the training standardisation and read-out of ``data`` (:class:`~custom.ode.subjects.SubjectData`) in
    the network's buffers and move it to ``device``."""
    network.set_latent_space(**data.network_space())
    return network.to(device)


def parameter_groups(network: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on the covariate head and the latent ODE (shrinking covariate effects towards the
    population prior), none on the population prior and the noise level (decay would pull ln V0 towards 0)."""
    decay = [p for n, p in network.named_parameters() if p.requires_grad and n.startswith(("covariates.", "ode."))]
    rest = [p for n, p in network.named_parameters() if p.requires_grad and not n.startswith(("covariates.", "ode."))]
    return [{"params": decay, "weight_decay": float(weight_decay)}, {"params": rest, "weight_decay": 0.0}]
