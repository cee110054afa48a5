"""Synthetic longitudinal meningioma cohort: orchestration, NIfTI files, cohort.csv, times.csv, datalist.json.

Each subject gets its own random stream (``np.random.SeedSequence(seed).spawn``), so the output depends on
``seed`` only (not on ``workers``), and files are byte-identical across runs (gzip ``mtime=0``).
Per subject: anatomy (template + deformation), Gompertz growth, scan times, attachment site and shape;
per timepoint: the tumour volume-matched on the grid (inside the dural plane and the inner skull, taken
as the subject's brain grown radially by 4 mm), mass effect, edema, four contrasts, files, and
the measured factors recomputed from the seg exactly as written (:func:`custom.data.factors.seg_factors`).
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import pathlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import nibabel as nib
import numpy as np

from custom.constants import MODALITIES
from custom.data.factors import seg_factors
from custom.synth.anatomy import SubjectDeformation, load_template_maps, output_grid, sample_maps
from custom.synth.contrast import smooth_noise, synthesize
from custom.synth.growth import noisy_volume, sample_growth, sample_scan_times
from custom.synth.tumour import (
    ATTACHMENT_SITES,
    TumourShape,
    find_attachment,
    mass_effect_pullback,
    paint_edema,
    voxelise,
)

COHORT_COLUMNS: tuple[str, ...] = (
    "case_id",
    "subject_id",
    "timepoint",
    "time_years",
    "volume_ml",
    "volume_ncr_ml",
    "volume_ed_ml",
    "volume_et_ml",
    "volume_whole_ml",
    "centroid_x",
    "centroid_y",
    "centroid_z",
    "sphericity",
    "surface_area_mm2",
    "extent_x",
    "extent_y",
    "extent_z",
    "log_volume",
    "true_V0_ml",
    "true_a_per_year",
    "true_K_ml",
    "growth_class",
    "target_volume_ml",
    "attachment_site",
)
GZIP_LEVEL: int = 1  # fast; background is exactly 0 so files stay small
DURA_OFFSET_MM: float = 1.0  # the dural plane lies this far outside the brain surface
SKULL_MARGIN_MM: float = 4.0  # inner skull ~ brain surface + this margin (bounds large tumours)


def case_id(subject_index: int, timepoint: int) -> str:
    """``BraTS-MEN-SSSSS-TTT`` with a 1-based subject number."""
    return f"BraTS-MEN-{subject_index + 1:05d}-{timepoint:03d}"


def write_nifti(path: pathlib.Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Deterministic ``.nii.gz``: nibabel serialises to bytes, gzip with ``mtime=0`` (byte-identical reruns)."""
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0))


@dataclass(frozen=True)
class SubjectJob:
    """Everything one worker needs to make one subject (picklable)."""

    index: int
    seed: np.random.SeedSequence
    out_dir: str
    timepoints: int
    spacing: float
    growth: str


def make_subject(job: SubjectJob) -> list[dict[str, object]]:
    """Generate, write and measure all timepoints of one subject; returns its cohort.csv rows."""
    # two independent streams: ground truth (anatomy, growth, tumour) and scanner noise, so that image
    # details never shift the ground-truth draws
    streams = [np.random.SeedSequence(job.seed.entropy, spawn_key=job.seed.spawn_key + (k,)) for k in (0, 1)]
    rng, scan_rng = (np.random.default_rng(s) for s in streams)
    maps = load_template_maps()
    centre = maps.centre
    shape, affine = output_grid(job.spacing, centre)
    axes = tuple(affine[d, d] * np.arange(shape[d]) + affine[d, 3] for d in range(3))
    grid = np.stack(np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij"))  # [3, X, Y, Z]

    deform = SubjectDeformation.sample(rng, centre)
    params = sample_growth(rng, job.growth)
    times = sample_scan_times(rng, job.timepoints)
    sites = sorted(ATTACHMENT_SITES)
    site = sites[int(rng.integers(len(sites)))]
    direction = np.array(ATTACHMENT_SITES[site]) * np.array([rng.choice([-1.0, 1.0]), 1.0, 1.0])
    direction = direction + rng.normal(0.0, 0.12, size=3)

    def brain_along(pts: np.ndarray) -> np.ndarray:
        return sample_maps(maps, deform.to_template(pts), ("brain",))["brain"]

    def intracranial(world: np.ndarray) -> np.ndarray:
        """Inner skull ~ the subject's brain grown radially by SKULL_MARGIN_MM (world [N, 3] -> bool)."""
        rel = world - centre
        r = np.linalg.norm(rel, axis=1, keepdims=True)
        inward = world - rel / np.maximum(r, 1e-6) * np.minimum(r, SKULL_MARGIN_MM)
        return brain_along(inward.T) >= 0.5

    surface, normal = find_attachment(brain_along, centre, direction)
    base = surface + DURA_OFFSET_MM * normal
    tshape = TumourShape.sample(rng, base, normal)
    edema_k = 0.0 if rng.random() < 0.35 else float(rng.uniform(0.2, 0.8))
    edema_noise = np.clip(np.exp(smooth_noise(rng, axes, centre, order=5, sd=0.6)), 0.4, 1.8)
    u = deform.displacement_grid(axes)
    scale = deform.scale.astype(np.float32).reshape(3, 1, 1, 1)
    c3 = centre.astype(np.float32).reshape(3, 1, 1, 1)
    beyond_dura = (
        np.tensordot(normal.astype(np.float32), grid - base.astype(np.float32).reshape(3, 1, 1, 1), axes=1) > 0
    )
    vox_mm3 = float(abs(np.linalg.det(affine[:3, :3])))

    subject_id = f"BraTS-MEN-{job.index + 1:05d}"
    rows: list[dict[str, object]] = []
    for tp, t in enumerate(times):
        target = float(params.volume(t))
        seg, _ = voxelise(tshape, noisy_volume(rng, target), affine, shape, allowed=intracranial)
        tumour = seg > 0
        idx = np.argwhere(tumour)
        c_world = affine[:3, :3] @ idx.mean(axis=0) + affine[:3, 3]
        radius = (3.0 * len(idx) * vox_mm3 / (4.0 * math.pi)) ** (1.0 / 3.0)
        src = mass_effect_pullback(grid, c_world.astype(np.float32), radius, decay=5.0 + 0.5 * radius)
        tissues = sample_maps(maps, c3 + (src - c3) / scale + u)
        del src
        # the dura stops brain pushed past it, only around the tumour's footprint (the brain surface is
        # not convex everywhere: a wider cut would clip neighbouring gyri that bulge past the plane)
        near = ((grid - base.astype(np.float32).reshape(3, 1, 1, 1)) ** 2).sum(0) < (1.5 * radius + 5) ** 2
        outside = beyond_dura & near
        for k in tissues:
            tissues[k][outside] = 0.0
        brain = tissues["brain"] > 0.5
        seg = paint_edema(seg, tissues["brain"], tissues["wm"], job.spacing, edema_k * radius, edema_noise)
        foreground = brain | tumour
        images = synthesize(scan_rng, tissues, seg, foreground, axes, centre)

        cid = case_id(job.index, tp)
        folder = pathlib.Path(job.out_dir) / cid
        folder.mkdir(parents=True, exist_ok=True)
        for m in MODALITIES:
            write_nifti(folder / f"{cid}-{m}.nii.gz", images[m], affine)
        seg_path = folder / f"{cid}-seg.nii.gz"
        write_nifti(seg_path, seg.astype(np.uint8), affine)
        written = nib.load(seg_path)
        f = seg_factors(np.asarray(written.dataobj), written.affine)
        row: dict[str, object] = {"case_id": cid, "subject_id": subject_id, "timepoint": tp, "time_years": float(t)}
        row |= {k: f[k] for k in COHORT_COLUMNS if k in f}
        row |= {
            "true_V0_ml": params.v0_ml,
            "true_a_per_year": params.a_per_year,
            "true_K_ml": params.k_ml,
            "growth_class": params.growth_class,
            "target_volume_ml": target,
            "attachment_site": site,
        }
        rows.append(row)
    return rows


def split_subjects(subject_ids: list[str], split: tuple[float, float, float], seed: int) -> dict[str, list[str]]:
    """Seeded subject-level split into training / validation / test (each non-empty when n >= 3)."""
    if len(split) != 3 or min(split) < 0 or sum(split) <= 0:
        raise ValueError(f"split must be 3 non-negative fractions, got {split}")
    fr = np.asarray(split, dtype=float) / float(sum(split))
    order = list(np.random.default_rng(np.random.SeedSequence([seed, 2024])).permutation(len(subject_ids)))
    n = len(subject_ids)
    n_val = int(round(fr[1] * n))
    n_test = int(round(fr[2] * n))
    if n >= 3:
        n_val, n_test = max(n_val, int(fr[1] > 0)), max(n_test, int(fr[2] > 0))
    n_train = max(n - n_val - n_test, 0)
    names = [subject_ids[i] for i in order]
    return {
        "training": sorted(names[:n_train]),
        "validation": sorted(names[n_train : n_train + n_val]),
        "test": sorted(names[n_train + n_val :]),
    }


def _fmt(v: object) -> object:
    return f"{v:.9g}" if isinstance(v, float) else v


def write_tables(
    out: pathlib.Path, rows: list[dict[str, object]], split: tuple[float, float, float], seed: int
) -> None:
    """cohort.csv (one row per scan), times.csv and the decathlon-style datalist.json (relative paths)."""
    with open(out / "cohort.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(COHORT_COLUMNS), lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _fmt(r[k]) for k in COHORT_COLUMNS})
    with open(out / "times.csv", "w", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["subject_id", "timepoint", "time_years"])
        for r in rows:
            w.writerow([r["subject_id"], r["timepoint"], _fmt(r["time_years"])])
    subjects = sorted({str(r["subject_id"]) for r in rows})
    groups = split_subjects(subjects, split, seed)
    which = {s: k for k, ss in groups.items() for s in ss}
    datalist: dict[str, object] = {
        "name": "synthetic-meningioma",
        "modalities": list(MODALITIES),
        "training": [],
        "validation": [],
        "test": [],
    }
    for r in rows:
        cid = str(r["case_id"])
        item = {
            "case_id": cid,
            "subject_id": r["subject_id"],
            "timepoint": r["timepoint"],
            "time_years": round(float(r["time_years"]), 6),
            "image": [f"{cid}/{cid}-{m}.nii.gz" for m in MODALITIES],
            "label": f"{cid}/{cid}-seg.nii.gz",
        }
        datalist[which[str(r["subject_id"])]].append(item)  # type: ignore[union-attr]
    (out / "datalist.json").write_text(json.dumps(datalist, indent=1) + "\n")


def generate_cohort(
    out_dir: str,
    subjects: int = 40,
    timepoints: int = 4,
    seed: int = 0,
    spacing: float = 1.0,
    workers: int = 2,
    growth: str = "realistic",
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
) -> pathlib.Path:
    """Write a synthetic BraTS-MEN-style longitudinal cohort under ``out_dir`` and return its path.

    ``spacing`` (mm) > 1 gives a coarser grid over the same 240x240x155 mm field of view (7.5 -> 32x32x21);
    ``growth`` "realistic" (a ~0.07/yr) or "fast" (a ~0.5/yr); ``split`` subject-level train/val/test.
    """
    if subjects < 1 or timepoints < 1:
        raise ValueError("subjects and timepoints must be >= 1")
    if growth not in ("realistic", "fast"):
        raise ValueError(f"growth must be 'realistic' or 'fast', got {growth!r}")
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(subjects)
    jobs = [SubjectJob(i, seeds[i], str(out), timepoints, float(spacing), growth) for i in range(subjects)]
    if workers > 1 and subjects > 1:
        with ProcessPoolExecutor(max_workers=min(workers, subjects)) as pool:
            per_subject = list(pool.map(make_subject, jobs))
    else:
        per_subject = [make_subject(j) for j in jobs]
    rows = [r for rs in per_subject for r in rs]
    write_tables(out, rows, split, seed)
    return out
