"""model.pt selection: the best validation loss, counted only once the schedules reach full strength."""

from pathlib import Path
from types import SimpleNamespace

import torch

from custom.engines.handlers.checkpoints import TrainingCheckpoints


def _evaluator(epoch: int, loss: float) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={"val_epoch/loss": loss}))


def _run(tmp_path: Path, best_after_epoch: int, history: list[tuple[int, float]]) -> torch.Tensor | None:
    net = torch.nn.Linear(1, 1, bias=False)
    ck = TrainingCheckpoints(
        str(tmp_path / "ck"), str(tmp_path / "models"), {"network": net}, net, best_after_epoch=best_after_epoch
    )
    for epoch, loss in history:
        with torch.no_grad():
            net.weight.fill_(float(epoch))  # the weight records which epoch was saved
        ck._save_best(_evaluator(epoch, loss))
    path = tmp_path / "models" / "model.pt"
    return torch.load(path)["weight"] if path.exists() else None


def test_best_is_the_lowest_validation_loss(tmp_path: Path) -> None:
    # the loss rises once the DIP penalty starts at epoch 10 (the ELBO does not see the penalty)
    w = _run(tmp_path, 0, [(10, 1.0), (20, 1.3), (30, 1.2), (40, 1.25)])
    assert w is not None and float(w) == 10.0


def test_best_ignores_epochs_before_best_after_epoch(tmp_path: Path) -> None:
    w = _run(tmp_path, 25, [(10, 1.0), (20, 1.3), (30, 1.2), (40, 1.25)])
    assert w is not None and float(w) == 30.0


def test_no_best_before_the_bound_leaves_model_pt_to_the_end_of_training(tmp_path: Path) -> None:
    assert _run(tmp_path, 50, [(10, 1.0), (20, 0.9)]) is None
