"""Meningioma geometry: dural attachment site, lobulated shape, volume matching, mass effect and edema.

A meningioma is an extra-axial, dural-based, well-circumscribed mass. We model it as a union of a few
spheres (lobulation) in a local frame at a point ``P`` just outside the brain surface, cut by the dural
plane through ``P`` (tangent to the brain, normal ``n`` pointing out): the flat side is the dural base.
Scaling the shape about ``P`` by ``s`` scales its volume by ``s^3`` (the half-space through ``P`` is
scale-invariant). Every lobe contains ``P``, so the shape is star-shaped about ``P`` and grows
monotonically with ``s``: each voxel has a critical scale at which it joins, and ranking voxels by it
gives a voxelised tumour of exactly the target number of voxels (volume matched to one voxel).
The same site and shape seed serve all timepoints of a subject; only ``s`` changes.

Mass effect: the brain is pushed away from the tumour centroid ``c``, as an incompressible medium around
an inflating cavity of radius ``R`` (``r^3 = rho^3 + R^3``), tapered with distance so it stays local:
material at output radius ``r`` comes from ``rho = cbrt(r^3 - R^3 exp(-max(r - R, 0) / lambda))``
(monotone in ``r``, hence a one-to-one pull-back).

Peritumoral (vasogenic) edema: brain within ``d_e = k_e R`` of the tumour, reaching further in white
matter (edema spreads along WM), growing with tumour size; ``k_e`` is the subject's ``edema_extent``
biomarker (0 for edema-free subjects).

Calcification: balls fixed in the shape frame (unit scale), so they grow with the tumour and stay in place;
tumour voxels whose centre falls in a ball are calcified. They are labelled 1 (non-enhancing tumour core):
calcified tissue is tumour (it counts in the tumour volume) but does not enhance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

#: Attachment sites: name -> outward direction from the brain centre in RAS (x sign is randomised).
ATTACHMENT_SITES: dict[str, tuple[float, float, float]] = {
    "convexity_frontal": (0.55, 0.65, 0.5),
    "convexity_parietal": (0.7, -0.35, 0.6),
    "convexity_temporal": (1.0, 0.05, -0.2),
    "parasagittal": (0.12, -0.1, 1.0),
    "falcine": (0.05, 0.35, 1.0),
    "sphenoid_wing": (0.7, 0.6, -0.3),
    "olfactory_groove": (0.0, 1.0, -0.4),
    "tentorial": (0.45, -0.9, -0.25),
}


def unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def orthonormal_frame(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors orthogonal to ``n`` and to each other."""
    helper = np.array([1.0, 0.0, 0.0]) if abs(n[0]) < 0.9 else np.array([0.0, 1.0, 0.0])
    t1 = unit(np.cross(n, helper))
    return t1, np.cross(n, t1)


@dataclass(frozen=True)
class TumourShape:
    """Lobulated dural-based shape in units of the scale ``s``: spheres (centres [L,3], radii [L])."""

    base: np.ndarray  # P, world mm, on the dural plane
    normal: np.ndarray  # n, outward unit normal of the dural plane
    centres: np.ndarray  # lobe centres relative to P, unit scale
    radii: np.ndarray
    ncr_fraction_radius: float  # radius of the necrotic/non-enhancing core around lobe 0, unit scale
    ncr_threshold_ml: float  # the core appears when the tumour exceeds this volume

    @staticmethod
    def sample(rng: np.random.Generator, base: np.ndarray, normal: np.ndarray) -> "TumourShape":
        """Main lobe centred 0.3-0.6 inside the dura + 2-4 smaller lobes spreading along the dura."""
        n = unit(normal)
        t1, t2 = orthonormal_frame(n)
        n_lobes = int(rng.integers(2, 5))
        centres = [-rng.uniform(0.3, 0.6) * n]
        radii = [1.0]
        for _ in range(n_lobes):
            off = -rng.uniform(0.1, 0.6) * n + rng.normal(0.0, 0.45) * t1 + rng.normal(0.0, 0.45) * t2
            c, r = centres[0] * 0.5 + off, rng.uniform(0.4, 0.75)
            norm = float(np.linalg.norm(c))
            if norm > 0.85 * r:  # every lobe contains P: the shape is star-shaped about P
                c = c * (0.85 * r / norm)
            centres.append(c)
            radii.append(r)
        has_core = rng.random() < 0.5
        return TumourShape(
            base=np.asarray(base, float),
            normal=n,
            centres=np.asarray(centres),
            radii=np.asarray(radii),
            ncr_fraction_radius=float(rng.uniform(0.3, 0.5)),
            ncr_threshold_ml=float(rng.uniform(8.0, 25.0)) if has_core else float("inf"),
        )

    def extent(self) -> float:
        """Radius (unit scale) of a ball around P containing the shape."""
        return float(np.max(np.linalg.norm(self.centres, axis=1) + self.radii))

    def inside(self, rel: np.ndarray, s: float) -> np.ndarray:
        """Membership of points ``rel`` = x - P [N, 3] (mm) at scale ``s`` (mm)."""
        q = rel / s
        ok = q @ self.normal <= 0.0
        lobes = np.zeros(len(q), dtype=bool)
        for c, r in zip(self.centres, self.radii):
            lobes |= ((q - c) ** 2).sum(axis=1) <= r * r
        return ok & lobes

    def critical_scale(self, rel: np.ndarray) -> np.ndarray:
        """Smallest ``s`` with ``rel`` inside (inf beyond the dural plane): per lobe, the positive root of
        ``(r^2 - |c|^2) s^2 + 2 s (x.c) - |x|^2 = 0`` (``|x - s c| = s r``), minimised over lobes."""
        best = np.full(len(rel), np.inf)
        x2 = (rel**2).sum(axis=1)
        for c, r in zip(self.centres, self.radii):
            a = r * r - float(c @ c)
            xc = rel @ c
            best = np.minimum(best, (-xc + np.sqrt(xc * xc + a * x2)) / a)
        best[rel @ self.normal > 0.0] = np.inf
        return best

    def core(self, rel: np.ndarray, s: float) -> np.ndarray:
        q = rel / s
        return ((q - self.centres[0]) ** 2).sum(axis=1) <= self.ncr_fraction_radius**2


def find_attachment(
    brain_along: Callable[[np.ndarray], np.ndarray],
    centre: np.ndarray,
    direction: np.ndarray,
    step_mm: float = 0.5,
    max_mm: float = 140.0,
) -> tuple[np.ndarray, np.ndarray]:
    """March from ``centre`` along ``direction`` until the soft brain mask drops below 0.5.

    ``brain_along(points [3, N]) -> prob [N]`` samples the subject's brain mask. Returns the surface
    point and the outward normal (minus the normalised gradient of the mask there).
    """
    d = unit(direction)
    radii = np.arange(0.0, max_mm, step_mm)
    pts = centre[:, None] + d[:, None] * radii[None]
    prob = brain_along(pts)
    inside = np.nonzero(prob >= 0.5)[0]
    last = int(inside.max()) if len(inside) else 0
    surface = pts[:, last]
    h = 2.0
    offs = np.concatenate([np.eye(3), -np.eye(3)]) * h
    vals = brain_along(surface[:, None] + offs.T)
    grad = (vals[:3] - vals[3:]) / (2 * h)
    normal = unit(-grad) if np.linalg.norm(grad) > 1e-6 else d
    if normal @ d < 0.3:  # degenerate gradient (thin structure): fall back on the ray direction
        normal = d
    return surface, normal


def grid_box(
    affine: np.ndarray, shape: tuple[int, ...], centre: np.ndarray, radius_mm: float
) -> tuple[tuple[slice, ...], np.ndarray]:
    """Index box of the grid around a world ball; returns slices and the box's world points [N, 3]."""
    inv = np.linalg.inv(affine)
    c = inv[:3, :3] @ centre + inv[:3, 3]
    r = radius_mm / np.abs(np.diag(affine)[:3])
    lo = np.clip(np.floor(c - r).astype(int), 0, np.asarray(shape) - 1)
    hi = np.clip(np.ceil(c + r).astype(int) + 1, 1, np.asarray(shape))
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    ijk = np.stack(np.meshgrid(*[np.arange(s.start, s.stop) for s in sl], indexing="ij"), -1).reshape(-1, 3)
    world = ijk @ affine[:3, :3].T + affine[:3, 3]
    return sl, world


def voxelise(
    shape_: TumourShape,
    target_ml: float,
    affine: np.ndarray,
    grid_shape: tuple[int, ...],
    allowed: Callable[[np.ndarray], np.ndarray] | None = None,
) -> tuple[np.ndarray, float]:
    """Label map (0 / 1 ncr / 3 et) with ``round(target / voxel volume)`` tumour voxels; also returns ``s``.

    Every lobe contains ``P``, so the shape is star-shaped about ``P`` and nested in ``s``: each voxel
    has a critical scale ``s*(x)`` above which it is inside. Taking the n-th smallest ``s*`` gives
    exactly n voxels, i.e. the realised volume matches the target up to one voxel's volume.
    ``allowed(world [N, 3]) -> bool [N]`` (the intracranial space) is a fixed set; intersecting a
    nested family with it keeps it nested, so large tumours follow the curved inner skull.
    """
    vox_ml = abs(np.linalg.det(affine[:3, :3])) / 1000.0
    target_n = max(int(round(target_ml / vox_ml)), 1)
    g = np.linspace(-shape_.extent(), shape_.extent(), 40)
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    unit_vol = shape_.inside(pts, 1.0).mean() * (2 * shape_.extent()) ** 3
    s_max = 1.5 * (target_ml * 1000.0 / max(unit_vol, 1e-9)) ** (1.0 / 3.0)
    for _ in range(6):
        sl, world = grid_box(affine, grid_shape, shape_.base, s_max * shape_.extent())
        rel = world - shape_.base
        crit = shape_.critical_scale(rel)
        if allowed is not None:
            crit[~allowed(world)] = np.inf
        if target_n > int(np.isfinite(crit).sum()):
            s_max *= 1.5
            continue
        order = np.argsort(crit, kind="stable")
        s = float(crit[order[target_n - 1]])
        if s <= s_max:
            break
        s_max = 1.5 * s
    m = np.zeros(len(crit), dtype=bool)
    m[order[:target_n]] = True
    box = np.zeros(m.shape, dtype=np.uint8)
    box[m] = 3
    if target_ml >= shape_.ncr_threshold_ml:
        box[m & shape_.core(rel, s)] = 1
    seg = np.zeros(grid_shape, dtype=np.uint8)
    seg[sl] = box.reshape(tuple(x.stop - x.start for x in sl))
    return seg, s


def mass_effect_pullback(points: np.ndarray, centre: np.ndarray, radius: float, decay: float) -> np.ndarray:
    """Source positions [3, ...] of tissue found at ``points`` [3, ...] after the tumour pushed it away.

    ``rho = cbrt(max(r^3 - R^3 exp(-max(r - R, 0)/lambda), 0))`` along the ray from ``centre``.
    """
    rel = points - centre.reshape((3,) + (1,) * (points.ndim - 1))
    r = np.sqrt((rel**2).sum(axis=0))
    rho3 = r**3 - radius**3 * np.exp(-np.maximum(r - radius, 0.0) / decay)
    rho = np.cbrt(np.maximum(rho3, 0.0))
    ratio = np.where(r > 1e-6, rho / np.maximum(r, 1e-6), 0.0)
    return centre.reshape((3,) + (1,) * (points.ndim - 1)) + rel * ratio


def paint_edema(
    seg: np.ndarray, brain: np.ndarray, wm: np.ndarray, spacing: float, reach_mm: float, noise: np.ndarray | None = None
) -> np.ndarray:
    """Label 2 in brain voxels within ``reach_mm x (0.4 + 0.9 WM) x noise`` of the tumour (labels 1, 3)."""
    tumour = seg > 0
    if reach_mm <= 0 or not tumour.any():
        return seg
    idx = np.argwhere(tumour)
    noise_max = float(noise.max()) if noise is not None else 1.0
    pad = int(np.ceil(1.3 * noise_max * reach_mm / spacing)) + 2  # reach never exceeds the box
    lo = np.maximum(idx.min(0) - pad, 0)
    hi = np.minimum(idx.max(0) + pad + 1, seg.shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    dist = ndi.distance_transform_edt(~tumour[sl], sampling=spacing)
    reach = reach_mm * (0.4 + 0.9 * wm[sl])
    if noise is not None:
        reach = reach * noise[sl]
    ed = (dist <= reach) & (brain[sl] > 0.5) & ~tumour[sl]
    out = seg.copy()
    out[sl][ed] = 2
    return out


#: Calcified foci per calcification level: (number range, radius range in unit-scale shape units).
CALCIFICATION_FOCI: dict[str, tuple[tuple[int, int], tuple[float, float]]] = {
    "none": ((0, 0), (0.0, 0.0)),
    "partial": ((3, 6), (0.14, 0.22)),
    "heavy": ((6, 10), (0.22, 0.35)),
}
HEAVY_CORE_RADIUS: tuple[float, float] = (0.45, 0.6)  # unit-scale radius of the heavy level's central focus


@dataclass(frozen=True)
class CalcifiedFoci:
    """Calcified foci: balls fixed in the tumour's shape frame (centres relative to P and radii at unit scale),
    so they scale with the tumour and stay in place across timepoints."""

    centres: np.ndarray  # [F, 3]
    radii: np.ndarray  # [F]

    @staticmethod
    def sample(rng: np.random.Generator, shape_: TumourShape, level: str) -> "CalcifiedFoci":
        """``CALCIFICATION_FOCI[level]`` foci centred at random points of the unit-scale tumour."""
        if level not in CALCIFICATION_FOCI:
            raise ValueError(f"calcification must be one of {sorted(CALCIFICATION_FOCI)}, got {level!r}")
        (lo, hi), (rlo, rhi) = CALCIFICATION_FOCI[level]
        n = int(rng.integers(lo, hi + 1)) if hi > 0 else 0
        if n == 0:
            return CalcifiedFoci(np.zeros((0, 3)), np.zeros(0))
        ext = shape_.extent()
        cand = rng.uniform(-ext, ext, size=(4000, 3))
        cand = cand[shape_.inside(cand, 1.0)]
        centres = cand[rng.choice(len(cand), size=min(n, len(cand)), replace=False)]
        radii = rng.uniform(rlo, rhi, size=len(centres))
        if level == "heavy":  # a dense central conglomerate in the main lobe, plus scattered foci
            centres = np.concatenate([shape_.centres[:1], centres])
            radii = np.concatenate([[rng.uniform(*HEAVY_CORE_RADIUS)], radii])
        return CalcifiedFoci(centres, radii)

    def inside(self, rel: np.ndarray, s: float) -> np.ndarray:
        """Membership of points ``rel`` = x - P [N, 3] (mm) at tumour scale ``s`` (mm)."""
        q = rel / s
        out = np.zeros(len(q), dtype=bool)
        for c, r in zip(self.centres, self.radii):
            out |= ((q - c) ** 2).sum(axis=1) <= r * r
        return out


def calcified_mask(
    seg: np.ndarray, foci: CalcifiedFoci, shape_: TumourShape, s: float, affine: np.ndarray
) -> np.ndarray:
    """Tumour voxels (labels 1, 3) whose centre lies in a calcified focus at scale ``s``."""
    tumour = np.isin(seg, (1, 3))
    out = np.zeros(seg.shape, dtype=bool)
    if len(foci.radii) == 0 or not tumour.any():
        return out
    idx = np.argwhere(tumour)
    world = idx @ affine[:3, :3].T + affine[:3, 3]
    hit = foci.inside(world - shape_.base, s)
    out[tuple(idx[hit].T)] = True
    return out
