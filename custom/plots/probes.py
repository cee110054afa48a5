"""Held-out probe figure: what a linear read-out of mu predicts for each held-out scan, against the truth.

The collapse criteria's probe numbers (``probe/r2_*``) are one R² per factor; this figure shows where they come from:
one panel per factor (log tumour volume, centroid x / y / z by default), predicted against true for every scan of
the held-out split, the scans of one subject joined in time order, the identity line, and R² with the penalty in the
panel title. The probe is :func:`custom.metrics.probes.held_out_probe_r2`, the one ``evaluate.json`` scores:
standardise -> ridge, fitted on the training split's encodings, the penalty chosen on the validation split's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from custom.plots.style import save_figure  # noqa: E402

__all__ = ["DEFAULT_PROBE_FACTORS", "plot_probe_scatter", "probe_figure"]

#: The factors of the collapse criteria: log tumour volume and the centroid.
DEFAULT_PROBE_FACTORS: tuple[str, ...] = ("log_volume", "centroid_x", "centroid_y", "centroid_z")

_UNITS = {"log_volume": "ln mL", "centroid_x": "mm", "centroid_y": "mm", "centroid_z": "mm"}


def plot_probe_scatter(
    truth: np.ndarray,
    pred: np.ndarray,
    names: Sequence[str],
    r2: dict[str, float],
    out_png: str | Path,
    subjects: Sequence[str] | None = None,
    alpha: dict[str, float] | None = None,
    title: str = "held-out probes",
) -> str:
    """One panel per factor: ``pred[:, k]`` against ``truth[:, k]``, identity line, R² (and penalty) in the title.

    Rows of one subject (in the given order, i.e. time order for the bundles' latents) are joined by a thin line.
    NaN rows are left out of their panel.
    """
    truth, pred = np.asarray(truth, dtype=float), np.asarray(pred, dtype=float)
    if truth.shape != pred.shape or truth.ndim != 2 or truth.shape[1] != len(names):
        raise ValueError(f"truth {truth.shape} and pred {pred.shape} must both be [n, {len(names)}]")
    n_f = len(names)
    fig, axes = plt.subplots(1, n_f, figsize=(3.6 * n_f, 3.9), squeeze=False)
    subj = np.asarray(subjects) if subjects is not None else None
    for k, (ax, name) in enumerate(zip(axes[0], names)):
        ok = np.isfinite(truth[:, k]) & np.isfinite(pred[:, k])
        t, p = truth[ok, k], pred[ok, k]
        if subj is not None:
            for s in np.unique(subj[ok]):
                rows = subj[ok] == s
                if rows.sum() > 1:
                    ax.plot(t[rows], p[rows], color="0.75", lw=0.7, zorder=1)
        ax.scatter(t, p, s=14, color="tab:blue", edgecolor="white", linewidth=0.4, zorder=2)
        if len(t):
            lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="tab:red", lw=1.0, ls="--", zorder=0)
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
        unit = _UNITS.get(name, "")
        ax.set_xlabel(f"true {name}" + (f" [{unit}]" if unit else ""))
        ax.set_ylabel("predicted from mu")
        pen = f", alpha {alpha[name]:.3g}" if alpha and np.isfinite(alpha.get(name, np.nan)) else ""
        ax.set_title(f"{name}: R² {r2.get(name, float('nan')):.3f}{pen}\n({int(ok.sum())} scans)", fontsize=10)
        ax.set_aspect("equal")
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, out_png)


def _load(path: str | Path) -> dict[str, np.ndarray]:
    z = np.load(path, allow_pickle=False)
    needed = {"mu", "factors", "factor_names"}
    if not needed <= set(z.files):
        raise ValueError(f"{path}: a latents file needs {sorted(needed)}, has {sorted(z.files)}")
    return {k: z[k] for k in z.files}


def probe_figure(
    fit_latents: str | Path,
    eval_latents: str | Path,
    out_png: str | Path,
    select_latents: str | Path | None = None,
    factors: Sequence[str] = DEFAULT_PROBE_FACTORS,
) -> str | None:
    """Fit the held-out probe on ``fit_latents`` (penalty chosen on ``select_latents``), score and draw
    ``eval_latents``; the files are ``evaluate.json``'s ``latents_<split>.npz`` / ``latents.npz``.

    Returns the PNG path, or None (with nothing written) when the eval latents carry none of ``factors``
    (no segmentations).
    """
    from custom.metrics.probes import held_out_probe_r2

    fit, ev = _load(fit_latents), _load(eval_latents)
    names = [str(n) for n in ev["factor_names"]]
    use = [f for f in factors if f in names and np.isfinite(ev["factors"][:, names.index(f)]).any()]
    if not use:
        return None
    cols = [names.index(f) for f in use]
    sel: dict[str, np.ndarray] = {}
    if select_latents is not None and Path(select_latents).exists():
        s = _load(select_latents)
        sel = {"mu_select": s["mu"], "factors_select": s["factors"][:, cols], "groups_select": s.get("subject_id")}
    res = held_out_probe_r2(
        fit["mu"],
        fit["factors"][:, cols],
        ev["mu"],
        ev["factors"][:, cols],
        use,
        groups_fit=fit.get("subject_id"),
        **sel,
    )
    pred = np.stack([res["pred"][f] for f in use], axis=1)
    where = "penalty chosen on validation subjects" if res["alpha_from"] == "validation" else "penalty by subject CV"
    title = (
        f"held-out probes from mu: ridge fitted on {len(fit['mu'])} training scans, {where}, "
        f"scored on {len(ev['mu'])} held-out scans"
    )
    return plot_probe_scatter(
        ev["factors"][:, cols],
        pred,
        use,
        res["r2"],
        out_png,
        subjects=ev.get("subject_id"),
        alpha=res["alpha"],
        title=title,
    )
