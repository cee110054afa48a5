"""Subject anatomy: MNI ICBM152 2009c tissue maps, the BraTS output grid and a per-subject deformation.

The real brain anatomy comes from the MNI ICBM152 2009 symmetric templates that nilearn ships
offline (Fonov et al., NeuroImage 2011): the skull-stripped T1 template gives the brain mask, the GM and
WM probability maps the tissues, and CSF is the brain mask minus GM and WM (sulcal CSF and ventricles).

Each subject is the template seen through a smooth random deformation
``y = c + (x - c) / s + u(x)``: ``s`` a global (slightly anisotropic) scale of about +-5 % around the
brain centre ``c`` and ``u`` a low-frequency displacement expanded on a separable 3D DCT basis, the same
parameterisation SPM uses for nonlinear registration (Ashburner & Friston, Hum. Brain Mapp. 1999).
Everything is evaluated directly on the output grid (no 1 mm intermediate), so coarse grids are fast.
"""

from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

#: BraTS field of view in mm (240 x 240 x 155 voxels of 1 mm).
BRATS_FOV_MM: tuple[float, float, float] = (240.0, 240.0, 155.0)


@dataclass(frozen=True)
class TemplateMaps:
    """Template tissue probabilities on the 1 mm MNI grid (float32 in [0, 1]) and that grid's affine."""

    gm: np.ndarray
    wm: np.ndarray
    brain: np.ndarray  # soft brain mask (GM + WM + CSF)
    affine: np.ndarray
    centre: np.ndarray  # world (mm) centre of the brain's bounding box

    @property
    def csf(self) -> np.ndarray:
        return np.clip(self.brain - self.gm - self.wm, 0.0, 1.0)


def template_path(kind: str) -> pathlib.Path:
    """Path of nilearn's shipped MNI ICBM152 2009 (sym, 1 mm) template: ``kind`` in t1 | gm | wm.

    Located through the installed package's folder without importing ``nilearn.datasets`` (which pulls in
    pandas, requests and more), so the generator needs nilearn's files, not its import-time dependencies.
    """
    import importlib.util
    from pathlib import Path

    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nilearn is required for the MNI152 template (pip install nilearn)")
    path = (
        Path(list(spec.submodule_search_locations)[0])
        / "datasets"
        / "data"
        / f"mni_icbm152_{kind}_tal_nlin_sym_09a_converted.nii.gz"
    )
    if not path.exists():
        raise FileNotFoundError(f"MNI152 template file missing from the nilearn installation: {path}")
    return path


@functools.lru_cache(maxsize=1)
def load_template_maps() -> TemplateMaps:
    """Load the nilearn MNI152 2009 templates (1 mm) and derive a hole-filled soft brain mask (cached)."""
    t1_img = nib.load(str(template_path("t1")))
    t1 = np.asarray(t1_img.dataobj, dtype=np.float32)
    gm = np.asarray(nib.load(str(template_path("gm"))).dataobj, dtype=np.float32)
    wm = np.asarray(nib.load(str(template_path("wm"))).dataobj, dtype=np.float32)
    gm /= max(float(gm.max()), 1e-6)
    wm /= max(float(wm.max()), 1e-6)
    # The template T1 is skull-stripped: its support (closed, holes filled) is the intracranial brain.
    hard = (t1 > 0.02 * float(t1.max())) | (gm + wm > 0.3)
    hard = ndi.binary_closing(hard, structure=ndi.generate_binary_structure(3, 1), iterations=2)
    hard = ndi.binary_fill_holes(hard)
    brain = ndi.gaussian_filter(hard.astype(np.float32), 0.7)
    brain = np.maximum(brain, np.clip(gm + wm, 0.0, 1.0))
    gm = np.minimum(gm, brain)
    wm = np.minimum(wm, brain - gm)
    affine = np.asarray(t1_img.affine, dtype=np.float64)
    idx = np.argwhere(hard)
    lo, hi = idx.min(axis=0), idx.max(axis=0)
    centre = affine[:3, :3] @ ((lo + hi) / 2.0) + affine[:3, 3]
    return TemplateMaps(gm=gm, wm=wm, brain=brain, affine=affine, centre=centre)


def output_grid(spacing: float, centre: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """BraTS-like grid covering 240 x 240 x 155 mm at ``spacing`` mm, RAS affine centred on ``centre``.

    spacing 1 -> 240x240x155, 3.75 -> 64x64x41, 7.5 -> 32x32x21.
    """
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0, got {spacing}")
    shape = tuple(max(1, int(round(f / spacing))) for f in BRATS_FOV_MM)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = np.asarray(centre, dtype=np.float64) - spacing * (np.asarray(shape) - 1) / 2.0
    return shape, affine  # type: ignore[return-value]


def dct_basis(t: np.ndarray, order: int, half_width: float) -> np.ndarray:
    """DCT-II basis ``cos(pi k (t/w + 1) / 2)``, k = 0..order-1, on ``t`` in [-w, w]; shape [order, len(t)]."""
    u = (np.asarray(t, dtype=np.float64) / half_width + 1.0) / 2.0
    return np.stack([np.cos(np.pi * k * u) for k in range(order)]).astype(np.float32)


def separable_field(coeffs: np.ndarray, bx: np.ndarray, by: np.ndarray, bz: np.ndarray) -> np.ndarray:
    """``f(x,y,z) = sum_ijk c_ijk bx_i(x) by_j(y) bz_k(z)`` on a grid, by three small contractions."""
    f = np.einsum("ijk,kz->ijz", coeffs.astype(np.float32), bz)
    f = np.einsum("ijz,jy->iyz", f, by)
    return np.einsum("iyz,ix->xyz", f, bx)


@dataclass(frozen=True)
class SubjectDeformation:
    """Maps subject (output) world points ``x`` to template world points ``c + (x - c)/s + u(x)``."""

    centre: np.ndarray  # [3]
    scale: np.ndarray  # [3]
    coeffs: np.ndarray  # [3, L, L, L] DCT coefficients of u (mm)
    half_width: float = 120.0

    @staticmethod
    def sample(
        rng: np.random.Generator, centre: np.ndarray, order: int = 3, amplitude_mm: float = 3.0
    ) -> "SubjectDeformation":
        """Random subject: global scale ~U(0.95, 1.05) x per-axis U(0.98, 1.02); u ~ ``amplitude_mm`` / k."""
        scale = rng.uniform(0.95, 1.05) * rng.uniform(0.98, 1.02, size=3)
        k = np.indices((order, order, order)).sum(axis=0)
        coeffs = rng.normal(0.0, 1.0, size=(3, order, order, order)) * amplitude_mm / np.maximum(k, 1)
        coeffs[:, 0, 0, 0] = rng.normal(0.0, 1.0, size=3)  # small translation
        return SubjectDeformation(np.asarray(centre, float), scale, coeffs)

    def displacement_grid(self, axes: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """u on the grid spanned by world coordinate ``axes`` (x, y, z vectors): [3, X, Y, Z] float32."""
        order = self.coeffs.shape[1]
        b = [dct_basis(a - c, order, self.half_width) for a, c in zip(axes, self.centre)]
        return np.stack([separable_field(self.coeffs[d], *b) for d in range(3)])

    def to_template(self, points: np.ndarray) -> np.ndarray:
        """Exact map of arbitrary world points [3, N] (used for a few points, e.g. ray marching)."""
        order = self.coeffs.shape[1]
        rel = points - self.centre[:, None]
        b = [dct_basis(rel[d], order, self.half_width) for d in range(3)]
        u = np.einsum("dijk,in,jn,kn->dn", self.coeffs, b[0], b[1], b[2])
        return self.centre[:, None] + rel / self.scale[:, None] + u


def sample_maps(
    maps: TemplateMaps, template_points: np.ndarray, names: tuple[str, ...] = ("gm", "wm", "brain")
) -> dict[str, np.ndarray]:
    """Trilinearly sample ``names`` (and CSF when all three are asked) at template world points [3, ...]."""
    shape = template_points.shape[1:]
    inv = np.linalg.inv(maps.affine)
    pts = template_points.reshape(3, -1)
    vox = (inv[:3, :3].astype(np.float32) @ pts.astype(np.float32)) + inv[:3, 3:4].astype(np.float32)
    out = {
        name: ndi.map_coordinates(
            getattr(maps, name), vox, order=1, mode="constant", cval=0.0, prefilter=False
        ).reshape(shape)
        for name in names
    }
    if {"gm", "wm", "brain"} <= set(names):
        out["csf"] = np.clip(out["brain"] - out["gm"] - out["wm"], 0.0, 1.0)
    return out
