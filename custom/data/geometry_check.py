"""Refuse inference inputs that do not match the bundle's ``metadata.json`` (``network_data_format``).

Two checks, both raising :class:`InputGeometryError` (a user-facing ``ValueError``) whose one message names
the case, the file and what was expected:

* :class:`CheckInputFilesd` (first transform, on the raw item, before ``LoadImaged``): the channel files are
  reachable, readable NIfTI (truncated gzip streams are caught by reading the voxels), 3D, share one grid
  (shape and affine within 1e-3 mm), have finite and not all-zero voxels, and their number equals
  ``num_channels`` (``channel_def`` names them), or one 4D file has that many volumes.
* :class:`CheckNetworkInputd` (last transform): the preprocessed tensor is ``[num_channels, *spatial_shape]``.

:func:`check_items` runs the file check over a whole datalist split up front, so every bad case is listed at
once, or skipped and written to a CSV with ``skip_invalid``. Files are only opened for reading.
Without these checks a bad input fails deep inside nibabel/MONAI/torch with a message naming no file.
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform

from custom.data.errors import UserFacingError
from custom.data.nifti_checks import gzip_problem, header_problems

logger = logging.getLogger(__name__)

__all__ = [
    "InputGeometryError",
    "InputSpec",
    "read_input_spec",
    "check_files",
    "check_items",
    "CheckInputFilesd",
    "CheckNetworkInputd",
]

#: Largest absolute affine difference (mm) between channel files still considered the same grid.
AFFINE_TOLERANCE_MM = 1e-3


class InputGeometryError(UserFacingError):
    """An inference input whose files, channels or geometry do not match the bundle's metadata."""


@dataclass(frozen=True)
class InputSpec:
    """What the network expects (from ``network_data_format.inputs.<key>``)."""

    num_channels: int
    spatial_shape: tuple[int, ...]
    channel_names: tuple[str, ...]

    def describe(self) -> str:
        names = ", ".join(self.channel_names) if self.channel_names else "unnamed"
        return f"{self.num_channels} channel(s) ({names}) of a 3D volume"


def read_input_spec(metadata: str | Path | Mapping[str, Any], key: str = "image") -> InputSpec:
    """Parse ``metadata.json`` (path or dict) into an :class:`InputSpec` for input ``key``."""
    meta = json.loads(Path(metadata).read_text()) if isinstance(metadata, (str, Path)) else dict(metadata)
    try:
        spec = meta["network_data_format"]["inputs"][key]
    except KeyError as err:
        raise InputGeometryError(
            f"metadata {metadata if isinstance(metadata, (str, Path)) else ''} has no "
            f"network_data_format.inputs.{key} ({err} missing)"
        ) from None
    channel_def = spec.get("channel_def", {}) or {}
    names = tuple(str(channel_def[k]) for k in sorted(channel_def, key=lambda s: int(s)))
    return InputSpec(int(spec["num_channels"]), tuple(int(s) for s in spec.get("spatial_shape", [])), names)


def _read(path: str, want_volumes: int | None = None) -> tuple[tuple[int, ...], np.ndarray]:
    """Shape (trailing singleton axes dropped) and affine of one file; raises with a one-line reason."""
    import nibabel as nib

    if not os.path.exists(path):
        reason = "symbolic link loop or broken link" if os.path.islink(path) else "file does not exist"
        raise InputGeometryError(f"{path}: {reason}")
    if not os.access(path, os.R_OK):
        raise InputGeometryError(f"{path}: not readable (permission denied)")
    if path.endswith(".gz"):
        corrupt = gzip_problem(path)
        if corrupt is not None:
            raise InputGeometryError(f"{path}: {corrupt}")
    try:
        img = nib.load(path, mmap=False)
        data = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:  # nibabel/gzip/zlib/EOF errors: one line, naming the file
        text = " ".join(str(err).split())
        raise InputGeometryError(
            f"{path}: cannot read NIfTI (truncated or corrupt file?): " f"{type(err).__name__}: {text}"
        ) from None
    shape = tuple(int(s) for s in img.shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    expected_ndim = 3 if want_volumes is None else 4
    if len(shape) != expected_ndim:
        what = "a 3D volume" if want_volumes is None else f"a 4D file with {want_volumes} volumes"
        raise InputGeometryError(f"{path}: shape {tuple(img.shape)}, expected {what}")
    geometry = header_problems(img)
    if geometry:
        raise InputGeometryError(f"{path}: " + "; ".join(geometry))
    n_bad = int(np.count_nonzero(~np.isfinite(data)))
    if n_bad:
        raise InputGeometryError(f"{path}: {n_bad} non-finite voxel(s) (NaN/Inf); expected finite intensities")
    if not np.any(data):
        raise InputGeometryError(f"{path}: image is all zeros")
    return shape, np.asarray(img.affine, dtype=np.float64)


def check_files(files: str | Sequence[str], spec: InputSpec, case: str = "input") -> None:
    """Check one input (a list of per-channel 3D files, or one 4D file) against ``spec``; raise if wrong."""
    paths = [str(files)] if isinstance(files, (str, os.PathLike)) else [str(f) for f in files]
    prefix = f"{case}: "
    if len(paths) == 1 and spec.num_channels > 1:
        shape, _ = _read(paths[0], want_volumes=spec.num_channels)
        if shape[3] != spec.num_channels:
            raise InputGeometryError(f"{prefix}{paths[0]}: {shape[3]} volume(s), expected {spec.describe()}")
        return
    if len(paths) != spec.num_channels:
        raise InputGeometryError(
            f"{prefix}{len(paths)} channel file(s) {paths}, expected {spec.describe()} "
            "as one file per channel in that order (see configs/metadata.json)"
        )
    ref_shape, ref_affine = None, None
    for path in paths:
        try:
            shape, affine = _read(path)
        except InputGeometryError as err:
            raise InputGeometryError(prefix + str(err)) from None
        if ref_shape is None:
            ref_shape, ref_affine = shape, affine
        elif shape != ref_shape:
            raise InputGeometryError(
                f"{prefix}{path}: shape {shape} differs from {paths[0]} shape {ref_shape}; "
                "expected all channels on one grid"
            )
        elif not np.allclose(affine, ref_affine, rtol=0.0, atol=AFFINE_TOLERANCE_MM):
            diff = float(np.max(np.abs(affine - ref_affine)))
            raise InputGeometryError(
                f"{prefix}{path}: affine differs from {paths[0]} by up to {diff:.4g} mm; "
                f"expected all channels on one grid (tolerance {AFFINE_TOLERANCE_MM} mm)"
            )


def check_items(
    items: Sequence[Mapping[str, Any]],
    metadata_file: str,
    key: str = "image",
    skip_invalid: bool = False,
    skipped_out: str | None = None,
) -> list[dict[str, Any]]:
    """Check every datalist item's ``key`` files; raise listing all bad cases, or drop and report them.

    Returns the items that passed (all of them unless ``skip_invalid``). Skipped cases are logged and, when
    ``skipped_out`` is given, written there as CSV (``case_id,problem``).
    """
    from custom.utils import as_bool

    skip_invalid = as_bool(skip_invalid)
    spec = read_input_spec(metadata_file, key)
    good, problems = [], []
    ids = [str(item.get("case_id", f"item {i}")) for i, item in enumerate(items)]
    repeated = sorted({c for c in ids if ids.count(c) > 1})
    if repeated:  # outputs are named by case id: two items with one id would overwrite each other's files
        raise InputGeometryError(
            f"case id(s) listed more than once, their outputs would overwrite each other: {', '.join(repeated)}"
        )
    for i, item in enumerate(items):
        case = ids[i]
        try:
            check_files(item[key], spec, case)
            good.append(dict(item))
        except InputGeometryError as err:
            problems.append((case, str(err)))
    if problems and not skip_invalid:
        raise InputGeometryError(
            f"{len(problems)} of {len(items)} inference input(s) refused:\n"
            + "\n".join(f"  {msg}" for _, msg in problems)
        )
    if problems:
        logger.warning("skipping %d invalid inference input(s):\n%s", len(problems), "\n".join(m for _, m in problems))
        if skipped_out:
            Path(skipped_out).parent.mkdir(parents=True, exist_ok=True)
            with open(skipped_out, "w", newline="") as fh:
                writer = csv.writer(fh)
                writer.writerow(["case_id", "problem"])
                writer.writerows(problems)
    if not good:
        raise InputGeometryError("no valid inference input left after skipping invalid ones")
    return good


class CheckInputFilesd(MapTransform):
    """Raw-item check (before ``LoadImaged``): see :func:`check_files`.

    Args:
        keys: item keys holding the file path(s) (usually ``"image"``).
        metadata_file: the bundle's ``configs/metadata.json``.
    """

    def __init__(self, keys: str | Sequence[str], metadata_file: str) -> None:
        super().__init__(keys)
        self.specs = {k: read_input_spec(metadata_file, str(k)) for k in self.keys}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            check_files(d[key], self.specs[key], str(d.get("case_id", "input")))
        return d


class CheckNetworkInputd(MapTransform):
    """Preprocessed-tensor check: shape must be ``[num_channels, *spatial_shape]``.

    ``spatial_shape`` (the config's ``spatial_size``) overrides the metadata's when given; a difference
    between the two is logged once, since then the network was configured for another grid than documented.
    """

    def __init__(
        self, keys: str | Sequence[str], metadata_file: str, spatial_shape: Sequence[int] | None = None
    ) -> None:
        super().__init__(keys)
        self.metadata_file = str(metadata_file)
        self.expected: dict[Hashable, tuple[int, ...]] = {}
        for k in self.keys:
            spec = read_input_spec(metadata_file, str(k))
            spatial = tuple(int(s) for s in spatial_shape) if spatial_shape is not None else spec.spatial_shape
            if spatial_shape is not None and spec.spatial_shape and spatial != spec.spatial_shape:
                logger.warning(
                    "spatial_size %s differs from %s spatial_shape %s (config override)",
                    list(spatial),
                    metadata_file,
                    list(spec.spatial_shape),
                )
            self.expected[k] = (spec.num_channels, *spatial)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            shape = tuple(int(s) for s in d[key].shape)
            if shape != self.expected[key]:
                source = d.get("case_id") or getattr(d[key], "meta", {}).get("filename_or_obj", "input")
                raise InputGeometryError(
                    f"{source}: preprocessed {key} has shape {list(shape)}, expected "
                    f"{list(self.expected[key])} (channels, spatial) per {self.metadata_file}"
                )
        return d
