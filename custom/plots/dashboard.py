"""Training dashboard: one PNG summarising a tidy per-epoch metrics CSV.

The CSV has one row per epoch, an ``epoch`` column and metric columns named ``<group>/<name>``
(``train_epoch/*``, ``val_epoch/*``, ``sched/*``, ``diag/*``, ``probe/r2_*``). Validation and
diagnostic columns are empty on epochs where they were not computed; empty cells are read as NaN
and each curve is drawn through its finite points only. A panel whose columns are all missing is
left out and the grid shrinks to the panels that remain.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Callable

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from custom.plots.style import save_figure  # noqa: E402

Table = dict[str, np.ndarray]

#: Loss-term columns of panel 1 with their legend labels (train curves).
LOSS_TERMS: tuple[tuple[str, str], ...] = (
    ("train_epoch/loss", "total"),
    ("train_epoch/recon", "recon"),
    ("train_epoch/kl_raw", "KL raw"),
    ("train_epoch/kl_constrained", "KL constrained"),
    ("train_epoch/cov_penalty", "cov penalty"),
    ("train_epoch/sup_loss", "supervised"),
)

#: Lowest probe R² the probe panel shows; values below (a probe worse than the mean) are drawn on this line.
PROBE_FLOOR: float = -0.1

#: A panel's y-axis goes logarithmic when its positive series' medians span more than this factor.
LOG_RATIO: float = 30.0


def read_metrics_csv(path: str | Path) -> Table:
    """Read a tidy metrics CSV into ``{column: float array}``; empty or non-numeric cells become NaN.

    When there is no ``epoch`` column, one is made from the row number (1-based).
    """
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: list[str] = list(rows[0].keys()) if rows else []
    table: Table = {}
    for col in columns:
        if col is None:
            continue
        values = []
        for row in rows:
            cell = (row.get(col) or "").strip()
            try:
                values.append(float(cell))
            except ValueError:
                values.append(math.nan)
        table[col.strip()] = np.asarray(values, dtype=np.float64)
    if "epoch" not in table or not np.isfinite(table["epoch"]).any():
        table["epoch"] = np.arange(1, len(rows) + 1, dtype=np.float64)
    return table


def _has(table: Table, col: str) -> bool:
    """True when ``col`` exists and holds at least one finite value."""
    return col in table and bool(np.isfinite(table[col]).any())


def _series(table: Table, col: str, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(epochs, values) at the finite (and, with ``positive``, > 0) entries of ``col``."""
    y = table[col]
    keep = np.isfinite(y) & np.isfinite(table["epoch"])
    if positive:
        keep &= y > 0
    return table["epoch"][keep], y[keep]


def _wants_log(table: Table, cols: list[str]) -> bool:
    """Log scale when the positive values' medians (or overall range) span more than LOG_RATIO.

    Zeros and negatives cannot be drawn on a log axis: they are ignored here and dropped from the
    curves (a series with no positive value is flagged in its legend label by the caller).
    """
    medians, lows, highs = [], [], []
    for col in cols:
        _, y = _series(table, col, positive=True)
        if y.size == 0:
            continue
        medians.append(np.median(y))
        lows.append(y.min())
        highs.append(y.max())
    if not medians:
        return False
    return max(medians) / min(medians) > LOG_RATIO or max(highs) / min(lows) > LOG_RATIO * 10


def _plot(ax: plt.Axes, table: Table, col: str, label: str, positive: bool = False, **style) -> None:
    """Draw one column as a line with small markers (markers keep sparse validation points visible)."""
    x, y = _series(table, col, positive)
    style.setdefault("marker", "o")
    style.setdefault("markersize", 3 if x.size < 60 else 0)
    style.setdefault("linewidth", 1.4)
    ax.plot(x, y, label=label, **style)


def _finish(ax: plt.Axes, title: str, ylabel: str, twin: plt.Axes | None = None, legend: bool = True) -> None:
    """Title, axis labels, grid and a merged legend (main + twin axis) for one panel."""
    ax.set_title(title, fontsize=10, fontweight="bold")
    ax.set_xlabel("epoch", fontsize=8.5)
    ax.set_ylabel(ylabel, fontsize=8.5)
    ax.grid(True, alpha=0.3, linewidth=0.6)
    ax.tick_params(labelsize=7.5)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True, nbins=6))
    if twin is not None:
        twin.tick_params(labelsize=7.5)
    if legend:
        handles, labels = ax.get_legend_handles_labels()
        if twin is not None:
            h2, l2 = twin.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        if handles:
            # Below the axes: twin-axis curves cannot be avoided by loc="best", and a legend outside
            # the data never hides a curve.
            ax.legend(
                handles,
                labels,
                fontsize=7,
                loc="upper center",
                bbox_to_anchor=(0.5, -0.16),
                ncol=min(3, len(handles)),
                frameon=False,
                handlelength=1.8,
                columnspacing=1.0,
            )


def _panel_losses(ax: plt.Axes, t: Table) -> None:
    """Panel 1: train loss terms (log y when their scales differ a lot) and validation loss markers."""
    cols = [c for c, _ in LOSS_TERMS if _has(t, c)]
    log = _wants_log(t, cols + (["val_epoch/loss"] if _has(t, "val_epoch/loss") else []))
    for col, label in LOSS_TERMS:
        if col in cols:
            hidden = log and _series(t, col, positive=True)[1].size == 0
            _plot(ax, t, col, f"train {label}" + (" (≤0, not shown)" if hidden else ""), positive=log)
    if _has(t, "val_epoch/loss"):
        x, y = _series(t, "val_epoch/loss", positive=log)
        ax.plot(x, y, linestyle="none", marker="D", markersize=5, color="black", label="val total")
    if log:
        ax.set_yscale("log")
    _finish(ax, "Loss terms", "loss (log)" if log else "loss")


def _panel_beta(ax: plt.Axes, t: Table) -> None:
    """Panel 2: beta (and lambda scale) on the left; KL raw against the expected-KL floor on the right.

    The point of the panel: the constrained KL only bites while KL raw sits above the floor, so
    seeing both curves together with the beta schedule tells whether the capacity target is met.
    """
    for col, label, colour in (("sched/beta", "β", "tab:blue"), ("sched/lambda_scale", "λ scale", "tab:cyan")):
        if _has(t, col):
            _plot(ax, t, col, label, color=colour)
    twin = None
    if _has(t, "sched/expected_kl_floor") or _has(t, "train_epoch/kl_raw"):
        twin = ax.twinx()
        if _has(t, "train_epoch/kl_raw"):
            _plot(twin, t, "train_epoch/kl_raw", "KL raw (right)", color="tab:red")
        if _has(t, "sched/expected_kl_floor"):
            _plot(twin, t, "sched/expected_kl_floor", "KL floor (right)", color="tab:red", linestyle="--", marker="")
        twin.set_ylabel("KL (nats)", fontsize=8.5, color="tab:red")
        twin.tick_params(axis="y", colors="tab:red")
    _finish(ax, "β schedule vs KL floor", "weight", twin)


def _panel_single(
    col: str, title: str, ylabel: str, colour: str, from_zero: bool = False
) -> Callable[[plt.Axes, Table], None]:
    """Panels 3 and 4: one positive quantity (learning rate, gradient norm), log y when it spans decades.
    ``from_zero``: a linear axis from 0 (a constant tumour weight of 5 then reads as 5, not as a flat line in a
    +-0.2 band)."""

    def draw(ax: plt.Axes, t: Table) -> None:
        log = _wants_log(t, [col]) and not from_zero
        _plot(ax, t, col, ylabel, positive=log, color=colour)
        if log:
            ax.set_yscale("log")
        elif from_zero:
            ax.set_ylim(0.0, 1.1 * float(np.nanmax(_series(t, col)[1])))
        else:
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 4), useMathText=True)
        _finish(ax, title, ylabel, legend=False)

    return draw


def _panel_active_units(ax: plt.Axes, t: Table) -> None:
    """Panel 5: fraction of active latent units (left, 0..1) and their count (right)."""
    if _has(t, "diag/au_frac"):
        _plot(ax, t, "diag/au_frac", "AU fraction", color="tab:green")
        ax.set_ylim(-0.03, 1.05)
    twin = None
    if _has(t, "diag/au_count"):
        twin = ax.twinx()
        _plot(twin, t, "diag/au_count", "AU count (right)", color="tab:olive", linestyle="--", marker="s")
        twin.set_ylabel("active units", fontsize=8.5)
        twin.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        n_units = _units(t)
        if n_units is not None and _has(t, "diag/au_frac"):  # one scale in two units: the two lines coincide
            lo, hi = ax.get_ylim()
            twin.set_ylim(lo * n_units, hi * n_units)
    _finish(ax, "Active units", "fraction", twin)


def _units(t: Table) -> float | None:
    """Latent size implied by the table (``au_count / au_frac`` on a row where both are known and non-zero)."""
    count, frac = np.asarray(t.get("diag/au_count", []), float), np.asarray(t.get("diag/au_frac", []), float)
    ok = np.isfinite(count) & np.isfinite(frac) & (frac > 0)
    return float(np.round(count[ok][0] / frac[ok][0])) if ok.any() else None


def _panel_probes(ax: plt.Axes, t: Table) -> None:
    """Panel 6: linear-probe R^2 of each segmentation factor from the latents (ylim [-0.1, 1])."""
    cols = [c for c in t if c.startswith("probe/r2_") and _has(t, c)]
    cmap = plt.get_cmap("tab20" if len(cols) > 10 else "tab10")  # 13 factors + the centroid mean: no repeats
    floor = PROBE_FLOOR
    # R^2 below the floor (a probe worse than the mean) is drawn on the floor, not off the panel (NaN stays NaN)
    shown = {"epoch": t["epoch"], **{c: np.maximum(t[c], floor) for c in cols}}  # np.maximum keeps NaN
    clipped = any(bool(np.any(t[c] < floor)) for c in cols)  # NaN compares False
    for i, col in enumerate(cols):
        _plot(ax, shown, col, col[len("probe/r2_") :], color=cmap(i % cmap.N))
    ax.set_ylim(floor - 0.03, 1.0)
    ax.axhline(0.0, color="grey", linewidth=0.8)
    if clipped:
        ax.text(
            0.98,
            0.96,
            f"R² < {floor:g} drawn at {floor:g}",
            transform=ax.transAxes,
            fontsize=7,
            color="grey",
            ha="right",
            va="top",
        )
    _finish(ax, "Probe R² per factor", "R²")


def _panel_quality(ax: plt.Axes, t: Table) -> None:
    """Panel 7: validation SSIM (left) and PSNR in dB (right)."""
    if _has(t, "val_epoch/ssim_mean"):
        _plot(ax, t, "val_epoch/ssim_mean", "SSIM", color="tab:purple")
    twin = None
    if _has(t, "val_epoch/psnr_mean"):
        twin = ax.twinx()
        _plot(twin, t, "val_epoch/psnr_mean", "PSNR (right)", color="tab:brown", linestyle="--", marker="s")
        twin.set_ylabel("PSNR (dB)", fontsize=8.5)
    _finish(ax, "Validation image quality", "SSIM", twin)


def _panel_z0(ax: plt.Axes, t: Table) -> None:
    """Panel 8: reconstruction MSE decoding z = 0 vs the mean mu (the collapse ablation: equal means z is ignored)."""
    cols = [c for c in ("diag/recon_z0_mse", "diag/recon_mu_mse") if _has(t, c)]
    log = _wants_log(t, cols)
    if "diag/recon_z0_mse" in cols:
        _plot(ax, t, "diag/recon_z0_mse", "decode z = 0", positive=log, color="tab:orange")
    if "diag/recon_mu_mse" in cols:
        _plot(ax, t, "diag/recon_mu_mse", "decode μ (mean)", positive=log, color="tab:blue", linestyle="--")
    if log:
        ax.set_yscale("log")
    _finish(ax, "z = 0 ablation vs μ reconstruction", "MSE (brain)")


def _weights_tumour(t: Table) -> bool:
    """True when ``sched/tumour_weight`` departs from 1 (the plain likelihood) at some epoch."""
    return _has(t, "sched/tumour_weight") and bool(np.any(_series(t, "sched/tumour_weight")[1] != 1.0))


def _panel_specs(t: Table) -> list[Callable[[plt.Axes, Table], None]]:
    """The panels (in the fixed order) whose columns are present in ``t``."""
    specs: list[tuple[bool, Callable[[plt.Axes, Table], None]]] = [
        (any(_has(t, c) for c, _ in LOSS_TERMS) or _has(t, "val_epoch/loss"), _panel_losses),
        (any(_has(t, c) for c in ("sched/beta", "sched/lambda_scale", "sched/expected_kl_floor")), _panel_beta),
        (
            _weights_tumour(t),
            _panel_single("sched/tumour_weight", "Tumour weight in the likelihood", "w", "tab:brown", from_zero=True),
        ),
        (_has(t, "sched/lr"), _panel_single("sched/lr", "Learning rate", "lr", "tab:gray")),
        (
            _has(t, "train_epoch/grad_norm"),
            _panel_single("train_epoch/grad_norm", "Gradient norm", "‖g‖₂", "tab:red"),
        ),
        (_has(t, "diag/au_frac") or _has(t, "diag/au_count"), _panel_active_units),
        (any(c.startswith("probe/r2_") and _has(t, c) for c in t), _panel_probes),
        (_has(t, "val_epoch/ssim_mean") or _has(t, "val_epoch/psnr_mean"), _panel_quality),
        (_has(t, "diag/recon_z0_mse") or _has(t, "diag/recon_mu_mse"), _panel_z0),
    ]
    return [draw for present, draw in specs if present]


def plot_dashboard(metrics_csv: str | Path, out_png: str | Path, title: str = "") -> str:
    """Write a multi-panel training dashboard PNG from a tidy per-epoch metrics CSV.

    Panels (each drawn only when its columns exist and hold a finite value):
      1. loss terms: train total/recon/KL raw/KL constrained/cov penalty/supervised, validation loss
         as black diamonds; log y when the terms differ by more than ``LOG_RATIO``;
      2. beta (and lambda scale) schedule with KL raw and the expected-KL floor on a twin axis;
      2b. the tumour weight of the likelihood, when it is not 1 throughout;
      3. learning rate; 4. gradient norm (log y when spanning decades);
      5. active-unit fraction (count on a twin axis);
      6. linear-probe R^2 per factor (``probe/r2_*``, ylim [-0.1, 1]);
      7. validation SSIM and PSNR (twin axis);
      8. reconstruction MSE from z = 0 vs from mu (collapse ablation).
    Panels flow into a grid of at most 4 columns. A CSV with no known column yields a figure that
    says so rather than an error, so a training run never fails on its dashboard.

    Returns:
        ``str(out_png)``; parent directories are created.
    """
    table = read_metrics_csv(metrics_csv)
    panels = _panel_specs(table)
    n = max(len(panels), 1)
    ncols = min(4, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(4.4 * ncols, 3.9 * nrows + (0.4 if title else 0.1)),
        squeeze=False,
        layout="constrained",
    )
    fig.get_layout_engine().set(w_pad=0.12, wspace=0.06)
    flat = list(axes.ravel())
    for ax, draw in zip(flat, panels):
        draw(ax, table)
    for ax in flat[len(panels) :]:
        ax.set_axis_off()
    if not panels:
        flat[0].text(0.5, 0.5, "no known metric columns", ha="center", va="center", fontsize=11)
    if title:
        fig.suptitle(title, fontsize=13, fontweight="bold")
    return save_figure(fig, out_png)
