"""Forecast-mask figure of one subject: observed scans, forecast masks and true future masks side by side over time.

Columns are the subject's scan times. Row 1: the observed scans (t1c, axial slice through the last observed mask's
centroid, the scan's own tumour contour); row 2: the forecast mask at each target time (red contour) on the last
observed t1c, with the last observed contour dotted; row 3: the true future scan with its tumour contour (green).
Every panel shows the same slice, cropped to the tumour's neighbourhood (``margin_mm`` around the union of masks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from custom.plots.style import bare_axis, extract_slice, plt, robust_window, save_figure


def _crop(region: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return slice(None), slice(None)
    return (
        slice(max(rows.min() - margin, 0), rows.max() + margin + 1),
        slice(max(cols.min() - margin, 0), cols.max() + margin + 1),
    )


def plot_mask_forecast(
    t1c: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    times: Sequence[float],
    n_obs: int,
    forecasts: dict[int, np.ndarray],
    out_png: str | Path,
    voxel_mm: float = 1.0,
    margin_mm: float = 25.0,
    title: str = "",
) -> str:
    """Draw the figure (module docstring) and return the PNG path.

    Args:
        t1c, masks: per scan, RAS-ordered t1c volume and binary tumour mask (same grid for every scan).
        times: scan times (years); the first ``n_obs`` scans are observed, the others are targets.
        forecasts: target scan index -> forecast mask on the same grid.
        voxel_mm: in-plane voxel size, for the crop margin.
    """
    last = np.asarray(masks[n_obs - 1], dtype=bool)
    z = int(round(np.argwhere(last).mean(axis=0)[2])) if last.any() else last.shape[2] // 2
    cut = lambda v: extract_slice(np.asarray(v, dtype=float), "axial", z)  # noqa: E731
    union = np.zeros_like(cut(last), dtype=bool)
    for m in [*masks, *forecasts.values()]:
        union |= cut(m) > 0.5
    box = _crop(union, int(round(margin_mm / voxel_mm)))
    n = len(times)
    fig, axes = plt.subplots(3, n, figsize=(1.9 * n, 6.0), squeeze=False)
    labels = ("observed scan", "forecast mask", "true future mask")

    def panel(ax, image, contours, heading):  # noqa: ANN001
        vol = np.asarray(image)
        lo, hi = robust_window(vol[vol != 0])  # each scan its own grey window (intensities drift between scans)
        ax.imshow(cut(image)[box], cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for mask, colour, style in contours:
            ax.contour(cut(mask)[box] > 0.5, levels=[0.5], colors=colour, linewidths=1.0, linestyles=style)
        ax.set_title(heading, fontsize=7)

    for j in range(n):
        for i in range(3):
            bare_axis(axes[i][j])
        if j < n_obs:
            panel(axes[0][j], t1c[j], [(masks[j], "yellow", "solid")], f"t = {times[j]:.1f} y (observed)")
        if j in forecasts:
            panel(
                axes[1][j],
                t1c[n_obs - 1],
                [(last, "yellow", "dotted"), (forecasts[j], "red", "solid")],
                f"t = {times[j]:.1f} y (forecast)",
            )
            panel(axes[2][j], t1c[j], [(masks[j], "lime", "solid")], f"t = {times[j]:.1f} y (true)")
    for i, label in enumerate(labels):
        axes[i][0].text(-0.08, 0.5, label, transform=axes[i][0].transAxes, rotation=90, va="center", ha="right",
                        fontsize=8)  # fmt: skip
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0.02, 0.0, 1.0, 0.95))
    return save_figure(fig, out_png)
