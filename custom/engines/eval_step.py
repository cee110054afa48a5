"""One VAE evaluation iteration for MONAI's ``SupervisedEvaluator(iteration_update=...)``.

Reconstructs from the posterior mean (evaluation uses mu, never a sample), and also from z = 0
and from a posterior sample, because the collapse diagnostics compare the three
(a decoder that ignores z reconstructs equally well from z = 0).
Everything returned is per sample and on the CPU, for the diagnostics handler to aggregate.
"""

from __future__ import annotations

from typing import Any

import torch

from custom.engines.batch import autocast_context, batch_case_ids, batch_to_device
from custom.metrics.masked_image import masked_psnr_ssim
from custom.utils import as_bool


def brain_mask(x: torch.Tensor) -> torch.Tensor:
    """Brain mask ``[B,1,...]`` of skull-stripped, z-scored data: voxels where any channel is non-zero."""
    return (x != 0).any(dim=1, keepdim=True)


def masked_mse_per_sample(x: torch.Tensor, x_hat: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over brain voxels and channels, one value per sample ``[B]`` (fp32)."""
    diff2 = (x.float() - x_hat.float()) ** 2 * mask
    n = mask.flatten(1).sum(1).clamp_min(1) * x.shape[1]
    return diff2.flatten(1).sum(1) / n


class VAEEvalStep:
    """Callable ``(engine, batchdata) -> dict`` with per-sample latents, errors and reconstructions.

    Args:
        loss_function: the bundle's VAE loss (evaluated at beta = 1 for the validation loss).
        amp: bf16 autocast for the network.
        keep_images: how many cases of each evaluation pass keep their input and reconstruction (for figures).
    """

    def __init__(self, loss_function: Any, amp: bool = False, keep_images: int = 2) -> None:
        self.loss_function = loss_function
        self.amp = as_bool(amp)
        self.keep_images = int(keep_images)

    @torch.no_grad()
    def __call__(self, engine: Any, batchdata: dict[str, Any]) -> dict[str, Any]:
        device = engine.state.device
        batch = batch_to_device(batchdata, device)
        x = batch["image"].float()
        vae = engine.network
        vae.eval()
        with autocast_context(device, self.amp):
            mu, logvar = vae.encode(x)
            mu, logvar = mu.float(), logvar.float()
            x_mu = vae.decode(mu).float()
            x_z0 = vae.decode(torch.zeros_like(mu)).float()
            z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
            x_s = vae.decode(z).float()
        mask = brain_mask(x)
        out: dict[str, Any] = {
            "mu": mu.cpu(),
            "logvar": logvar.cpu(),
            "mse_mu": masked_mse_per_sample(x, x_mu, mask).cpu(),
            "mse_z0": masked_mse_per_sample(x, x_z0, mask).cpu(),
            "mse_sampled": masked_mse_per_sample(x, x_s, mask).cpu(),
            "case_id": batch_case_ids(batchdata),
            "subject_id": list(batchdata.get("subject_id", ["?"] * x.shape[0])),
        }
        factors = batch.get("factors")
        if isinstance(factors, torch.Tensor):
            out["factors"] = factors.float().cpu()
        # loss terms at beta = 1 (a fixed criterion, comparable across epochs whatever the schedule)
        terms = self.loss_function(x, x_mu, mu, logvar, beta=1.0)
        out["val_recon"] = terms["recon"].detach().float().cpu()
        out["val_kl"] = terms["kl_raw"].detach().float().cpu()
        out["image_metrics"] = masked_psnr_ssim(x, x_mu, mask)
        out["batch_size"] = int(x.shape[0])
        n_keep = max(0, self.keep_images - int(getattr(engine.state, "_kept_images", 0)))
        if engine.state.iteration == 1:
            engine.state._kept_images = 0
            n_keep = self.keep_images
        if n_keep > 0:
            k = min(n_keep, x.shape[0])
            meta_affine = _affines(batchdata, k)
            label = batchdata.get("label") if isinstance(batchdata, dict) else None
            seg = None
            if isinstance(label, torch.Tensor) and label.ndim == 5:
                seg = [v[0] for v in label[:k].detach().cpu().numpy()]  # [X, Y, Z] each: the figures' slice centre
            out["kept"] = {
                "x": x[:k].cpu(),
                "x_hat": x_mu[:k].cpu(),
                "case_id": out["case_id"][:k],
                "affine": meta_affine,
                "seg": seg,
            }
            engine.state._kept_images = int(getattr(engine.state, "_kept_images", 0)) + k
        return out


def _affines(batchdata: dict[str, Any], k: int) -> list[Any]:
    """World affines of the first ``k`` images of a batch (MetaTensor metadata), or identities."""
    image = batchdata.get("image")
    affine = getattr(image, "affine", None)
    if affine is None:
        return [None] * k
    affine = affine if affine.ndim == 3 else affine.unsqueeze(0).expand(k, -1, -1)
    return [affine[i].cpu().numpy() for i in range(k)]
