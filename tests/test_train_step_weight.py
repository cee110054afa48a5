"""VAETrainStep's tumour_weight reaches the likelihood: the recon term equals the hand-weighted sum."""

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from custom.engines.train_step import VAETrainStep
from custom.losses.elbo import VAELoss


class _ZeroVAE(nn.Module):
    """Reconstructs 0 everywhere (plus a learnable scalar so the optimizer has a parameter)."""

    def __init__(self) -> None:
        super().__init__()
        self.b = nn.Parameter(torch.zeros(()))

    def forward(self, x: torch.Tensor):
        mu = torch.zeros(x.shape[0], 2) + 0 * self.b
        return torch.zeros_like(x) + 0 * self.b, mu, torch.zeros_like(mu), mu


def _engine() -> SimpleNamespace:
    net = _ZeroVAE()
    return SimpleNamespace(
        network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1),
        loss_function=VAELoss(recon_reduction="sum"),
        state=SimpleNamespace(device=torch.device("cpu"), loss_kwargs={"beta": 1.0}, epoch=1, iteration=1),
    )


@pytest.mark.parametrize("weight", [1.0, 5.0])
def test_tumour_weight_scales_the_tumour_voxels_squared_error(weight: float) -> None:
    x = torch.ones(1, 1, 2, 2, 2)  # squared error 1 per voxel against the zero reconstruction
    label = torch.zeros(1, 1, 2, 2, 2, dtype=torch.uint8)
    label[0, 0, 0, 0, :] = 3  # two tumour voxels
    out = VAETrainStep(tumour_weight=weight)(_engine(), {"image": x, "label": label})
    assert float(out["recon"]) == pytest.approx((6 + 2 * weight) / 2.0)


def test_tumour_weight_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        VAETrainStep(tumour_weight=0.5)


def test_scheduled_tumour_weight_replaces_the_constant_and_stays_out_of_the_loss() -> None:
    # the schedule handler puts the epoch's weight in loss_kwargs; the step uses it and does not pass it on
    x = torch.ones(1, 1, 2, 2, 2)
    label = torch.zeros(1, 1, 2, 2, 2, dtype=torch.uint8)
    label[0, 0, 0, 0, :] = 3
    engine = _engine()
    engine.state.loss_kwargs = {"beta": 1.0, "tumour_weight": 3.0}
    out = VAETrainStep(tumour_weight=20.0)(engine, {"image": x, "label": label})
    assert float(out["recon"]) == pytest.approx((6 + 2 * 3.0) / 2.0)
    assert engine.state.loss_kwargs == {"beta": 1.0, "tumour_weight": 3.0}  # the engine's state is not consumed


def test_balanced_mode_reaches_the_likelihood() -> None:
    # scan 0: 2 tumour voxels, scan 1: 6; n_mean = 4, weight 5 (extra 4): scan 0's voxels 1 + 4 * 4/2 = 9,
    # scan 1's 1 + 4 * 4/6 = 11/3. Squared error 1 everywhere: recon = mean over the 2 scans of sum(w) / 2.
    x = torch.ones(2, 1, 2, 2, 2)
    label = torch.zeros(2, 1, 2, 2, 2, dtype=torch.uint8)
    label[0, 0, 0, 0, :] = 3
    label[1, 0, :, :, 0] = 1
    label[1, 0, 0, :, 1] = 1
    per_scan = [(6 + 2 * 9.0) / 2.0, (2 + 6 * 11.0 / 3.0) / 2.0]  # 12 and 12: both tumours count alike
    out = VAETrainStep(tumour_weight=5.0, tumour_weight_mode="balanced")(_engine(), {"image": x, "label": label})
    assert float(out["recon"]) == pytest.approx(sum(per_scan) / 2.0)
    voxel = VAETrainStep(tumour_weight=5.0)(_engine(), {"image": x, "label": label})
    assert float(voxel["recon"]) == pytest.approx(((6 + 2 * 5.0) + (2 + 6 * 5.0)) / 2.0 / 2.0)  # same batch total
    with pytest.raises(ValueError):
        VAETrainStep(tumour_weight_mode="per_scan")


def test_batch_augment_runs_before_the_forward_and_warps_the_weighted_label() -> None:
    # a stand-in augmentation that marks every voxel tumour: the weight must follow the warped label
    seen = {}

    def augment(image, label):
        seen["shapes"] = (tuple(image.shape), tuple(label.shape))
        return image, torch.full_like(label, 3)

    x = torch.ones(1, 1, 2, 2, 2)
    label = torch.zeros(1, 1, 2, 2, 2, dtype=torch.uint8)
    out = VAETrainStep(tumour_weight=5.0, augment=augment)(_engine(), {"image": x, "label": label})
    assert seen["shapes"] == ((1, 1, 2, 2, 2), (1, 1, 2, 2, 2))
    assert float(out["recon"]) == pytest.approx(8 * 5.0 / 2.0)
