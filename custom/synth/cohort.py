"""Synthetic longitudinal meningioma cohort: orchestration, NIfTI files, cohort.csv, times.csv, datalist.json.

Each subject gets its own random stream (``np.random.SeedSequence(seed).spawn``), so the output depends on
``seed`` only (not on ``workers``), and files are byte-identical across runs (gzip ``mtime=0``).
Per subject: anatomy (template + deformation), Gompertz growth, scan times, attachment site and shape;
per timepoint: the tumour volume-matched on the grid (inside the dural plane and the inner skull, taken
as the subject's brain grown radially by 4 mm), mass effect, edema, four contrasts, files, and
the measured factors recomputed from the seg exactly as written (:func:`custom.data.factors.seg_factors`).

Version 2 draws each subject's imaging biomarkers first (calcification, T2 signal, edema extent) and its growth
law given them (:mod:`custom.synth.history`), on a stream of its own, so ``table_only`` gives the same laws,
biomarkers, times and (up to the inner skull's bound on very large tumours) the same measured volumes as the
image cohort of the same seed. ``cohort_meta.json`` and the datalist's ``cohort`` key record version and options.
"""

from __future__ import annotations

import csv
import gzip
import json
import math
import pathlib
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np

from custom.constants import MODALITIES
from custom.data.datalist import SPLIT_KEYS, split_subjects
from custom.data.factors import seg_factors
from custom.synth.anatomy import SubjectDeformation, load_template_maps, output_grid, sample_maps
from custom.synth.biomarkers import (
    CALCIFICATION_PROBS,
    EDEMA_EXTENT_RANGE,
    EDEMA_PROB_GIVEN_T2,
    T2_PROBS_GIVEN_CALCIFICATION,
    Biomarkers,
    EffectSizes,
    rapid_intercept,
)
from custom.synth.contrast import smooth_noise, synthesize
from custom.synth.growth import (
    LABEL_HORIZON_YEARS,
    RAPID_THRESHOLD_ML_PER_YEAR,
    SCHEDULES,
    VOLUME_NOISE_SD,
    get_mode,
)
from custom.synth.history import SubjectHistory, sample_history
from custom.synth.tumour import (
    ATTACHMENT_SITES,
    CalcifiedFoci,
    TumourShape,
    calcified_mask,
    find_attachment,
    mass_effect_pullback,
    paint_edema,
    voxelise,
)

#: Generator version written to cohort_meta.json and datalist.json (2: biomarker-conditioned growth laws).
COHORT_VERSION: str = "2.1.0"

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
    "calcification",
    "t2_signal",
    "edema_extent",
    "rapid_growth",
    "rapid_probability",
    "atypical",
    "true_rgr_per_year",
    "true_agr_ml_per_year",
    "past_inflection",
    "volume_calc_ml",
)
#: Columns measured from the written segmentation: empty in a table-only cohort (no images).
IMAGE_COLUMNS: tuple[str, ...] = (
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
    "attachment_site",
    "volume_calc_ml",
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
    schedule: str = "irregular"
    biomarkers: bool = True
    effects: EffectSizes = field(default_factory=EffectSizes)
    force: Biomarkers | None = None


def subject_streams(job: SubjectJob) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    """Three independent streams of one subject: ground truth geometry (anatomy, site, shape, edema field,
    calcified foci), scanner noise and natural history (:mod:`custom.synth.history`)."""
    streams = [np.random.SeedSequence(job.seed.entropy, spawn_key=job.seed.spawn_key + (k,)) for k in (0, 1, 2)]
    rng, scan_rng, history_rng = (np.random.default_rng(s) for s in streams)
    return rng, scan_rng, history_rng


def subject_history(job: SubjectJob, history_rng: np.random.Generator | None = None) -> SubjectHistory:
    """The subject's natural history, from its history stream (the same with and without images)."""
    if history_rng is None:
        history_rng = subject_streams(job)[2]
    return sample_history(history_rng, job.timepoints, job.growth, job.schedule, job.biomarkers, job.effects, job.force)


@dataclass
class RenderedScan:
    """One timepoint of one subject in memory: label map, calcified voxels, the four images and the grid."""

    timepoint: int
    time_years: float
    target_volume_ml: float
    seg: np.ndarray
    calcified: np.ndarray
    images: dict[str, np.ndarray]
    affine: np.ndarray


def render_subject(job: SubjectJob) -> tuple[SubjectHistory, str, list[RenderedScan]]:
    """Draw one subject's history and render every timepoint (no files): (history, attachment site, scans)."""
    # ground truth geometry, scanner noise and natural history on separate streams, so image details never
    # shift the natural-history draws (and table-only cohorts reproduce them)
    rng, scan_rng, history_rng = subject_streams(job)
    history = subject_history(job, history_rng)
    maps = load_template_maps()
    centre = maps.centre
    shape, affine = output_grid(job.spacing, centre)
    axes = tuple(affine[d, d] * np.arange(shape[d]) + affine[d, 3] for d in range(3))
    grid = np.stack(np.meshgrid(*[a.astype(np.float32) for a in axes], indexing="ij"))  # [3, X, Y, Z]

    deform = SubjectDeformation.sample(rng, centre)
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
    edema_k = history.markers.edema_extent
    edema_noise = np.clip(np.exp(smooth_noise(rng, axes, centre, order=5, sd=0.6)), 0.4, 1.8)
    foci = CalcifiedFoci.sample(rng, tshape, history.markers.calcification)
    u = deform.displacement_grid(axes)
    scale = deform.scale.astype(np.float32).reshape(3, 1, 1, 1)
    c3 = centre.astype(np.float32).reshape(3, 1, 1, 1)
    beyond_dura = (
        np.tensordot(normal.astype(np.float32), grid - base.astype(np.float32).reshape(3, 1, 1, 1), axes=1) > 0
    )
    vox_mm3 = float(abs(np.linalg.det(affine[:3, :3])))

    scans: list[RenderedScan] = []
    for tp, (t, target, drawn) in enumerate(zip(history.times, history.target_volumes(), history.drawn_volumes())):
        seg, s_scale = voxelise(tshape, float(drawn), affine, shape, allowed=intracranial)
        calcified = calcified_mask(seg, foci, tshape, s_scale, affine)
        seg[calcified] = 1  # calcified tumour does not enhance: non-enhancing tumour core
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
        images = synthesize(scan_rng, tissues, seg, foreground, axes, centre, history.markers.t2_signal, calcified)
        scans.append(RenderedScan(tp, float(t), float(target), seg, calcified, images, affine))
    return history, site, scans


def make_subject(job: SubjectJob) -> list[dict[str, object]]:
    """Generate, write and measure all timepoints of one subject; returns its cohort.csv rows."""
    history, site, scans = render_subject(job)
    subject_id = f"BraTS-MEN-{job.index + 1:05d}"
    columns = history.columns()
    rows: list[dict[str, object]] = []
    for scan in scans:
        cid = case_id(job.index, scan.timepoint)
        folder = pathlib.Path(job.out_dir) / cid
        folder.mkdir(parents=True, exist_ok=True)
        for m in MODALITIES:
            write_nifti(folder / f"{cid}-{m}.nii.gz", scan.images[m], scan.affine)
        seg_path = folder / f"{cid}-seg.nii.gz"
        write_nifti(seg_path, scan.seg.astype(np.uint8), scan.affine)
        written = nib.load(seg_path)
        f = seg_factors(np.asarray(written.dataobj), written.affine)
        row: dict[str, object] = {
            "case_id": cid,
            "subject_id": subject_id,
            "timepoint": scan.timepoint,
            "time_years": scan.time_years,
        }
        row |= {k: f[k] for k in COHORT_COLUMNS if k in f}
        row |= columns
        row |= {
            "target_volume_ml": scan.target_volume_ml,
            "attachment_site": site,
            "volume_calc_ml": float(scan.calcified.sum()) * float(abs(np.linalg.det(scan.affine[:3, :3]))) / 1000.0,
        }
        rows.append(row)
    return rows


def table_subject(job: SubjectJob) -> list[dict[str, object]]:
    """cohort.csv rows of one subject without images: history columns and the measured volume the image
    cohort would have, ``max(round(V(t) exp(eps) / v), 1) v`` with ``v`` the voxel volume at ``job.spacing``
    (volume matching is exact to one voxel; only a tumour stopped by the inner skull would be smaller)."""
    history = subject_history(job)
    vox_ml = job.spacing**3 / 1000.0
    subject_id = f"BraTS-MEN-{job.index + 1:05d}"
    columns = {k: "" for k in IMAGE_COLUMNS} | history.columns()
    rows: list[dict[str, object]] = []
    for tp, (t, target, drawn) in enumerate(zip(history.times, history.target_volumes(), history.drawn_volumes())):
        vol = max(int(round(float(drawn) / vox_ml)), 1) * vox_ml
        row: dict[str, object] = {
            "case_id": case_id(job.index, tp),
            "subject_id": subject_id,
            "timepoint": tp,
            "time_years": float(t),
            "volume_ml": vol,
            "log_volume": math.log(vol),
        }
        row |= columns
        row["target_volume_ml"] = float(target)
        rows.append(row)
    return rows


def _fmt(v: object) -> object:
    return f"{v:.9g}" if isinstance(v, float) else v


def cohort_meta(options: dict[str, object], effects: EffectSizes) -> dict[str, object]:
    """Generator version, options and the natural-history model they imply (cohort_meta.json)."""
    return {
        "generator": "custom.synth",
        "version": COHORT_VERSION,
        "options": options,
        "effects": effects.as_dict(),
        "rapid_intercept": rapid_intercept(effects) if options.get("biomarkers", True) else None,
        "growth_mode": get_mode(str(options["growth"])).as_dict(),
        "label_horizon_years": LABEL_HORIZON_YEARS,
        "rapid_threshold_ml_per_year": RAPID_THRESHOLD_ML_PER_YEAR,
        "volume_noise_sd": VOLUME_NOISE_SD,
        "biomarker_model": {
            "calcification_probs": dict(zip(("none", "partial", "heavy"), CALCIFICATION_PROBS)),
            "t2_probs_given_calcification": {k: list(v) for k, v in T2_PROBS_GIVEN_CALCIFICATION.items()},
            "edema_prob_given_t2": EDEMA_PROB_GIVEN_T2,
            "edema_extent_range": list(EDEMA_EXTENT_RANGE),
        },
    }


def write_tables(
    out: pathlib.Path,
    rows: list[dict[str, object]],
    split: tuple[float, float, float],
    seed: int,
    meta: dict[str, object] | None = None,
    datalist: bool = True,
) -> None:
    """cohort.csv (one row per scan), times.csv, cohort_meta.json (when ``meta``) and, with ``datalist``, the
    decathlon-style datalist.json (relative paths; its ``cohort`` key holds version and options)."""
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
    if meta is not None:
        (out / "cohort_meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    if not datalist:
        return
    subjects = sorted({str(r["subject_id"]) for r in rows})
    groups = dict(zip(SPLIT_KEYS, split_subjects(subjects, split, seed)))
    which = {s: k for k, ss in groups.items() for s in ss}
    dl: dict[str, object] = {
        "name": "synthetic-meningioma",
        "modalities": list(MODALITIES),
    }
    if meta is not None:
        dl["cohort"] = {k: meta[k] for k in ("generator", "version", "options")}
    dl |= {"training": [], "validation": [], "test": []}
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
        dl[which[str(r["subject_id"])]].append(item)  # type: ignore[union-attr]
    (out / "datalist.json").write_text(json.dumps(dl, indent=1) + "\n")


def _biomarkers_flag(biomarkers: bool | str) -> bool:
    if isinstance(biomarkers, bool):
        return biomarkers
    if str(biomarkers).lower() in ("on", "true", "1"):
        return True
    if str(biomarkers).lower() in ("off", "false", "0"):
        return False
    raise ValueError(f"biomarkers must be 'on' or 'off', got {biomarkers!r}")


def _forced(force: Sequence[Biomarkers | dict | None] | None, subjects: int) -> list[Biomarkers | None]:
    if force is None:
        return [None] * subjects
    if len(force) != subjects:
        raise ValueError(f"force_biomarkers has {len(force)} entries for {subjects} subjects")
    return [f if f is None or isinstance(f, Biomarkers) else Biomarkers(**f) for f in force]


def generate_cohort(
    out_dir: str,
    subjects: int = 40,
    timepoints: int = 4,
    seed: int = 0,
    spacing: float = 1.0,
    workers: int = 2,
    growth: str = "realistic",
    split: tuple[float, float, float] = (0.7, 0.15, 0.15),
    schedule: str = "irregular",
    biomarkers: bool | str = True,
    table_only: bool = False,
    effects: EffectSizes | None = None,
    force_biomarkers: Sequence[Biomarkers | dict | None] | None = None,
) -> pathlib.Path:
    """Write a synthetic BraTS-MEN-style longitudinal cohort under ``out_dir`` and return its path.

    ``spacing`` (mm) > 1 gives a coarser grid over the same 240x240x155 mm field of view (7.5 -> 32x32x21);
    ``growth`` "realistic" (literature-calibrated) or "fast" (a ~0.5/yr, for short demos); ``split``
    subject-level train/val/test; ``schedule`` "irregular" (gaps 0.5-2 yr) or "protocol" (0, 0.5, 1, 1.5, 2, 3,
    4, 5 yr, the first ``timepoints``); ``biomarkers`` on (growth depends on calcification, edema and T2
    signal) or off (the control cohort: biomarkers drawn and painted, growth independent of them);
    ``table_only`` writes cohort.csv, times.csv and cohort_meta.json without images (measured volumes as the
    images at ``spacing`` would give); ``effects`` the odds ratios (AIMSS defaults); ``force_biomarkers`` one
    :class:`Biomarkers` (or dict, or None to draw) per subject, replacing the drawn values.
    """
    if subjects < 1 or timepoints < 1:
        raise ValueError("subjects and timepoints must be >= 1")
    get_mode(growth)
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "protocol" and timepoints > 8:
        raise ValueError(f"schedule 'protocol' has 8 visits, asked for {timepoints} timepoints")
    on = _biomarkers_flag(biomarkers)
    effects = effects or EffectSizes()
    forced = _forced(force_biomarkers, subjects)
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = np.random.SeedSequence(seed).spawn(subjects)
    jobs = [
        SubjectJob(i, seeds[i], str(out), timepoints, float(spacing), growth, schedule, on, effects, forced[i])
        for i in range(subjects)
    ]
    work = table_subject if table_only else make_subject
    if workers > 1 and subjects > 1 and not table_only:
        with ProcessPoolExecutor(max_workers=min(workers, subjects)) as pool:
            per_subject = list(pool.map(work, jobs))
    else:
        per_subject = [work(j) for j in jobs]
    rows = [r for rs in per_subject for r in rs]
    options: dict[str, object] = {
        "subjects": subjects,
        "timepoints": timepoints,
        "seed": seed,
        "spacing": float(spacing),
        "growth": growth,
        "schedule": schedule,
        "biomarkers": on,
        "table_only": bool(table_only),
        "split": [float(x) for x in split],
        "forced_biomarkers": force_biomarkers is not None,
    }
    write_tables(out, rows, split, seed, cohort_meta(options, effects), datalist=not table_only)
    return out
