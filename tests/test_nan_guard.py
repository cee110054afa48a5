"""NaN/Inf guard: an injected NaN batch skips the step (weights and optimizer untouched), is counted and logged
with its case ids; ``max_consecutive`` bad steps in a row stop the run with a clear error and the last good
weights on disk.

Uses the bundles' own step (:class:`custom.engines.train_step.VAETrainStep`), loss (``VAELoss``) and guard
(:class:`NonFiniteGuard`) in a MONAI ``SupervisedTrainer``, with a 2-latent linear VAE on 4x4x4x4 inputs so
that the test runs in about a second. Expected values are independent of the code: a skipped step must
leave every parameter bit-identical to its value before the step (an Adam step never does).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer
from torch import nn
from torch.utils.data import DataLoader

from custom.engines.handlers import NonFiniteGuard, NonFiniteTrainingError
from custom.engines.train_step import VAETrainStep
from custom.losses.elbo import VAELoss


class _TinyVAE(nn.Module):
    """x -> (x_hat, mu, logvar, z), the tuple the bundles' VAEs return."""

    def __init__(self, shape: tuple[int, ...] = (4, 4, 4, 4), z_dim: int = 2) -> None:
        super().__init__()
        n = int(torch.tensor(shape).prod())
        self.shape = shape
        self.enc = nn.Linear(n, 2 * z_dim)
        self.dec = nn.Linear(z_dim, n)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.enc(x.flatten(1)).chunk(2, dim=1)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return self.dec(z).view(-1, *self.shape), mu, logvar, z


def _items(bad: set[int], n: int = 6) -> list[dict]:
    gen = torch.Generator().manual_seed(0)
    items = []
    for i in range(n):
        x = torch.randn(4, 4, 4, 4, generator=gen)
        if i in bad:
            x[0, 0, 0, 0] = float("nan")
        items.append({"image": x, "case_id": f"BraTS-MEN-{i:05d}-000"})
    return items


def _trainer(items: list[dict], tmp: Path, max_consecutive: int) -> tuple[SupervisedTrainer, list[dict]]:
    torch.manual_seed(0)
    net = _TinyVAE()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    guard = NonFiniteGuard(
        max_consecutive=max_consecutive, log_path=str(tmp / "nonfinite_steps.jsonl"), ckpt_dir=str(tmp / "checkpoints")
    )
    trainer = SupervisedTrainer(
        device=torch.device("cpu"),
        max_epochs=1,
        network=net,
        optimizer=opt,
        loss_function=VAELoss(),
        train_data_loader=DataLoader(items, batch_size=1),
        iteration_update=VAETrainStep(amp=False, grad_clip=5.0),
        train_handlers=[guard],
        decollate=False,
        amp=False,
    )
    snapshots: list[dict] = []

    @trainer.on(Events.ITERATION_STARTED)
    def _before(engine: SupervisedTrainer) -> None:
        snapshots.append({"params": copy.deepcopy(net.state_dict()), "opt": copy.deepcopy(opt.state_dict())})

    return trainer, snapshots


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_nan_batch_is_skipped_counted_and_logged(tmp_path: Path) -> None:
    trainer, snaps = _trainer(_items(bad={2}), tmp_path, max_consecutive=3)
    trainer.run()
    net = trainer.network
    snaps.append({"params": copy.deepcopy(net.state_dict())})
    # iteration 3 (index 2) held the NaN: parameters and Adam moments unchanged across it ...
    assert _same(snaps[2]["params"], snaps[3]["params"])
    assert _same(snaps[2]["opt"]["state"][0], snaps[3]["opt"]["state"][0])
    # ... while good steps change them
    assert not _same(snaps[1]["params"], snaps[2]["params"])
    assert not _same(snaps[3]["params"], snaps[4]["params"])
    assert all(torch.isfinite(v).all() for v in net.state_dict().values())
    state = trainer.state.nonfinite
    assert state["count"] == 1 and state["consecutive"] == 0
    assert state["events"][0]["case_ids"] == ["BraTS-MEN-00002-000"] and state["events"][0]["iteration"] == 3
    logged = [json.loads(line) for line in (tmp_path / "nonfinite_steps.jsonl").read_text().splitlines()]
    assert [e["case_ids"] for e in logged] == [["BraTS-MEN-00002-000"]]
    assert trainer.state.metrics["train_epoch/nonfinite_total"] == 1.0


def test_consecutive_nan_batches_stop_with_last_good_state(tmp_path: Path) -> None:
    trainer, snaps = _trainer(_items(bad={1, 2, 3}), tmp_path, max_consecutive=3)
    with pytest.raises(NonFiniteTrainingError) as info:
        trainer.run()
    message = str(info.value)
    assert "3 consecutive" in message and "BraTS-MEN-00003-000" in message
    target = tmp_path / "checkpoints" / "nonfinite_last_good.pt"
    assert str(target) in message
    saved = torch.load(target, map_location="cpu", weights_only=False)
    # last good state = the weights after iteration 1, i.e. those seen before iteration 2 (the first NaN)
    assert _same(saved["network"], snaps[1]["params"])
    assert saved["iteration"] == 4
    logged = (tmp_path / "nonfinite_steps.jsonl").read_text().splitlines()
    assert len(logged) == 3


def test_a_good_step_resets_the_consecutive_count(tmp_path: Path) -> None:
    trainer, _ = _trainer(_items(bad={0, 1, 3, 4}), tmp_path, max_consecutive=3)
    trainer.run()  # never 3 in a row: must not stop
    assert trainer.state.nonfinite["count"] == 4
    assert trainer.state.iteration == 6
