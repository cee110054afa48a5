"""Reconstruction figures: input | reconstruction | |difference| in three orthogonal planes.

Pure function of arrays: the caller runs the network and passes ``x`` and ``x_hat`` as numpy arrays
``[C, X, Y, Z]`` in RAS voxel order. Slices are drawn in the radiological convention described in
:mod:`custom.plots.style` (axial: anterior up, patient's right on the image left).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from custom.constants import MODALITIES  # noqa: E402
from custom.plots.style import (  # noqa: E402
    DIFF_CMAP,
    PLANES,
    bare_axis,
    extract_slice,
    orientation_letters,
    resolve_center,
    robust_max,
    robust_window,
    save_figure,
    slice_shape,
)

#: Sub-column titles within each plane group.
TRIPLET: tuple[str, str, str] = ("input", "recon", "|diff|")


def _as_channels(x: np.ndarray, name: str) -> np.ndarray:
    """Return ``x`` as float ``[C, X, Y, Z]`` (a 3D array becomes one channel)."""
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4:
        raise ValueError(f"{name} must be [C, X, Y, Z] (or [X, Y, Z]), got shape {arr.shape}")
    return arr


def _grid_layout(
    spatial: Sequence[int], panel_h: float, n_bars: int
) -> tuple[list[float], list[tuple[str, int]], float]:
    """Width ratios and (kind, index) per gridspec column, plus figure width in inches.

    Columns: for each plane three image panels (width = slice cols/rows x panel_h so every row has
    the same height), a narrow spacer between plane groups, then ``n_bars`` colour-bar columns.
    """
    ratios: list[float] = []
    kinds: list[tuple[str, int]] = []
    for p, plane in enumerate(PLANES):
        rows, cols = slice_shape(spatial, plane)
        for k in range(3):
            ratios.append(cols / rows)
            kinds.append((plane, k))
        ratios.append(0.12)
        kinds.append(("gap", p))
    for b in range(n_bars):
        ratios.append(0.07)
        kinds.append(("bar", b))
        if b < n_bars - 1:
            ratios.append(0.55)
            kinds.append(("gap", -1))
    width = sum(ratios) * panel_h + 1.6
    return ratios, kinds, width


def _draw_triplet_row(
    fig: plt.Figure,
    axes_row: dict[tuple[str, int], plt.Axes],
    vol: np.ndarray,
    rec: np.ndarray,
    center: tuple[int, int, int],
    window: tuple[float, float],
    diff_max: float,
) -> tuple[object, object]:
    """Fill one row (input | recon | |diff| per plane); return the grey and diff image handles."""
    diff = np.abs(vol - rec)
    grey_im = diff_im = None
    for plane in PLANES:
        index = center[{"sagittal": 0, "coronal": 1, "axial": 2}[plane]]
        for k, source in enumerate((vol, rec, diff)):
            ax = axes_row[(plane, k)]
            img = extract_slice(source, plane, index)
            if k < 2:
                grey_im = ax.imshow(img, cmap="gray", vmin=window[0], vmax=window[1], interpolation="nearest")
            else:
                diff_im = ax.imshow(img, cmap=DIFF_CMAP, vmin=0.0, vmax=diff_max, interpolation="nearest")
            ax.set_aspect("equal")
            bare_axis(ax)
    return grey_im, diff_im


def _header(fig: plt.Figure, axes_top: dict[tuple[str, int], plt.Axes], center: tuple[int, int, int] | None) -> None:
    """Write plane-group titles (with the slice index when shared by all rows) and sub-titles."""
    fig.canvas.draw()
    for plane in PLANES:
        first, last = axes_top[(plane, 0)].get_position(), axes_top[(plane, 2)].get_position()
        axis = {"sagittal": 0, "coronal": 1, "axial": 2}[plane]
        coord = "xyz"[axis]
        fig.text(
            (first.x0 + last.x1) / 2,
            first.y1 + 0.27 / fig.get_figheight(),
            plane if center is None else f"{plane} ({coord} = {center[axis]})",
            ha="center",
            va="bottom",
            fontsize=10,
            fontweight="bold",
        )
        for k, name in enumerate(TRIPLET):
            axes_top[(plane, k)].set_title(name, fontsize=8, pad=3)


def plot_reconstruction(
    x: np.ndarray,
    x_hat: np.ndarray,
    out_png: str | Path,
    modalities: Sequence[str] = MODALITIES,
    center: tuple[int, int, int] | None = None,
    title: str = "",
    seg: np.ndarray | None = None,
) -> str:
    """Write a PNG comparing an input volume with its reconstruction, one row per modality.

    Layout: rows = modalities (channel order of ``x``); three column groups = axial, coronal and
    sagittal slices through ``center``; inside each group input | reconstruction | |x - x_hat|.
    Both grey panels of a row share one window, the 1st-99th percentile of that modality's *input*
    (so a reconstruction that is too bright or too flat shows as such). The absolute difference uses
    the 'magma' map from 0 to the 99.9th percentile of that modality's |x - x_hat| with its own
    colour bar; the row label also prints the modality's mean squared error.

    Orientation: arrays are RAS voxel order (axis 0 = x L->R, 1 = y P->A, 2 = z I->S) and are shown in
    the radiological convention: axial and coronal with the patient's right on the image left, axial
    with anterior up, coronal/sagittal with superior up, sagittal with anterior on the left. Edge
    letters (R/L/A/P/S/I) on the first row make this explicit.

    Args:
        x: input ``[C, X, Y, Z]`` (a single ``[X, Y, Z]`` volume is accepted as one channel).
        x_hat: reconstruction, same shape as ``x``.
        out_png: output path; parent directories are created.
        modalities: row labels (extra labels are ignored; missing ones become ``ch<i>``).
        center: voxel (x, y, z) the three planes pass through. Default: the centre of mass of the
            non-zero voxels of ``seg`` when given (the tumour), else the volume centre.
        title: figure title.
        seg: optional label/probability map ``[X, Y, Z]`` used only to choose the default centre.

    Returns:
        ``str(out_png)``.
    """
    vol = _as_channels(x, "x")
    rec = _as_channels(x_hat, "x_hat")
    if vol.shape != rec.shape:
        raise ValueError(f"x {vol.shape} and x_hat {rec.shape} must have the same shape")
    n_ch = vol.shape[0]
    names = [modalities[c] if c < len(modalities) else f"ch{c}" for c in range(n_ch)]
    ctr = resolve_center(vol.shape, center, seg)

    panel_h = 1.45
    ratios, kinds, width = _grid_layout(vol.shape[1:], panel_h, n_bars=2)
    top_margin = 0.62 + (0.4 if title else 0.0)
    height = n_ch * panel_h + top_margin + 0.25
    fig = plt.figure(figsize=(width, height))
    gs = fig.add_gridspec(
        n_ch,
        len(kinds),
        width_ratios=ratios,
        left=0.9 / width,
        right=1 - 0.7 / width,
        top=1 - top_margin / height,
        bottom=0.25 / height,
        wspace=0.04,
        hspace=0.08,
    )
    top_axes: dict[tuple[str, int], plt.Axes] = {}
    for c in range(n_ch):
        row = {kind: fig.add_subplot(gs[c, j]) for j, kind in enumerate(kinds) if kind[0] in PLANES}
        window = robust_window(vol[c], 1.0, 99.0)
        diff_max = robust_max(np.abs(vol[c] - rec[c]), 99.9)
        grey_im, diff_im = _draw_triplet_row(fig, row, vol[c], rec[c], ctr, window, diff_max)
        mse = float(np.mean((vol[c] - rec[c]) ** 2))
        row[(PLANES[0], 0)].set_ylabel(f"{names[c]}\nMSE {mse:.3g}", fontsize=9, fontweight="bold")
        bar_cols = [j for j, kind in enumerate(kinds) if kind[0] == "bar"]
        cb_grey = fig.colorbar(grey_im, cax=fig.add_subplot(gs[c, bar_cols[0]]))
        cb_diff = fig.colorbar(diff_im, cax=fig.add_subplot(gs[c, bar_cols[1]]))
        for cb in (cb_grey, cb_diff):
            cb.ax.tick_params(labelsize=6.5, length=2)
            cb.locator = matplotlib.ticker.MaxNLocator(4)
            cb.update_ticks()
        if c == 0:
            cb_grey.ax.set_title("intensity", fontsize=7, pad=3)
            cb_diff.ax.set_title("|diff|", fontsize=7, pad=3)
            for plane in PLANES:
                orientation_letters(row[(plane, 0)], plane)
            top_axes = row
    _header(fig, top_axes, ctr)
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold", y=1 - 0.12 / height, va="top")
    return save_figure(fig, out_png)


def plot_reconstruction_batch(
    xs: Sequence[np.ndarray] | np.ndarray,
    x_hats: Sequence[np.ndarray] | np.ndarray,
    case_ids: Sequence[str],
    out_png: str | Path,
    channel: int = 0,
    modality: str = MODALITIES[0],
    centers: Sequence[tuple[int, int, int] | None] | None = None,
    title: str = "",
    max_cases: int = 4,
) -> str:
    """Write a PNG with one row per case (at most ``max_cases``) of a single modality (default t1c).

    Each row shows axial, coronal and sagittal slices through the case's centre (or ``centers[i]``),
    each as input | reconstruction | |difference|, with the same windowing rules as
    :func:`plot_reconstruction` (grey window = input percentiles 1-99 per case; 'magma' difference
    from 0 to its 99.9th percentile, colour bar per case). Radiological convention as there.

    Args:
        xs: inputs, a ``[B, C, X, Y, Z]`` array or a sequence of ``[C, X, Y, Z]`` arrays.
        x_hats: reconstructions, matching ``xs``.
        case_ids: row labels, one per case.
        out_png: output path; parent directories are created.
        channel: which channel to show (0 = t1c in the shared channel order).
        modality: its name, printed in the title.
        centers: optional per-case slice centres.
        title: figure title (default ``"<modality> reconstructions"``).
        max_cases: extra cases beyond this number are dropped.
    """
    n = min(len(xs), len(x_hats), max_cases)
    if n == 0:
        raise ValueError("plot_reconstruction_batch needs at least one case")
    vols = [_as_channels(xs[i], "xs[i]")[channel] for i in range(n)]
    recs = [_as_channels(x_hats[i], "x_hats[i]")[channel] for i in range(n)]
    ids = [str(case_ids[i]) if i < len(case_ids) else f"case {i}" for i in range(n)]
    shape = vols[0].shape
    if any(v.shape != shape or r.shape != shape for v, r in zip(vols, recs)):
        raise ValueError("all cases in a batch figure must share one spatial shape")

    panel_h = 1.45
    ratios, kinds, width = _grid_layout(shape, panel_h, n_bars=1)
    title = title or f"{modality} reconstructions"
    top_margin = 1.02
    height = n * panel_h + top_margin + 0.25
    fig = plt.figure(figsize=(width, height))
    gs = fig.add_gridspec(
        n,
        len(kinds),
        width_ratios=ratios,
        left=1.15 / width,
        right=1 - 0.55 / width,
        top=1 - top_margin / height,
        bottom=0.25 / height,
        wspace=0.04,
        hspace=0.1,
    )
    top_axes: dict[tuple[str, int], plt.Axes] = {}
    row_centers = []
    bar_col = next(j for j, kind in enumerate(kinds) if kind[0] == "bar")
    for i in range(n):
        ctr = resolve_center(shape, centers[i] if centers is not None and i < len(centers) else None)
        row_centers.append(ctr)
        row = {kind: fig.add_subplot(gs[i, j]) for j, kind in enumerate(kinds) if kind[0] in PLANES}
        window = robust_window(vols[i], 1.0, 99.0)
        diff_max = robust_max(np.abs(vols[i] - recs[i]), 99.9)
        _, diff_im = _draw_triplet_row(fig, row, vols[i], recs[i], ctr, window, diff_max)
        mse = float(np.mean((vols[i] - recs[i]) ** 2))
        row[(PLANES[0], 0)].set_ylabel(f"{ids[i]}\nMSE {mse:.3g}", fontsize=8, fontweight="bold")
        cb = fig.colorbar(diff_im, cax=fig.add_subplot(gs[i, bar_col]))
        cb.ax.tick_params(labelsize=6.5, length=2)
        cb.locator = matplotlib.ticker.MaxNLocator(4)
        cb.update_ticks()
        if i == 0:
            cb.ax.set_title("|diff|", fontsize=7, pad=3)
            for plane in PLANES:
                orientation_letters(row[(plane, 0)], plane)
            top_axes = row
    shared = row_centers[0] if all(c == row_centers[0] for c in row_centers) else None
    _header(fig, top_axes, shared)
    fig.suptitle(title, fontsize=12, fontweight="bold", y=1 - 0.12 / height, va="top")
    return save_figure(fig, out_png)
