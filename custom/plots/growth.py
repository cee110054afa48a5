"""Tumour growth forecast figure: one panel per held-out subject (volume in mL against years).

Per panel: measured (segmentation) volumes of the scans used for conditioning (filled dots) and of the later
scans to be forecast (open dots; the models start from the *encoded* volumes, so curves need not pass exactly
through the dots), the latent-ODE
forecast (thick line), baselines (thin lines) and the true Gompertz curve (dashed) when known.
Rows come from :func:`custom.ode.evaluate.growth_plot_rows`.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

BASELINE_STYLES: dict[str, dict] = {
    "LOCF": {"color": "0.5", "lw": 0.9},
    "linear": {"color": "tab:orange", "lw": 0.9},
    "Gompertz fit": {"color": "tab:green", "lw": 0.9},
    "images only": {"color": "tab:purple", "lw": 0.9, "ls": "-."},
}


def plot_growth(
    rows: list[dict], out_png: str | Path, max_panels: int = 12, ncols: int = 4, title: str | None = None
) -> Path:
    """Draw up to ``max_panels`` subject panels into ``out_png`` (created with its folder); returns the path.

    Each row holds: subject_id, t_scans, v_scans, n_obs, t_dense, v_model, optional model_label, optional baselines
    {name: (t, v)}, optional truth (t, v) or None, optional growth_class.
    """
    rows = rows[:max_panels]
    if not rows:
        raise ValueError("plot_growth needs at least one subject row")
    ncols = min(ncols, len(rows))
    nrows = math.ceil(len(rows) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax, row in zip(axes.flat, rows):
        k = int(row.get("n_obs", 0))
        t, v = np.asarray(row["t_scans"]), np.asarray(row["v_scans"])
        if row.get("truth") is not None:
            ax.plot(*row["truth"], "k--", lw=1.0, label="true Gompertz")
        for name, (tb, vb) in (row.get("baselines") or {}).items():
            ax.plot(tb, vb, label=name, **BASELINE_STYLES.get(name, {"lw": 0.9}))
        ax.plot(row["t_dense"], row["v_model"], color="tab:blue", lw=2.0, label=row.get("model_label", "latent ODE"))
        ax.plot(t[:k], v[:k], "o", color="tab:blue", ms=5, label="observed (conditioning)")
        ax.plot(t[k:], v[k:], "o", mfc="white", mec="tab:red", ms=5, label="held-out scans")
        # keep the panel readable when an extrapolating baseline explodes: scale to data, model and truth
        ref = [np.nanmax(v), np.nanmax(row["v_model"])]
        if row.get("truth") is not None:
            ref.append(np.nanmax(row["truth"][1]))
        ax.set_ylim(0.0, 1.3 * float(np.nanmax(ref)))
        label = row["subject_id"] + (f" ({row['growth_class']})" if row.get("growth_class") else "")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("years", fontsize=8)
        ax.set_ylabel("tumour volume (mL)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(rows) :]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    # a single panel is narrow: wrap the legend onto more rows so that no entry is cut at the figure's edges
    per_row = 6 if ncols > 1 else 2
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), per_row), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    legend_rows = -(-len(labels) // min(max(len(labels), 1), per_row))
    fig.tight_layout(
        rect=(0, min(0.3, 0.06 * legend_rows * (2 if nrows == 1 and ncols == 1 else 1)), 1, 0.97 if title else 1)
    )
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
