"""Small NIfTI cases for the bad-input tests: 16^3 volumes with a zero background, written in a temporary folder."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import nibabel as nib
import numpy as np

MODS = ("t1c", "t1n", "t2f", "t2w")
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
SHAPE = (16, 16, 16)


def volume(seed: int = 0) -> np.ndarray:
    """A brain-like block of positive values inside a zero background."""
    data = np.zeros(SHAPE, np.float32)
    data[3:13, 3:13, 3:13] = np.random.default_rng(seed).random((10, 10, 10)).astype(np.float32) + 1.0
    return data


def segmentation() -> np.ndarray:
    seg = np.zeros(SHAPE, np.uint8)
    seg[6:10, 6:10, 6:10] = 1
    seg[7:9, 7:9, 7:9] = 3
    return seg


def make_case(
    root: Path, subject: int = 1, tp: int = 0, affine: np.ndarray = AFFINE, name: str | None = None
) -> tuple[str, Path]:
    """``<root>/<case>/<case>-{t1c,t1n,t2f,t2w,seg}.nii.gz``; returns the case id and its folder."""
    cid = f"BraTS-MEN-{subject:05d}-{tp:03d}"
    folder = root / (name or cid)
    folder.mkdir(parents=True, exist_ok=True)
    for i, m in enumerate(MODS):
        nib.save(nib.Nifti1Image(volume(subject * 100 + tp * 10 + i), affine), folder / f"{cid}-{m}.nii.gz")
    nib.save(nib.Nifti1Image(segmentation(), affine), folder / f"{cid}-seg.nii.gz")
    return cid, folder


def make_cohort(root: Path, subjects: int = 4, timepoints: int = 1) -> list[str]:
    return [make_case(root, s, t)[0] for s in range(1, subjects + 1) for t in range(timepoints)]


def file_of(root: Path, cid: str, kind: str) -> Path:
    return root / cid / f"{cid}-{kind}.nii.gz"


def snapshot(root: Path) -> dict[str, tuple]:
    """Content hash and mode (or link target) of every entry under ``root``, links not followed."""
    state: dict[str, tuple] = {}
    for dirpath, dirnames, names in os.walk(root):
        for name in names + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                state[path] = ("link", os.readlink(path))
            else:
                with open(path, "rb") as handle:
                    state[path] = (hashlib.sha256(handle.read()).hexdigest(), os.stat(path).st_mode)
    return state


def regzip_stored(path: Path) -> None:
    """Rewrite a ``.nii.gz`` with stored (uncompressed) deflate blocks, so that flipping a byte keeps it decodable."""
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw, compresslevel=0, mtime=0))
