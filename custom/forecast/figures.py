"""Figures of the forecast report: error by horizon per method, reliability of growth probabilities, and a grid
of subjects' forecasts with intervals against the measured and true volumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from custom.forecast.conformal import reliability_table
from custom.plots.style import plt, save_figure

HORIZON_ORDER: tuple[str, ...] = ("<=1y", "1-2y", ">2y", "last")


def plot_error_by_horizon(metrics: pd.DataFrame, out_png: str | Path) -> str:
    """Mean relative volume error (95 % CI) by horizon bin, one line per method, one panel per k_obs."""
    m = metrics[(metrics["metric"] == "mean_rel_err") & (metrics["stratum"] == "all")]
    ks = sorted(m["k_obs"].unique())
    fig, axes = plt.subplots(1, len(ks), figsize=(4.2 * len(ks), 3.4), squeeze=False, sharey=True)
    x = np.arange(len(HORIZON_ORDER))
    for ax, k in zip(axes[0], ks):
        for i, (method, g) in enumerate(m[m["k_obs"] == k].groupby("method", sort=False)):
            g = g.set_index("horizon").reindex(list(HORIZON_ORDER))
            v = 100 * g["value"].to_numpy(float)
            err = np.abs(100 * g[["ci_lo", "ci_hi"]].to_numpy(float).T - v)
            ax.errorbar(x + 0.06 * (i - 2), v, yerr=err, marker="o", ms=3, capsize=2, lw=1, label=method)
        ax.set_xticks(x, list(HORIZON_ORDER))
        ax.set_title(f"k_obs = {k}")
        ax.set_xlabel("years after the last observed scan")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("mean relative volume error (%)")
    axes[0][-1].legend(fontsize=7, frameon=False)
    return save_figure(fig, out_png)


def plot_reliability(rows: pd.DataFrame, out_png: str | Path, n_bins: int = 10) -> str | None:
    """Reliability diagram of P(growth > 15 %) and P(+40 %) per method (rows with probabilities only)."""
    have = rows[np.isfinite(rows["brier15"].to_numpy(dtype=float))] if "brier15" in rows else rows.iloc[:0]
    if have.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(8.4, 3.8))
    for ax, (ev, label) in zip(axes, (("event15", "growth > 15 %"), ("event40", "volume +40 % (RANO)"))):
        pcol = "p_growth15" if ev == "event15" else "p_prog40"
        for method, g in have.groupby("method", sort=False):
            t = reliability_table(g[pcol].to_numpy(float), g[ev].to_numpy(float), n_bins)
            ax.plot(t["p_mean"], t["observed"], marker="o", ms=3, lw=1, label=method)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"forecast P({label})")
        ax.set_ylabel("observed frequency")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, frameon=False)
    return save_figure(fig, out_png)


def plot_subject_forecasts(
    forecasts: dict[str, pd.DataFrame],
    rows: pd.DataFrame,
    observed: pd.DataFrame,
    out_png: str | Path,
    n_subjects: int = 6,
    k_obs: int | None = None,
    interval_method: str | None = None,
) -> str:
    """Grid of subjects (spread over the change-rate range): observed scans, measured and true target volumes,
    each method's forecast, and the 80 / 90 % intervals of ``interval_method`` (default: the first with intervals)."""
    k = int(k_obs if k_obs is not None else max(observed["k_obs"]))
    first = rows[(rows["method"] == next(iter(forecasts))) & (rows["k_obs"] == k)]
    last = first[first["is_last"]].copy()
    last["change"] = np.log(last["volume_ml"] / last["last_obs_volume_ml"])
    order = last.sort_values("change")["subject_id"].to_list()
    pick = [order[int(i)] for i in np.linspace(0, len(order) - 1, min(n_subjects, len(order)))]
    if interval_method is None:
        interval_method = next((m for m, f in forecasts.items() if "lo90_ml" in f), None)
    ncol = 3
    nrow = int(np.ceil(len(pick) / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.0 * ncol, 3.0 * nrow), squeeze=False)
    for ax, sid in zip(axes.ravel(), pick):
        o = observed[(observed["subject_id"] == sid) & (observed["k_obs"] == k)]
        tr = first[first["subject_id"] == sid]
        if interval_method is not None:
            f = forecasts[interval_method]
            f = f[(f["subject_id"] == sid) & (f["k_obs"] == k)]
            ax.fill_between(f["time_years"], f["lo90_ml"], f["hi90_ml"], color="C0", alpha=0.15, lw=0)
            ax.fill_between(f["time_years"], f["lo80_ml"], f["hi80_ml"], color="C0", alpha=0.25, lw=0)
        for i, (method, f) in enumerate(forecasts.items()):
            f = f[(f["subject_id"] == sid) & (f["k_obs"] == k)]
            t = np.concatenate([[o["time_years"].iloc[-1]], f["time_years"]])
            v = np.concatenate([[o["volume_ml"].iloc[-1]], f["pred_volume_ml"]])
            ax.plot(t, v, lw=1, color=f"C{i}", label=method)
        ax.plot(o["time_years"], o["volume_ml"], "ko", ms=4, label="observed")
        ax.plot(tr["time_years"], tr["volume_ml"], "kx", ms=5, label="measured (held out)")
        if np.all(np.isfinite(tr["true_volume_ml"].to_numpy(float))):
            ax.plot(tr["time_years"], tr["true_volume_ml"], "k:", lw=1, label="true law")
        ax.set_title(f"{sid} ({tr['growth_class'].iloc[0]})", fontsize=8)
        ax.set_xlabel("years since first scan", fontsize=7)
        ax.set_ylabel("volume (mL)", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in axes.ravel()[len(pick) :]:
        ax.axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="center right", fontsize=7, frameon=False)
    fig.suptitle(f"forecasts from {k} observed scan(s); band: {interval_method} 80 / 90 % intervals", fontsize=9)
    fig.tight_layout(rect=(0.0, 0.0, 0.84, 0.95))  # room for the legend and the title; no label over a title
    return save_figure(fig, out_png)
