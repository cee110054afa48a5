"""Latent-traversal figures: what the decoder draws as one latent coordinate sweeps -k sigma .. +k sigma.

Pure functions of arrays: the caller decodes ``mu + step * sigma * e_i`` for each coordinate ``i`` and
step, keeps one modality, and passes ``images[n_coords, n_steps, X, Y, Z]`` (RAS voxel order).
Slices follow the radiological convention of :mod:`custom.plots.style`. One grey window (the
1st-99th percentile of all images) is shared by every panel so that brightness changes between
steps are real, and one difference scale is shared by every coordinate so that a coordinate the
decoder ignores (a collapsed unit) shows as a dark row.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.ndimage import uniform_filter  # noqa: E402

from custom.plots.style import (  # noqa: E402
    CONTOUR_COLOUR,
    DIFF_CMAP,
    PLANE_AXIS,
    PLANES,
    bare_axis,
    check_plane,
    extract_slice,
    format_step,
    orientation_letters,
    resolve_center,
    robust_max,
    robust_window,
    save_figure,
    slice_shape,
)

#: Leading signed number of a step label such as "+1.5σ".
_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _check_images(images: np.ndarray) -> np.ndarray:
    """Return ``images`` as float ``[n_coords, n_steps, X, Y, Z]`` or raise ``ValueError``."""
    arr = np.asarray(images, dtype=np.float32)
    if arr.ndim != 5:
        raise ValueError(f"images must be [n_coords, n_steps, X, Y, Z], got shape {arr.shape}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise ValueError("images needs at least one coordinate and one step")
    return arr


def centre_step(step_values: Sequence[float] | None, n_steps: int) -> int:
    """Index of the reference step: the value closest to 0 (the posterior mean), else the middle one."""
    if step_values is not None and len(step_values) == n_steps:
        return int(np.argmin(np.abs(np.asarray(step_values, dtype=np.float64))))
    return n_steps // 2


def _labels(coord_labels: Sequence[str] | None, n: int) -> list[str]:
    """Row labels, padded with ``z<i>`` where the caller gave fewer than ``n``."""
    given = list(coord_labels or [])
    return [str(given[i]) if i < len(given) else f"z{i}" for i in range(n)]


def _steps(step_values: Sequence[float | str] | None, n: int, unit: str) -> tuple[list[float], list[str]]:
    """Numeric step values and their column headers.

    Numbers are formatted with :func:`format_step` (``-2`` -> ``−2σ``); strings such as ``"+1.0σ"``
    are shown as given and their leading number is used as the value. Missing values, or a list of
    the wrong length, default to evenly spaced -2 .. +2.
    """
    if step_values is None or len(step_values) != n:
        values = [float(v) for v in np.linspace(-2.0, 2.0, n)] if n > 1 else [0.0]
        return values, [format_step(v, unit) for v in values]
    values, heads = [], []
    for i, item in enumerate(step_values):
        if isinstance(item, str):
            match = _NUMBER.search(item.replace("\u2212", "-"))
            values.append(float(match.group()) if match else float(i - n // 2))
            heads.append(item.replace("-", "\u2212"))
        else:
            values.append(float(item))
            heads.append(format_step(float(item), unit))
    return values, heads


def change_map(images: np.ndarray, ref: int) -> np.ndarray:
    """Per-coordinate summed change ``sum_s |x(s) - x(ref)|`` -> ``[n_coords, X, Y, Z]``."""
    return np.abs(images - images[:, ref : ref + 1]).sum(axis=1)


def most_changing_slice(images: np.ndarray, plane: str, ref: int) -> int:
    """Slice index (along ``plane``'s axis) where the traversal changes the image most.

    Sums ``|x(step) - x(ref)|`` over coordinates, steps and the in-plane axes; falls back to the
    volume centre when nothing changes.
    """
    axis = PLANE_AXIS[check_plane(plane)]
    change = change_map(images, ref).sum(axis=0)
    profile = change.sum(axis=tuple(a for a in range(3) if a != axis))
    if not np.any(profile > 0):
        return images.shape[2 + axis] // 2
    return int(np.argmax(profile))


def most_changing_voxel(change: np.ndarray, smooth: int = 5) -> tuple[int, int, int] | None:
    """Voxel at the peak of a box-smoothed change map (smoothing ignores single-voxel noise), or None."""
    if not np.any(change > 0):
        return None
    size = max(1, min(smooth, *change.shape))
    smoothed = uniform_filter(change.astype(np.float64), size=size, mode="nearest")
    peak = np.unravel_index(int(np.argmax(smoothed)), smoothed.shape)
    return (int(peak[0]), int(peak[1]), int(peak[2]))


def _overlay_for(seg_overlay: np.ndarray | None, c: int, s: int) -> np.ndarray | None:
    """The ``[X, Y, Z]`` mask for cell (c, s) from a ``[X,Y,Z]``, ``[n_steps,X,Y,Z]`` or 5D overlay."""
    if seg_overlay is None:
        return None
    seg = np.asarray(seg_overlay)
    if seg.ndim == 3:
        return seg
    if seg.ndim == 4:
        return seg[s]
    if seg.ndim == 5:
        return seg[c, s]
    raise ValueError(f"seg_overlay must be 3D, 4D or 5D, got shape {seg.shape}")


def _contour(ax: plt.Axes, mask_slice: np.ndarray) -> None:
    """Outline the non-zero region of a 2D mask (nothing when the slice is empty or full)."""
    binary = (np.asarray(mask_slice) > 0).astype(np.float32)
    if 0 < binary.sum() < binary.size:
        ax.contour(binary, levels=[0.5], colors=[CONTOUR_COLOUR], linewidths=0.9)


def plot_traversal(
    images: np.ndarray,
    out_png: str | Path,
    coord_labels: Sequence[str],
    step_values: Sequence[float | str],
    plane: str = "axial",
    slice_index: int | None = None,
    seg_overlay: np.ndarray | None = None,
    title: str = "",
    step_unit: str = "σ",
    show_diff: bool = True,
) -> str:
    """Write a traversal grid PNG: rows = latent coordinates, columns = traversal steps, one slice each.

    Every cell shows the same ``plane`` slice (radiological convention) of the decoded image for
    that coordinate and step, with the step value (e.g. ``−2σ`` .. ``+2σ``) printed over its column.
    With ``show_diff`` a last column shows ``|x(last) - x(first)|`` in 'magma' on one scale shared
    by all rows, so the coordinates that change nothing are dark.

    Args:
        images: ``[n_coords, n_steps, X, Y, Z]`` decoded images of one modality.
        out_png: output path; parent directories are created.
        coord_labels: one row label per coordinate, e.g. ``"z0 (vol)"``.
        step_values: one value per step in units of ``step_unit`` (posterior standard deviations),
            or ready-made labels such as ``"+1.0σ"`` (their number is used to find the centre step).
        plane: "axial", "coronal" or "sagittal".
        slice_index: index along the plane's voxel axis; default: the slice where the traversal
            changes the image most (:func:`most_changing_slice`).
        seg_overlay: optional mask(s) outlined in cyan: ``[X,Y,Z]`` (same for all cells),
            ``[n_steps,X,Y,Z]`` or ``[n_coords,n_steps,X,Y,Z]``.
        title: figure title; a subtitle names the plane and slice.
        step_unit: unit appended to the column headers.
        show_diff: add the ``|last - first|`` column.

    Returns:
        ``str(out_png)``.
    """
    imgs = _check_images(images)
    plane = check_plane(plane)
    n_coords, n_steps = imgs.shape[:2]
    labels = _labels(coord_labels, n_coords)
    steps, heads = _steps(step_values, n_steps, step_unit)
    ref = centre_step(steps, n_steps)
    axis = PLANE_AXIS[plane]
    if slice_index is None:
        slice_index = most_changing_slice(imgs, plane, ref)
    slice_index = int(np.clip(slice_index, 0, imgs.shape[2 + axis] - 1))

    rows, cols = slice_shape(imgs.shape, plane)
    aspect = cols / rows
    panel_h = 1.25
    ratios = [aspect] * n_steps + ([0.12, aspect, 0.07] if show_diff else [])
    left_in, right_in = 0.7, (0.6 if show_diff else 0.15)
    width = sum(ratios) * panel_h * 1.05 + left_in + right_in
    top = 0.62 + (0.32 if title else 0.0)
    height = n_coords * panel_h + top + 0.2
    fig = plt.figure(figsize=(width, height))
    gs = fig.add_gridspec(
        n_coords,
        len(ratios),
        width_ratios=ratios,
        left=left_in / width,
        right=1 - right_in / width,
        top=1 - top / height,
        bottom=0.2 / height,
        wspace=0.04,
        hspace=0.06,
    )
    window = robust_window(imgs, 1.0, 99.0)
    ends = np.abs(imgs[:, -1] - imgs[:, 0])
    diff_max = robust_max(ends, 99.9)
    diff_im = None
    for c in range(n_coords):
        for s in range(n_steps):
            ax = fig.add_subplot(gs[c, s])
            ax.imshow(extract_slice(imgs[c, s], plane, slice_index), cmap="gray", vmin=window[0], vmax=window[1])
            mask = _overlay_for(seg_overlay, c, s)
            if mask is not None:
                _contour(ax, extract_slice(mask, plane, slice_index))
            bare_axis(ax)
            if c == 0:
                head = heads[s] + ("  (μ)" if s == ref and steps[s] == 0 else "")
                ax.set_title(head, fontsize=9, fontweight="bold" if s == ref else "normal", pad=4)
                if s == 0:
                    orientation_letters(ax, plane, fontsize=6.5)
            if s == 0:
                ax.set_ylabel(labels[c], fontsize=9, fontweight="bold")
        if show_diff:
            ax = fig.add_subplot(gs[c, n_steps + 1])
            diff_im = ax.imshow(extract_slice(ends[c], plane, slice_index), cmap=DIFF_CMAP, vmin=0.0, vmax=diff_max)
            bare_axis(ax)
            if c == 0:
                first, last = heads[0], heads[-1]
                ax.set_title(f"|{last} − ({first})|", fontsize=8.5, pad=4)
    if show_diff and diff_im is not None:
        cax = fig.add_subplot(gs[:, n_steps + 2])
        cb = fig.colorbar(diff_im, cax=cax)
        cb.ax.tick_params(labelsize=7)
        cb.set_label("|difference|", fontsize=8)
    coord = "xyz"[axis]
    subtitle = f"{plane} slice {coord} = {slice_index}"
    fig.text(
        0.5,
        1 - (0.1 + (0.32 if title else 0.0)) / height,
        subtitle,
        ha="center",
        va="top",
        fontsize=9,
        color="#444444",
    )
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold", y=1 - 0.08 / height, va="top")
    return save_figure(fig, out_png)


def plot_traversal_multiplane(
    images: np.ndarray,
    out_png: str | Path,
    coord_labels: Sequence[str],
    step_values: Sequence[float | str],
    center: tuple[int, int, int] | None = None,
    title: str = "",
    step_unit: str = "σ",
    mode: str = "both",
) -> str:
    """Write a PNG showing, per latent coordinate, three planes at the lowest, centre and highest steps.

    For each coordinate a block of rows is drawn; columns are grouped by plane (axial, coronal,
    sagittal) and inside each group: lowest step | centre step (value nearest 0) | highest step.
    ``mode`` selects the rows of a block:

    * ``"images"``: the decoded slices (shared grey window);
    * ``"diff"``: ``|x(low) - x(centre)|``, ``|x(high) - x(low)|``, ``|x(high) - x(centre)|`` in
      'magma' on one scale for the whole figure, which shows plainly *which region* a coordinate moves;
    * ``"both"`` (default): the image row above the difference row.

    The planes cross at ``center`` when given; otherwise, per coordinate, at the voxel where that
    coordinate's traversal changes the image most (peak of the box-smoothed ``sum_s |x(s) - x(centre)|``;
    the volume centre when it changes nothing). That centre is printed under the row label.
    Radiological convention as in :mod:`custom.plots.style`.

    Returns:
        ``str(out_png)``; parent directories are created.
    """
    if mode not in ("both", "images", "diff"):
        raise ValueError(f"mode must be 'both', 'images' or 'diff', got {mode!r}")
    imgs = _check_images(images)
    n_coords, n_steps = imgs.shape[:2]
    labels = _labels(coord_labels, n_coords)
    steps, heads = _steps(step_values, n_steps, step_unit)
    ref = centre_step(steps, n_steps)
    picks = [0, ref, n_steps - 1]
    kinds = ["images", "diff"] if mode == "both" else [mode]
    shape = imgs.shape[2:]

    ratios: list[float] = []
    columns: list[tuple[str, int] | None] = []
    for p, plane in enumerate(PLANES):
        rows, cols = slice_shape(shape, plane)
        for k in range(3):
            ratios.append(cols / rows)
            columns.append((plane, k))
        if p < len(PLANES) - 1:
            ratios.append(0.12)
            columns.append(None)
    has_diff = "diff" in kinds
    if has_diff:
        ratios += [0.1, 0.07]
        columns += [None, ("bar", 0)]
    panel_h = 1.2
    n_rows = n_coords * len(kinds)
    left_in, right_in = 0.85, (0.6 if has_diff else 0.15)
    width = sum(ratios) * panel_h * 1.05 + left_in + right_in
    top = 0.72 + (0.35 if title else 0.0)
    height = n_rows * panel_h + top + 0.15 * (n_coords - 1) + 0.2
    fig = plt.figure(figsize=(width, height))
    # One extra thin gridspec row between coordinate blocks separates them visually.
    row_ratios: list[float] = []
    row_kinds: list[tuple[int, str] | None] = []
    for c in range(n_coords):
        if c > 0:
            row_ratios.append(0.12)
            row_kinds.append(None)
        for kind in kinds:
            row_ratios.append(1.0)
            row_kinds.append((c, kind))
    gs = fig.add_gridspec(
        len(row_ratios),
        len(ratios),
        width_ratios=ratios,
        height_ratios=row_ratios,
        left=left_in / width,
        right=1 - right_in / width,
        top=1 - top / height,
        bottom=0.2 / height,
        wspace=0.04,
        hspace=0.05,
    )
    window = robust_window(imgs, 1.0, 99.0)
    diffs = {
        0: np.abs(imgs[:, 0] - imgs[:, ref]),
        1: np.abs(imgs[:, -1] - imgs[:, 0]),
        2: np.abs(imgs[:, -1] - imgs[:, ref]),
    }
    diff_max = robust_max(diffs[1], 99.9)
    low, mid, high = (heads[i] for i in picks)
    diff_captions = {0: f"|{low} − {mid}|", 1: f"|{high} − ({low})|", 2: f"|{high} − {mid}|"}
    step_heads = {0: low, 1: mid + ("  (μ)" if steps[ref] == 0 else ""), 2: high}

    centres = []
    for c in range(n_coords):
        auto = None if center is not None else most_changing_voxel(change_map(imgs[c : c + 1], ref)[0])
        centres.append(resolve_center(shape, center if center is not None else auto))

    diff_im = None
    first_row = True
    for r, row_kind in enumerate(row_kinds):
        if row_kind is None:
            continue
        c, kind = row_kind
        ctr = centres[c]
        for j, col in enumerate(columns):
            if col is None or col[0] == "bar":
                continue
            plane, k = col
            ax = fig.add_subplot(gs[r, j])
            index = ctr[PLANE_AXIS[plane]]
            if kind == "images":
                ax.imshow(extract_slice(imgs[c, picks[k]], plane, index), cmap="gray", vmin=window[0], vmax=window[1])
            else:
                diff_im = ax.imshow(extract_slice(diffs[k][c], plane, index), cmap=DIFF_CMAP, vmin=0.0, vmax=diff_max)
                if not first_row:  # the first row carries the caption as its title
                    ax.text(
                        0.04,
                        0.96,
                        diff_captions[k],
                        transform=ax.transAxes,
                        ha="left",
                        va="top",
                        fontsize=6,
                        color="white",
                    )
            bare_axis(ax)
            if first_row:
                ax.set_title(step_heads[k] if kind == "images" else diff_captions[k], fontsize=8.5, pad=3)
                if k == 0:
                    orientation_letters(ax, plane, fontsize=6)
            if j == 0:
                text = f"{labels[c]}\n@ {ctr}" if kind == kinds[0] else "|Δ|"
                ax.set_ylabel(text, fontsize=8.5 if kind == kinds[0] else 8, fontweight="bold")
        first_row = False
    if has_diff and diff_im is not None:
        bar_col = next(j for j, col in enumerate(columns) if col is not None and col[0] == "bar")
        cb = fig.colorbar(diff_im, cax=fig.add_subplot(gs[:, bar_col]))
        cb.ax.tick_params(labelsize=7)
        cb.set_label("|difference|", fontsize=8)
    fig.canvas.draw()
    for plane in PLANES:
        j0 = columns.index((plane, 0))
        j2 = columns.index((plane, 2))
        first = gs[0, j0].get_position(fig)
        last = gs[0, j2].get_position(fig)
        fig.text(
            (first.x0 + last.x1) / 2,
            first.y1 + 0.27 / height,
            plane,
            ha="center",
            va="bottom",
            fontsize=10,
            fontweight="bold",
        )
    if title:
        fig.suptitle(title, fontsize=12, fontweight="bold", y=1 - 0.08 / height, va="top")
    return save_figure(fig, out_png)
