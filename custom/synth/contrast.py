"""Tissue classes -> the four MRI contrasts, plus scanner variation (gain, bias field, Rician noise).

Mean relative intensities per tissue follow the usual appearance of meningioma on clinical MRI:
T1 (t1n) WM > GM > CSF, the tumour iso- to hypointense to GM; post-contrast T1 (t1c) the same plus strong,
homogeneous enhancement of the enhancing tumour (label 3); T2 (t2w) CSF and edema bright; FLAIR (t2f)
CSF suppressed, edema bright. A voxel mixes tissue means by its GM/WM/CSF probabilities (partial volume).

Biomarkers: the tumour's T2 signal class sets its mean on t2w (and t2f) relative to grey matter (GM 0.95 on
both): hypo 0.70 / 0.75, iso 0.95 / 0.95, hyper 1.25 / 1.15 (t2w / t2f); calcified voxels are dark on every
sequence and do not enhance (:data:`CALCIFICATION_MEANS`, below CSF on t1n and t1c, below WM on t2w).

Scanner variation per scan and modality: a global gain (log-normal), a smooth multiplicative bias field
``exp(sum of low-order DCT terms)`` (the slowly varying field N4 corrects; Tustison et al., IEEE TMI 2010),
and Rician noise ``|I + sigma (n1 + i n2)|`` (magnitude of complex Gaussian noise; Gudbjartsson & Patz,
MRM 1995). The image is skull-stripped: everything outside brain + tumour is exactly 0.
"""

from __future__ import annotations

import numpy as np

from custom.constants import MODALITIES
from custom.synth.anatomy import dct_basis, separable_field

#: Relative mean intensity per (modality, tissue); WM on t1n = 1.
TISSUE_MEANS: dict[str, dict[str, float]] = {
    "t1n": {"csf": 0.28, "gm": 0.68, "wm": 1.00, "et": 0.62, "ncr": 0.40, "ed": 0.62},
    "t1c": {"csf": 0.30, "gm": 0.70, "wm": 1.00, "et": 1.70, "ncr": 0.42, "ed": 0.64},
    "t2w": {"csf": 1.70, "gm": 0.95, "wm": 0.62, "et": 0.98, "ncr": 1.35, "ed": 1.35},
    "t2f": {"csf": 0.18, "gm": 0.95, "wm": 0.68, "et": 0.95, "ncr": 0.85, "ed": 1.45},
}
#: Tumour (labels 1 and 3 outside calcification) mean on t2w / t2f per T2 signal class (GM = 0.95).
T2_SIGNAL_MEANS: dict[str, dict[str, float]] = {
    "t2w": {"hypo": 0.70, "iso": 0.95, "hyper": 1.25},
    "t2f": {"hypo": 0.75, "iso": 0.95, "hyper": 1.15},
}
#: Calcified tumour voxels: signal void on every sequence, no enhancement on t1c.
CALCIFICATION_MEANS: dict[str, float] = {"t1n": 0.20, "t1c": 0.20, "t2w": 0.22, "t2f": 0.20}
#: Stored intensity of WM-level signal (int16 output).
INTENSITY_SCALE: float = 1000.0
EDEMA_WEIGHT: float = 0.7  # edema signal replaces this fraction of the underlying tissue signal


def smooth_noise(
    rng: np.random.Generator,
    axes: tuple[np.ndarray, ...],
    centre: np.ndarray,
    order: int,
    sd: float,
    half_width: float = 120.0,
) -> np.ndarray:
    """Random smooth field on a grid: DCT coefficients ~ N(0, sd^2 / (1 + k)^2), constant term 0."""
    k = np.indices((order,) * 3).sum(axis=0)
    coeffs = rng.normal(0.0, 1.0, size=(order,) * 3) * sd / (1.0 + k)
    coeffs[0, 0, 0] = 0.0
    b = [dct_basis(a - c, order, half_width) for a, c in zip(axes, centre)]
    return separable_field(coeffs, *b)


def tissue_image(
    modality: str,
    tissues: dict[str, np.ndarray],
    seg: np.ndarray,
    t2_signal: str | None = None,
    calcified: np.ndarray | None = None,
) -> np.ndarray:
    """Noise-free image of one modality: partial-volume tissue mix, then edema / tumour labels.

    ``t2_signal`` (hypo | iso | hyper) replaces the enhancing tumour's t2w / t2f mean by
    :data:`T2_SIGNAL_MEANS`; ``calcified`` (bool mask) paints :data:`CALCIFICATION_MEANS` last.
    """
    mu = dict(TISSUE_MEANS[modality])
    if t2_signal is not None and modality in T2_SIGNAL_MEANS:
        mu["et"] = T2_SIGNAL_MEANS[modality][t2_signal]
    total = tissues["gm"] + tissues["wm"] + tissues["csf"]
    img = tissues["gm"] * mu["gm"] + tissues["wm"] * mu["wm"] + tissues["csf"] * mu["csf"]
    img = img / np.maximum(total, 1e-3)
    img = np.where(seg == 2, (1 - EDEMA_WEIGHT) * img + EDEMA_WEIGHT * mu["ed"], img)
    img = np.where(seg == 3, mu["et"], img)
    img = np.where(seg == 1, mu["ncr"], img)
    if calcified is not None:
        img = np.where(calcified, CALCIFICATION_MEANS[modality], img)
    return img.astype(np.float32)


def scanner(
    rng: np.random.Generator, img: np.ndarray, foreground: np.ndarray, axes: tuple[np.ndarray, ...], centre: np.ndarray
) -> np.ndarray:
    """Apply gain x bias field, Rician noise, mask to the foreground and quantise to int16 (>= 0)."""
    gain = INTENSITY_SCALE * float(np.exp(rng.normal(0.0, 0.15)))
    bias = np.exp(smooth_noise(rng, axes, centre, order=3, sd=0.12))
    sigma = float(rng.uniform(0.015, 0.035))
    fg = np.nonzero(foreground)
    clean = img[fg] * bias[fg]
    n1 = rng.standard_normal(clean.shape, dtype=np.float32)
    n2 = rng.standard_normal(clean.shape, dtype=np.float32)
    noisy = np.sqrt((clean + sigma * n1) ** 2 + (sigma * n2) ** 2) * gain
    out = np.zeros(img.shape, dtype=np.int16)
    out[fg] = np.clip(np.rint(noisy), 1, np.iinfo(np.int16).max).astype(np.int16)
    return out


def synthesize(
    rng: np.random.Generator,
    tissues: dict[str, np.ndarray],
    seg: np.ndarray,
    foreground: np.ndarray,
    axes: tuple[np.ndarray, ...],
    centre: np.ndarray,
    t2_signal: str | None = None,
    calcified: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """All four modalities (int16, channel order of :data:`MODALITIES`) for one scan."""
    return {
        m: scanner(rng, tissue_image(m, tissues, seg, t2_signal, calcified), foreground, axes, centre)
        for m in MODALITIES
    }
