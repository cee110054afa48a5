"""Shared functions for the figure writers: slicing in radiological convention, grey windows, saving.

Every volume handed to the plotting functions is a numpy array in RAS voxel order:
axis 0 = x (patient left -> right), axis 1 = y (posterior -> anterior), axis 2 = z (inferior -> superior),
which is what MONAI's ``Orientation(axcodes="RAS")`` produces. Voxels are assumed isotropic
(the bundles resample to ``DEFAULT_SPACING``), so every panel is drawn with ``aspect="equal"``.

Display convention (radiological, as on a scanner console / PACS):

* axial    (fixed z): anterior at the top,  patient's right on the image left.
* coronal  (fixed y): superior at the top,  patient's right on the image left.
* sagittal (fixed x): superior at the top,  anterior on the image left (patient faces left).

All three reduce to ``volume_slice.T[::-1, ::-1]`` for the RAS layout, see :func:`extract_slice`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

#: Plane names in the order the figures show them.
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")

#: Voxel axis held fixed by each plane (RAS voxel order).
PLANE_AXIS: dict[str, int] = {"sagittal": 0, "coronal": 1, "axial": 2}

#: Letters drawn at the (left, right, top, bottom) edges of a panel of each plane.
PLANE_EDGES: dict[str, tuple[str, str, str, str]] = {
    "axial": ("R", "L", "A", "P"),
    "coronal": ("R", "L", "S", "I"),
    "sagittal": ("A", "P", "S", "I"),
}

#: Colour map of absolute differences (perceptually uniform, dark = no change).
DIFF_CMAP: str = "magma"

#: Colour of segmentation contours drawn over grey images.
CONTOUR_COLOUR: str = "#36e0ff"


def check_plane(plane: str) -> str:
    """Return ``plane`` lower-cased, raising ``ValueError`` when it is not axial/coronal/sagittal."""
    name = plane.lower()
    if name not in PLANE_AXIS:
        raise ValueError(f"plane must be one of {PLANES}, got {plane!r}")
    return name


def extract_slice(volume: np.ndarray, plane: str, index: int) -> np.ndarray:
    """Cut one 2D slice out of a RAS ``[X, Y, Z]`` volume, oriented for display with ``origin="upper"``.

    Transposing puts the second remaining axis (y or z) on the rows and the first (x or y) on the
    columns; reversing rows puts anterior/superior at the top, reversing columns puts the patient's
    right (axial/coronal) or anterior (sagittal) on the image left: the radiological convention.
    """
    name = check_plane(plane)
    axis = PLANE_AXIS[name]
    index = int(np.clip(index, 0, volume.shape[axis] - 1))
    cut = np.take(np.asarray(volume), index, axis=axis)
    return np.ascontiguousarray(cut.T[::-1, ::-1])


def slice_shape(volume_shape: Sequence[int], plane: str) -> tuple[int, int]:
    """(rows, cols) of :func:`extract_slice` output for a volume of ``volume_shape``."""
    kept = [int(s) for a, s in enumerate(volume_shape[-3:]) if a != PLANE_AXIS[check_plane(plane)]]
    return kept[1], kept[0]


def robust_window(values: np.ndarray, low: float = 1.0, high: float = 99.0) -> tuple[float, float]:
    """Grey window (vmin, vmax) from the ``low``/``high`` percentiles of the finite values.

    Percentile windows ignore a few extreme voxels so that soft-tissue contrast stays visible.
    Always returns ``vmax > vmin`` (a flat image gets a unit-wide window).
    """
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 0.0, 1.0
    vmin, vmax = np.percentile(finite, [low, high])
    if not vmax > vmin:
        vmin, vmax = float(finite.min()), float(finite.max())
    if not vmax > vmin:
        vmin, vmax = vmin - 0.5, vmin + 0.5
    return float(vmin), float(vmax)


def robust_max(values: np.ndarray, q: float = 99.9) -> float:
    """Upper colour limit for a non-negative map: the ``q`` percentile of finite values (> 0)."""
    finite = np.asarray(values, dtype=np.float64)
    finite = finite[np.isfinite(finite)]
    top = float(np.percentile(finite, q)) if finite.size else 0.0
    if not top > 0:
        top = float(finite.max()) if finite.size else 0.0
    return top if top > 0 else 1.0


def volume_center(shape: Sequence[int]) -> tuple[int, int, int]:
    """Voxel index of the centre of a volume of spatial ``shape`` (last three entries)."""
    return tuple(int(s) // 2 for s in shape[-3:])  # type: ignore[return-value]


def seg_center(seg: np.ndarray) -> tuple[int, int, int]:
    """Rounded centre of mass of the non-zero voxels of ``seg`` (or of its argmax when all are non-zero).

    A label map has many voxels sharing its maximum, so the centre of mass of the foreground is the
    stable "argmax" to slice through; a probability map with no zeros falls back to its argmax.
    Returns the volume centre when ``seg`` is empty.
    """
    arr = np.asarray(seg)
    if arr.ndim == 4:  # [C, X, Y, Z] -> any channel
        arr = np.abs(arr).sum(axis=0)
    mask = arr != 0
    if mask.all():
        return tuple(int(i) for i in np.unravel_index(int(np.argmax(arr)), arr.shape))  # type: ignore[return-value]
    if not mask.any():
        return volume_center(arr.shape)
    coords = np.argwhere(mask).mean(axis=0)
    return tuple(int(round(c)) for c in coords)  # type: ignore[return-value]


def resolve_center(
    shape: Sequence[int], center: Sequence[int] | None, seg: np.ndarray | None = None
) -> tuple[int, int, int]:
    """Slice centre: ``center`` if given, else the seg's centre (:func:`seg_center`), else the volume centre.

    The result is clipped into the volume so that any caller-provided index is safe.
    """
    spatial = [int(s) for s in shape[-3:]]
    if center is not None:
        chosen = [int(c) for c in center]
    elif seg is not None:
        chosen = list(seg_center(seg))
    else:
        chosen = list(volume_center(spatial))
    return tuple(int(np.clip(c, 0, s - 1)) for c, s in zip(chosen, spatial))  # type: ignore[return-value]


def bare_axis(ax: plt.Axes) -> None:
    """Hide ticks and spines of an image panel (the orientation letters replace axis labels)."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def orientation_letters(ax: plt.Axes, plane: str, fontsize: float = 7.0) -> None:
    """Write the anatomical direction letters (e.g. R/L/A/P) just inside a panel's edges."""
    left, right, top, bottom = PLANE_EDGES[check_plane(plane)]
    style = dict(transform=ax.transAxes, color="#ffd34d", fontsize=fontsize, fontweight="bold")
    ax.text(0.03, 0.5, left, ha="left", va="center", **style)
    ax.text(0.97, 0.5, right, ha="right", va="center", **style)
    ax.text(0.5, 0.97, top, ha="center", va="top", **style)
    ax.text(0.5, 0.03, bottom, ha="center", va="bottom", **style)


def prepare_output(out_png: str | Path) -> Path:
    """Return ``out_png`` as a Path after creating its parent directories."""
    path = Path(out_png)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: plt.Figure, out_png: str | Path, dpi: int = 110) -> str:
    """Write ``fig`` as PNG (white background), close it, and return the path as a string."""
    path = prepare_output(out_png)
    fig.savefig(path, dpi=dpi, facecolor="white", format="png")
    plt.close(fig)
    return str(path)


def format_step(value: float, unit: str = "σ") -> str:
    """Column header for a traversal step: ``-2σ``, ``0``, ``+1.5σ`` (typographic minus)."""
    if value == 0:
        return "0"
    text = f"{value:+.3g}{unit}"
    return text.replace("-", "\u2212")
