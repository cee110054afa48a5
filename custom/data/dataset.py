"""Datasets for the bundles: prepare the default synthetic cohort, validate, cache preprocessed tensors.

``.nii.gz`` decoding runs at only a few volumes per second per core, far below GPU training speed, so
preprocessed tensors are cached once: in memory (``cache="memory"``, MONAI ``CacheDataset``), on disk
(``"disk"``, MONAI ``PersistentDataset``; wipe the folder when transforms change), or not at all (``"none"``).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

import torch
from monai.data import CacheDataset, Dataset, PersistentDataset
from monai.transforms import Compose

from custom.data.errors import DataValidationError, UserFacingError

logger = logging.getLogger(__name__)


#: The bundles' default ``dataset_dir``: the only folder in which a missing cohort is generated without asking.
DEFAULT_SYNTHETIC_DIR = "data/synthetic"


def _inside(path: Path, folder: Path) -> bool:
    try:
        Path(os.path.realpath(path)).relative_to(os.path.realpath(folder))
        return True
    except ValueError:
        return False


def _is_default_synthetic(root: Path) -> bool:
    return os.path.realpath(root) == os.path.realpath(DEFAULT_SYNTHETIC_DIR)


def _writable_target(path: Path, what: str) -> None:
    """Raise a clean error when ``path``'s folder cannot be created or written."""
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserFacingError(f"cannot create the folder {folder} for the {what}: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK):
        raise UserFacingError(
            f"cannot write the {what} to {path}: the folder {folder} is not writable; "
            "point output_dir (or datalist) to a folder you can write"
        )


def datalist_target(dataset_dir: str | Path, datalist: str | Path, output_dir: str | Path | None) -> Path:
    """Where a datalist built from ``dataset_dir`` is written: ``datalist``, unless that lies inside the data
    folder and an ``output_dir`` is given, then ``<output_dir>/datalist.json`` (the data folder is never written)."""
    dl = Path(datalist)
    if output_dir is not None and _inside(dl, Path(dataset_dir)):
        return Path(output_dir) / "datalist.json"
    return dl


def prepare_datalist(
    dataset_dir: str,
    datalist: str,
    synthetic: dict[str, Any] | None = None,
    spacing: float | Sequence[float] = 1.875,
    workers: int = 2,
    skip_invalid: bool = False,
    output_dir: str | None = None,
    generate_synthetic: bool | None = None,
    verify: bool = True,
) -> str:
    """Return the path of a datalist that matches ``dataset_dir``, building (or generating) it when needed.

    1. An existing ``datalist`` (or, failing that, ``<output_dir>/datalist.json`` from an earlier run) is checked
       against the folder (:func:`custom.data.datalist_check.check_datalist_matches`: cases added, removed or moved
       since raise :class:`~custom.data.datalist_check.StaleDatalistError`) and reused.
    2. A missing or empty ``dataset_dir`` gets the embedded synthetic cohort only when ``generate_synthetic`` is true
       (``None``: only for the default ``data/synthetic``), announced in one line on stderr. ``synthetic`` holds
       ``subjects``, ``timepoints``, ``seed``, ``growth``, ``schedule``, ``biomarkers``; it is written at the
       training ``spacing``. Any other missing or empty folder is a :class:`DataValidationError` naming it.
    3. A folder with BraTS-MEN cases but no datalist: one is built, validated and written to
       :func:`datalist_target` (``<output_dir>/datalist.json`` when ``datalist`` lies in the data folder; the data
       folder is never written). With ``skip_invalid`` invalid cases are left out and listed in
       ``skipped_datalist.csv`` beside the written datalist.
    """
    from custom.utils import as_bool

    root = Path(dataset_dir)
    dl = Path(datalist)
    target = datalist_target(root, dl, output_dir)
    for candidate in dict.fromkeys([dl, target]):
        if candidate.exists():
            if as_bool(verify) and root.is_dir():
                from custom.data.datalist_check import check_datalist_matches

                check_datalist_matches(
                    candidate,
                    root,
                    rebuild_hint=f"delete it, or rebuild it with: python -m custom datalist --data_dir {root} "
                    f"--out {candidate}",
                )
            return str(candidate)
    empty = not root.exists() or (root.is_dir() and not any(root.iterdir()))
    if empty:
        generate = _is_default_synthetic(root) if generate_synthetic is None else as_bool(generate_synthetic)
        state = "does not exist" if not root.exists() else "is empty"
        if not generate:
            raise DataValidationError(
                f"dataset folder {root} {state}: no BraTS-MEN case to use (expected <case>/<case>-t1c.nii.gz with "
                f"case = BraTS-MEN-SSSSS-TTT); the synthetic cohort is generated only in the default "
                f"{DEFAULT_SYNTHETIC_DIR} or with generate_synthetic true"
            )
        from custom.synth.cohort import generate_cohort

        syn = dict(synthetic or {})
        sp = float(spacing if isinstance(spacing, (int, float)) else spacing[0])
        subjects, timepoints = int(syn.get("subjects", 40)), int(syn.get("timepoints", 4))
        print(
            f"dataset_dir {root} {state}: generating the synthetic cohort there "
            f"({subjects} subjects x {timepoints} timepoints)",
            file=sys.stderr,
            flush=True,
        )
        generate_cohort(
            str(root),
            subjects=subjects,
            timepoints=timepoints,
            seed=int(syn.get("seed", 0)),
            spacing=float(syn.get("spacing", sp)),
            workers=workers,
            growth=str(syn.get("growth", "realistic")),
            schedule=str(syn.get("schedule", "irregular")),
            biomarkers=syn.get("biomarkers", True),
        )
        generated = root / "datalist.json"
        if dl.resolve() != generated.resolve():
            _writable_target(dl, "datalist")
            dl.write_text(generated.read_text())
        return str(dl)
    if not root.is_dir():
        raise DataValidationError(f"dataset_dir {root} is not a folder")
    from custom.data.datalist import build_datalist, write_datalist

    _writable_target(target, "datalist")
    times = root / "times.csv"
    built = build_datalist(
        str(root),
        times_csv=str(times) if times.exists() else None,
        skip_invalid=as_bool(skip_invalid),
        skipped_out=str(target.with_name("skipped_datalist.csv")) if as_bool(skip_invalid) else None,
    )
    write_datalist(built, str(target))
    print(f"datalist of {root} written to {target}", file=sys.stderr, flush=True)
    return str(target)


def load_split(
    datalist: str,
    split: str,
    limit: int | None = None,
    validate: bool = True,
    skip_invalid: bool = False,
    skipped_dir: str | None = None,
) -> list[dict[str, Any]]:
    """Items of one split with absolute paths, validated up front (every problem listed at once).

    With ``skip_invalid`` the invalid cases are dropped and listed in ``<skipped_dir>/skipped_<split>.csv``
    (``skipped_dir`` defaults to the datalist's folder; the bundles pass their ``output_dir``); otherwise a
    :class:`custom.data.validation.DataValidationError` names each case and file.
    """
    from custom.data.datalist import read_datalist

    # with skip_invalid a missing listed file is kept here, so that validation names it and the case is skipped
    items = read_datalist(datalist, split, keep_missing=bool(skip_invalid and validate))
    if limit:
        items = items[: int(limit)]
    if validate and items:
        from custom.data.datalist import write_skipped
        from custom.data.validation import validate_cases

        report = validate_cases(items_to_cases(items), require_seg=False, check_content=True)
        for warning in report.warnings:
            logger.warning("%s", warning)
        if report.problems:
            if not skip_invalid:
                report.raise_if_any()
            bad = set(report.invalid_case_ids)
            out = Path(skipped_dir or Path(datalist).parent) / f"skipped_{split}.csv"
            _writable_target(out, "list of skipped cases")
            write_skipped(report, out)
            logger.warning("skipping %d invalid case(s) of split %s; list in %s", len(bad), split, out)
            print(f"skipped {len(bad)} invalid case(s) of split {split}; list in {out}", file=sys.stderr, flush=True)
            items = [it for it in items if it.get("case_id") not in bad]
    return items


def items_to_cases(items: list[dict[str, Any]]) -> list[Any]:
    """Datalist items -> :class:`custom.data.discovery.CaseRecord` so they go through the same validation."""
    from custom.constants import MODALITIES
    from custom.data.case_record import CaseRecord

    cases = []
    for i, item in enumerate(items):
        images = item.get("image", [])
        images = [images] if isinstance(images, str) else list(images)
        case_id = str(item.get("case_id", f"item{i}"))
        cases.append(
            CaseRecord(
                case_id=case_id,
                subject_id=str(item.get("subject_id", case_id)),
                timepoint=int(item.get("timepoint", 0)),
                images={m: Path(p) for m, p in zip(MODALITIES, images)},
                seg=Path(item["label"]) if item.get("label") else None,
                folder=Path(images[0]).parent if images else Path("."),
            )
        )
    return cases


def make_dataset(
    datalist: str,
    split: str,
    transform: Compose,
    cache: str = "memory",
    cache_dir: str | None = None,
    num_workers: int = 0,
    limit: int | None = None,
    validate: bool = True,
    skip_invalid: bool = False,
    device: Any = None,
    skipped_dir: str | None = None,
    min_items: int | None = None,
    min_items_reason: str = "batch_size: the training loader drops the last incomplete batch, so training would "
    "train nothing",
) -> Dataset:
    """A MONAI dataset of one split with the requested caching.

    ``cache``: ``"gpu"`` keeps the preprocessed image and factors tensors on ``device`` (MONAI's fast-training
    pattern: ``CacheDataset`` ending in ``ToDeviced``; use a loader without workers or pinning), so a training
    step never waits for host-to-device copies; ``"memory"`` caches on the host, ``"disk"`` in ``cache_dir``,
    ``"none"`` decodes every time; ``"auto"`` is ``"gpu"`` on CUDA devices and ``"memory"`` otherwise.
    ``skipped_dir``: where ``skipped_<split>.csv`` goes with ``skip_invalid`` (see :func:`load_split`).
    ``min_items``: fewest items the split must keep (training: the batch size, since the loader drops the last
    incomplete batch and fewer cases would train nothing; validation: 2, for the latent diagnostics), with
    ``min_items_reason`` saying why; fewer raise :class:`DataValidationError` naming the split sizes.
    """
    from custom.utils import as_bool

    items = load_split(
        datalist,
        split,
        limit=limit,
        validate=as_bool(validate),
        skip_invalid=as_bool(skip_invalid),
        skipped_dir=skipped_dir,
    )
    if not items:
        raise DataValidationError(
            f"split '{split}' of {datalist} is empty ({_split_sizes(datalist)}): nothing to train or evaluate on"
        )
    if min_items is not None and len(items) < int(min_items):
        raise DataValidationError(
            f"split '{split}' of {datalist} has {len(items)} usable case(s), fewer than the {int(min_items)} needed "
            f"({min_items_reason}); split sizes: {_split_sizes(datalist)}; add cases or change the split"
        )
    import torch

    if cache == "auto":
        cache = "gpu" if device is not None and torch.device(device).type == "cuda" else "memory"
    if cache == "gpu":
        from monai.transforms import ToDeviced

        if device is None or torch.device(device).type != "cuda":
            cache = "memory"
        else:
            transform = _to_device_before_random(transform, ToDeviced, device)
    if cache in ("memory", "gpu"):
        return CacheDataset(
            items, transform=transform, cache_rate=1.0, num_workers=max(1, int(num_workers)), progress=False
        )
    if cache == "disk":
        cdir = Path(cache_dir or Path(datalist).parent / ".cache")
        cdir.mkdir(parents=True, exist_ok=True)
        return PersistentDataset(items, transform=transform, cache_dir=str(cdir))
    if cache == "none":
        return Dataset(items, transform=transform)
    raise ValueError(f"cache must be 'memory', 'disk' or 'none', got {cache!r}")


def _split_sizes(datalist: str) -> str:
    """``training 3, validation 1, test 1`` as listed in the datalist file."""
    import json

    try:
        raw = json.loads(Path(datalist).read_text(encoding="utf-8"))
        return ", ".join(f"{k} {len(raw.get(k, []) or [])}" for k in ("training", "validation", "test"))
    except (OSError, ValueError):
        return "unknown"


def _to_device_before_random(transform: Compose, to_device: Any, device: Any) -> Compose:
    """Insert ``ToDeviced`` just before the first random transform (or at the end when there is none).

    ``CacheDataset`` caches the output of the deterministic prefix, so the cache lives on the GPU and the random
    augmentations (MONAI's ``RandAffined`` etc.) then run on the GPU tensors every epoch instead of on the CPU.
    The label moves too when augmenting, so that image and label are resampled on the same device.
    """
    from monai.transforms import Randomizable

    steps = list(transform.transforms)
    first = next((i for i, t in enumerate(steps) if isinstance(t, Randomizable)), len(steps))
    keys = ["image", "factors"] + (["label"] if first < len(steps) else [])
    mover = to_device(keys=keys, device=device, allow_missing_keys=True)
    for step in steps[first:]:
        _grid_on(step, device)
    return Compose(steps[:first] + [mover] + steps[first:])


def _grid_on(step: Any, device: Any) -> None:
    """Make a ``RandAffined`` build its sampling grid on ``device``, where its inputs now live.

    MONAI builds the grid on the device the transform was constructed with (``None``: the CPU) whatever the input's
    device, then copies it over: 62 ms per 4 x 128^3 sample on an H200 host against 5 ms with the grid on the GPU
    (MONAI 1.6.1, ten warm calls), and three concurrent runs then spent ~85 s per epoch waiting for the CPU.
    """
    from monai.transforms import RandAffined

    if isinstance(step, RandAffined):
        step.rand_affine.rand_affine_grid.device = torch.device(device)
        step.rand_affine.resampler.device = torch.device(device)
