"""Checks of one NIfTI file beyond "nibabel can open it": stream integrity and header geometry.

* gzip integrity: nibabel reads only the bytes it needs and never reaches the gzip trailer, so a
  ``.nii.gz`` with bytes flipped in the middle decodes to wrong voxels without any error. The whole
  stream is decompressed here, which checks the CRC-32 and length in the trailer (RFC 1952, section 2.3.1),
  as ``gzip -t`` does.
* header geometry (what DICOM converters get wrong): a non-finite affine or pixel size, a singular
  (degenerate) affine, and a qform and an sform that both claim to be valid but disagree (nibabel and MONAI
  use the sform, ITK-based tools the qform, so the orientation is ambiguous).
* background: skull-stripped BraTS-MEN images have a zero background, which the intensity normalisation
  (over non-zero voxels) relies on; a file whose border is mostly non-zero is reported as a warning.

Each function returns one-line messages (empty when fine) and never writes.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "BACKGROUND_BORDER_ZERO_MIN",
    "DEGENERATE_AFFINE_RTOL",
    "QFORM_SFORM_TOLERANCE_MM",
    "background_warning",
    "gzip_problem",
    "header_problems",
]

#: Largest absolute difference (mm) between qform and sform still considered the same geometry.
QFORM_SFORM_TOLERANCE_MM: float = 1e-3
#: ``|det(A)| / prod(column norms of A)`` below this is a degenerate affine (1 = orthogonal axes, 0 = collinear).
DEGENERATE_AFFINE_RTOL: float = 1e-6
#: Smallest fraction of exact zeros on the volume's six faces for a zero background.
BACKGROUND_BORDER_ZERO_MIN: float = 0.5

_CHUNK = 1 << 20


def gzip_problem(path: str | Path) -> str | None:
    """Decompress a ``.gz`` file to its end (checking CRC-32 and size); the reason it is corrupt, or ``None``."""
    try:
        with gzip.open(path, "rb") as handle:
            while handle.read(_CHUNK):
                pass
    except (OSError, EOFError, zlib.error) as err:  # gzip.BadGzipFile is an OSError
        text = " ".join(str(err).split()) or "no message"
        return f"truncated or corrupt gzip stream (full decompression, as gzip -t): {type(err).__name__}: {text}"
    return None


def header_problems(img: Any) -> list[str]:
    """Geometry problems of a loaded nibabel NIfTI image (affine, pixdim, qform/sform agreement)."""
    problems: list[str] = []
    header = img.header
    zooms = np.asarray(header["pixdim"][1:4], dtype=np.float64)
    if not np.all(np.isfinite(zooms)):
        problems.append(f"header pixdim (voxel size) is not finite: {zooms.tolist()}")
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        problems.append("affine is not finite (NaN/Inf in the qform/sform or pixdim of the header)")
        return problems
    linear = affine[:3, :3]
    norms = np.linalg.norm(linear, axis=0)
    scale = float(np.prod(norms))
    det = float(np.linalg.det(linear))
    if scale == 0.0 or abs(det) / scale < DEGENERATE_AFFINE_RTOL:
        problems.append(
            f"degenerate affine (singular voxel-to-world matrix, determinant {det:.3g}, column norms "
            f"{np.round(norms, 4).tolist()}): the file has no usable orientation"
        )
    qcode, scode = int(header["qform_code"]), int(header["sform_code"])
    if qcode > 0 and scode > 0:
        qform = np.asarray(header.get_qform(), dtype=np.float64)
        sform = np.asarray(header.get_sform(), dtype=np.float64)
        if np.all(np.isfinite(qform)) and np.all(np.isfinite(sform)):
            diff = float(np.max(np.abs(qform - sform)))
            if diff > QFORM_SFORM_TOLERANCE_MM:
                problems.append(
                    f"qform and sform disagree by up to {diff:.4g} mm (both set, codes {qcode} and {scode}): "
                    "the orientation is ambiguous (nibabel/MONAI use the sform, ITK-based tools the qform); "
                    "set one of them to the other or reset its code to 0"
                )
    return problems


def background_warning(data: np.ndarray) -> str | None:
    """A warning when most voxels on the six faces of a 3D volume are non-zero (no zero background)."""
    if data.ndim != 3 or min(data.shape) < 2:
        return None
    faces = np.concatenate([data[[0, -1]].ravel(), data[:, [0, -1]].ravel(), data[:, :, [0, -1]].ravel()])  # noqa: E231
    zero = float(np.mean(faces == 0))
    if zero >= BACKGROUND_BORDER_ZERO_MIN:
        return None
    values, counts = np.unique(faces, return_counts=True)
    common = float(values[int(np.argmax(counts))])
    return (
        f"background is not zero: {100 * (1 - zero):.0f} % of the border voxels are non-zero (most common border "
        f"value {common:g}); skull-stripped images with a zero background are expected, so the intensity "
        "normalisation will include the background"
    )
