"""The latent_ode bundle's training workflow: fit, evaluate against baselines, save, plot.

Called from ``bundles/latent_ode/configs/train.json`` (``"_target_": "custom.ode.workflow.train_and_evaluate"``).
The ODE is fitted on latent trajectories (a few hundred subjects at most), so a plain full-batch loop
(:func:`custom.ode.train.fit_latent_ode`) is used rather than an Ignite engine over a data loader; the
per-epoch history still goes to TensorBoard and a tidy CSV like the encoder bundles'.
"""

from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

#: constructor arguments saved next to the weights (models/ode_config.json)
_CONFIG_KEYS = (
    "z_dim",
    "vol_index",
    "hidden",
    "enc_hidden",
    "method",
    "rtol",
    "atol",
    "step_size",
    "adjoint",
    "encoder_features",
)


def save_model(model: Any, model_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model.pt`` (state dict incl. latent standardisation and readout) and ``ode_config.json``."""
    d = Path(model_dir)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {
        "z_dim": model.z_dim,
        "vol_index": model.vol_index,
        "hidden": model.dynamics.hidden if hasattr(model.dynamics, "hidden") else None,
        "method": model.method,
        "rtol": model.rtol,
        "atol": model.atol,
        "step_size": model.step_size,
        "adjoint": bool(model.adjoint),
        "encoder_features": getattr(model.param_encoder, "features", "volume"),
    }
    cfg.update(extra or {})
    tmp = d / "model.pt.tmp"
    torch.save(model.state_dict(), tmp)
    tmp.replace(d / "model.pt")
    (d / "ode_config.json").write_text(json.dumps(cfg, indent=1))
    return d / "model.pt"


def load_model(model_dir: str | Path, device: str | torch.device = "cpu") -> Any:
    """Rebuild a :class:`~custom.ode.model.LatentODEForecaster` saved by :func:`save_model`."""
    from custom.ode.model import LatentODEForecaster

    d = Path(model_dir)
    cfg = json.loads((d / "ode_config.json").read_text())
    kwargs = {k: cfg[k] for k in _CONFIG_KEYS if k in cfg and cfg[k] is not None}
    model = LatentODEForecaster(**kwargs)
    model.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    return model.to(device).eval()


def train_and_evaluate(
    trajectories: str,
    output_dir: str,
    model_dir: str,
    k_obs: int = 2,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-2,
    method: str = "dopri5",
    adjoint: bool = False,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    step_size: float | None = None,
    hidden: int = 64,
    seed: int = 0,
    device: str | torch.device = "cpu",
    eval_split: str = "test",
    n_plot: int = 12,
    encoder_features: str = "all",
) -> dict[str, Any]:
    """Fit the latent ODE on the train split, score it and the baselines on ``eval_split``, save everything.

    ``encoder_features``: latent coordinates the per-subject Gompertz parameter encoder reads ("all" or
    "volume"; see :class:`~custom.ode.subject_params.SubjectParamEncoder`).

    Writes ``<output_dir>/metrics.json`` (the table ``method -> metrics`` plus headline numbers),
    ``metrics.csv`` (per-epoch history), ``growth.png`` and TensorBoard events; the weights go to
    ``<model_dir>/model.pt`` with ``ode_config.json``.
    """
    from torch.utils.tensorboard import SummaryWriter

    from custom.ode.data import load_trajectories, volume_index
    from custom.ode.evaluate import evaluate_forecasts, growth_plot_rows
    from custom.ode.train import fit_latent_ode
    from custom.plots.growth import plot_growth
    from custom.utils import as_bool

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    traj = load_trajectories(trajectories)
    writer = SummaryWriter(str(out / "tensorboard"))

    def log_fn(row: dict) -> None:
        for k, v in row.items():
            if k != "epoch" and isinstance(v, (int, float)) and np.isfinite(v):
                writer.add_scalar(f"ode/{k}", v, row["epoch"])

    t0 = time.time()
    model, history = fit_latent_ode(
        traj,
        k_obs=int(k_obs),
        epochs=int(epochs),
        lr=float(lr),
        weight_decay=float(weight_decay),
        method=str(method),
        adjoint=as_bool(adjoint),
        rtol=float(rtol),
        atol=float(atol),
        step_size=None if step_size in (None, "None", "null") else float(step_size),
        hidden=int(hidden),
        seed=int(seed),
        device=device,
        log_fn=log_fn,
        encoder_features=str(encoder_features),
    )
    train_s = time.time() - t0
    writer.close()
    model = model.cpu()
    save_model(model, model_dir, {"hidden": int(hidden), "k_obs": int(k_obs)})
    _write_history(out / "metrics.csv", history)

    table = evaluate_forecasts(model, traj, split=eval_split, k_obs=int(k_obs))
    rows = growth_plot_rows(model, traj, split=eval_split, k_obs=int(k_obs), n_subjects=int(n_plot))
    plot_growth(
        rows, out / "growth.png", title=f"latent ODE forecasts from the first {k_obs} scans ({eval_split} subjects)"
    )
    best = table.get("latent_ode", {})
    baselines = {k: v for k, v in table.items() if k not in ("latent_ode", "oracle")}
    beats_all = all(
        best.get("rel_vol_err_pct_last", np.inf) < v.get("rel_vol_err_pct_last", np.inf) for v in baselines.values()
    )
    metrics = {
        "table": table,
        "split": eval_split,
        "k_obs": int(k_obs),
        "method": method,
        "adjoint": as_bool(adjoint),
        "n_subjects_plotted": int(len(rows)),
        "n_subjects_eval": int(best.get("n_subjects", len(rows))),
        "has_volume_coordinate": volume_index(traj) is not None,
        "train_seconds": train_s,
        "epochs": int(epochs),
        "seconds_per_epoch": train_s / max(1, int(epochs)),
        "rel_vol_err_pct_last": best.get("rel_vol_err_pct_last"),
        "alpha_spearman": best.get("alpha_spearman"),
        "beats_every_baseline_at_last_timepoint": bool(beats_all),
        "example_subject": rows[0]["subject_id"] if rows else None,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    logger.info(
        "latent ODE: rel. volume error at last timepoint %.1f%% (baselines: %s); alpha Spearman %s",
        best.get("rel_vol_err_pct_last", float("nan")),
        ", ".join(f"{k} {v.get('rel_vol_err_pct_last', float('nan')):.1f}%" for k, v in baselines.items()),
        best.get("alpha_spearman"),
    )
    return metrics


def _write_history(path: Path, history: list[dict]) -> None:
    if not history:
        return
    cols: list[str] = []
    for row in history:
        cols += [k for k in row if k not in cols]
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=cols, restval="")
        w.writeheader()
        w.writerows(history)


def evaluate_saved(
    trajectories: str, output_dir: str, model_dir: str, k_obs: int = 2, eval_split: str = "test", n_plot: int = 12
) -> dict[str, Any]:
    """Score a saved model and the baselines on ``eval_split``; write metrics.json and growth.png."""
    from custom.ode.data import load_trajectories
    from custom.ode.evaluate import evaluate_forecasts, growth_plot_rows
    from custom.plots.growth import plot_growth

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    traj = load_trajectories(trajectories)
    model = load_model(model_dir)
    table = evaluate_forecasts(model, traj, split=eval_split, k_obs=int(k_obs))
    rows = growth_plot_rows(model, traj, split=eval_split, k_obs=int(k_obs), n_subjects=int(n_plot))
    plot_growth(rows, out / "growth.png", title=f"latent ODE forecasts ({eval_split} subjects)")
    metrics = {"table": table, "split": eval_split, "k_obs": int(k_obs)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1, default=float))
    return metrics


def solver_benchmark(
    trajectories: str,
    output_dir: str,
    epochs: int = 100,
    k_obs: int = 2,
    seed: int = 0,
    eval_split: str = "test",
    step_size: float = 0.1,
) -> str:
    """Time per training epoch and forecast error for dopri5, rk4 (fixed step) and dopri5 + adjoint.

    Each solver trains the same model for ``epochs`` epochs on the same cached trajectories; the table
    (markdown + JSON in ``output_dir``) is what the bundle's default solver is chosen by.
    """
    from custom.ode.data import load_trajectories
    from custom.ode.evaluate import evaluate_forecasts
    from custom.ode.train import fit_latent_ode

    traj = load_trajectories(trajectories)
    rows = []
    for name, kw in (
        ("dopri5", {"method": "dopri5"}),
        ("rk4 (h=%.2g)" % step_size, {"method": "rk4", "step_size": step_size}),
        ("dopri5 + adjoint", {"method": "dopri5", "adjoint": True}),
    ):
        t0 = time.time()
        model, _ = fit_latent_ode(traj, k_obs=k_obs, epochs=epochs, seed=seed, **kw)
        sec = (time.time() - t0) / epochs
        m = evaluate_forecasts(model.cpu(), traj, split=eval_split, k_obs=k_obs, include_baselines=False)["latent_ode"]
        rows.append(
            {
                "solver": name,
                "seconds_per_epoch": sec,
                "rel_vol_err_pct_last": m.get("rel_vol_err_pct_last"),
                "logvol_mae": m.get("logvol_mae"),
                "latent_mse": m.get("latent_mse"),
            }
        )
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "solver_benchmark.json").write_text(json.dumps(rows, indent=1))
    lines = [
        "| solver | s / epoch | rel. volume error at last scan (%) | log-volume MAE | latent MSE |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['solver']} | {r['seconds_per_epoch']:.3f} | {r['rel_vol_err_pct_last']:.2f} | {r['logvol_mae']:.3f} | {r['latent_mse']:.3f} |"
        for r in rows
    ]
    table = "\n".join(lines)
    (out / "solver_benchmark.md").write_text(table + "\n")
    print(table)
    return table
