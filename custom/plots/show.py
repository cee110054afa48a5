"""``show``: one subject across its timepoints, 4 modalities x 3 planes through the tumour centroid.

Rows are timepoints (sorted), columns are t1c/t1n/t2f/t2w x axial/coronal/sagittal, each slice passing
through that timepoint's tumour centroid (labels 1+3; the volume centre when there is no tumour), with
the segmentation outlined (ncr red, edema yellow, enhancing tumour green). Works on the synthetic cohort
and on real BraTS-MEN folders (``<data_dir>/<subject>-TTT/``); times come from a datalist when known.
For a synthetic cohort the title names the subject's biomarkers and growth law from ``cohort.csv``
(calcification, T2 signal, edema extent, growth class, rapid growth, atypical); calcified foci are the
signal voids inside the tumour on every sequence (labelled non-enhancing core, outlined red).
"""

from __future__ import annotations

import csv
import json
import pathlib
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from custom.constants import MODALITIES  # noqa: E402
from custom.data.factors import seg_factors  # noqa: E402

LABEL_COLOURS: dict[int, str] = {1: "red", 2: "yellow", 3: "lime"}
PLANES: tuple[str, ...] = ("axial", "coronal", "sagittal")


def _find_file(folder: pathlib.Path, case: str, key: str) -> pathlib.Path | None:
    for ext in (".nii.gz", ".nii"):
        p = folder / f"{case}-{key}{ext}"
        if p.exists():
            return p
    return None


def _times_from_datalist(path: pathlib.Path | None) -> dict[str, float]:
    """case_id -> time_years from every split of a datalist JSON (empty when unknown)."""
    if path is None or not path.exists():
        return {}
    data = json.loads(path.read_text())
    out: dict[str, float] = {}
    for items in data.values():
        if isinstance(items, list):
            for it in items:
                if isinstance(it, dict) and "case_id" in it and "time_years" in it:
                    out[str(it["case_id"])] = float(it["time_years"])
    return out


def _times_from_csv(path: pathlib.Path) -> dict[str, float]:
    """case_id -> time_years from a synthetic cohort's times.csv (subject_id, timepoint, time_years)."""
    if not path.exists():
        return {}
    with open(path) as fh:
        return {f"{r['subject_id']}-{int(r['timepoint']):03d}": float(r["time_years"]) for r in csv.DictReader(fh)}


def _subject_info(path: pathlib.Path, subject: str) -> str:
    """One line of the subject's biomarkers and law from a synthetic cohort.csv ('' when not known)."""
    if not path.exists():
        return ""
    with open(path) as fh:
        row = next((r for r in csv.DictReader(fh) if r.get("subject_id") == subject), None)
    if row is None or not row.get("calcification"):
        return ""
    return (
        f"calcification {row['calcification']}, T2 {row['t2_signal']}, edema extent {float(row['edema_extent']):.2f}; "
        f"{row['growth_class']}{' (atypical)' if row.get('atypical') == '1' else ''}, "
        f"rapid growth {'yes' if row.get('rapid_growth') == '1' else 'no'}, "
        f"a = {float(row['true_a_per_year']):.3f}/yr, K = {float(row['true_K_ml']):.1f} mL"
    )


def _plane(vol: np.ndarray, plane: str, ijk: np.ndarray) -> np.ndarray:
    """Slice in display orientation (RAS volume): superior/anterior up."""
    i, j, k = (int(v) for v in ijk)
    if plane == "axial":
        return np.rot90(vol[:, :, k])
    if plane == "coronal":
        return np.rot90(vol[:, j, :])
    return np.rot90(vol[i, :, :])


def _aspect(zooms: tuple[float, ...], plane: str) -> float:
    # after rot90 rows run along the second array axis of the slice, columns along the first
    pairs = {"axial": (1, 0), "coronal": (2, 0), "sagittal": (2, 1)}
    r, c = pairs[plane]
    return float(zooms[r] / zooms[c])


def _crop_to_head(
    cid: str,
    vols: dict[str, np.ndarray],
    seg: np.ndarray | None,
    ijk: np.ndarray,
    zooms: tuple[float, ...],
    f: dict[str, float],
) -> tuple:
    """Crop every volume of a scan to the bounding box of its non-zero voxels (2-voxel margin)."""
    nz = np.argwhere(sum(v > 0 for v in vols.values()))
    if len(nz) == 0:
        return cid, vols, seg, ijk, zooms, f
    lo = np.maximum(nz.min(axis=0) - 2, 0)
    hi = np.minimum(nz.max(axis=0) + 3, vols[MODALITIES[0]].shape)
    sl = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    vols = {m: v[sl] for m, v in vols.items()}
    seg = seg[sl] if seg is not None else None
    ijk = np.clip(np.asarray(ijk) - lo, 0, hi - lo - 1)
    return cid, vols, seg, ijk, zooms, f


def show(data_dir: str, subject: str, out: str, datalist: str | None = None) -> str:
    """Save a PNG of ``subject`` (e.g. ``BraTS-MEN-00001``) across timepoints under ``data_dir``; returns ``out``."""
    root = pathlib.Path(data_dir)
    pattern = re.compile(re.escape(subject) + r"-(\d{3})$")
    cases = sorted(
        (p for p in root.glob(f"{subject}-*") if p.is_dir() and pattern.match(p.name)),
        key=lambda p: int(pattern.match(p.name).group(1)),
    )  # type: ignore[union-attr]
    if not cases:
        raise FileNotFoundError(f"no case folders {subject}-TTT under {root}")
    dl = pathlib.Path(datalist) if datalist else root / "datalist.json"
    times = _times_from_datalist(dl) or _times_from_csv(root / "times.csv")

    scans = []
    for folder in cases:
        cid = folder.name
        vols = {}
        for m in MODALITIES:
            p = _find_file(folder, cid, m)
            if p is None:
                raise FileNotFoundError(f"missing {cid}-{m}.nii[.gz] in {folder}")
            img = nib.as_closest_canonical(nib.load(p))
            vols[m] = np.asarray(img.dataobj, dtype=np.float32)
        zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
        sp = _find_file(folder, cid, "seg")
        seg = None
        f: dict[str, float] = {}
        if sp is not None:
            simg = nib.as_closest_canonical(nib.load(sp))
            seg = np.rint(np.asarray(simg.dataobj)).astype(np.int16)
            f = seg_factors(seg, simg.affine)
        if seg is not None and np.isfinite(f.get("centroid_x", np.nan)):
            tum = np.isin(seg, (1, 3))
            ijk = np.rint(np.argwhere(tum).mean(axis=0)).astype(int)
        else:
            ijk = np.asarray(vols[MODALITIES[0]].shape) // 2
        scans.append((cid, vols, seg, ijk, zooms, f))

    scans = [_crop_to_head(*s) for s in scans]
    n_rows, n_cols = len(scans), len(MODALITIES) * len(PLANES)
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(1.25 * n_cols, 1.3 * n_rows + 0.5),
        squeeze=False,
        gridspec_kw={"wspace": 0.03, "hspace": 0.08},
    )
    fig.patch.set_facecolor("black")
    for r, (cid, vols, seg, ijk, zooms, f) in enumerate(scans):
        tp = int(pattern.match(cid).group(1))  # type: ignore[union-attr]
        t = times.get(cid)
        tlabel = f"t={t:.2f} y" if t is not None else f"tp {tp}"
        vlabel = f"V={f['volume_ml']:.1f} mL" if "volume_ml" in f else "no seg"
        for mi, m in enumerate(MODALITIES):
            for pi, plane in enumerate(PLANES):
                ax = axes[r, mi * len(PLANES) + pi]
                fg = vols[m][vols[m] > 0]
                vmax = float(np.percentile(fg, 99.5)) if fg.size else 1.0  # per-scan window
                ax.imshow(
                    _plane(vols[m], plane, ijk),
                    cmap="gray",
                    vmin=0,
                    vmax=vmax,
                    aspect=_aspect(zooms, plane),
                    interpolation="nearest",
                )
                if seg is not None:
                    s2 = _plane(seg, plane, ijk)
                    for lab, col in sorted(LABEL_COLOURS.items(), reverse=True):  # core outline on top
                        if (s2 == lab).any():
                            ax.contour((s2 == lab).astype(float), levels=[0.5], colors=col, linewidths=0.6)
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{m} {plane[:3]}", color="white", fontsize=7)
        axes[r, 0].set_ylabel(f"{tlabel}\n{vlabel}", color="white", fontsize=7)
    title = f"{subject}: {n_rows} timepoints (ncr red, edema yellow, enhancing green)"
    info = _subject_info(root / "cohort.csv", subject)
    head = 0.45
    if info:
        title, head = f"{title}\n{info}", 0.65
    fig.suptitle(title, color="white", fontsize=8 if info else 9)
    fig.subplots_adjust(left=0.05, right=0.995, bottom=0.01, top=1 - head / fig.get_figheight())
    out_path = pathlib.Path(out)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_path, dpi=110, facecolor="black")
    plt.close(fig)
    return str(out_path)
