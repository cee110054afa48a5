"""Synthetic cohort: determinism, files vs tables, Gompertz growth, contrasts, skull stripping, dural contact."""

from __future__ import annotations

import csv
import json
import math
import pathlib

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.integrate import solve_ivp

from custom.constants import MODALITIES
from custom.synth.cohort import generate_cohort
from custom.synth.growth import VOLUME_NOISE_SD, gompertz_volume

SPACING = 7.5
VOX_ML = SPACING**3 / 1000.0


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory) -> dict[str, pathlib.Path]:
    base = tmp_path_factory.mktemp("synth")
    return {
        "a": generate_cohort(str(base / "a"), subjects=3, timepoints=3, seed=0, spacing=SPACING, workers=2),
        # same seed, one worker: must not change a byte
        "b": generate_cohort(str(base / "b"), subjects=3, timepoints=3, seed=0, spacing=SPACING, workers=1),
        "c": generate_cohort(str(base / "c"), subjects=3, timepoints=3, seed=1, spacing=SPACING, workers=1),
    }


def _rows(root: pathlib.Path) -> list[dict[str, str]]:
    with open(root / "cohort.csv") as fh:
        return list(csv.DictReader(fh))


def _files(root: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_layout_and_geometry(cohorts):
    root = cohorts["a"]
    rows = _rows(root)
    assert len(rows) == 9
    for r in rows:
        cid = r["case_id"]
        for key in MODALITIES + ("seg",):
            img = nib.load(root / cid / f"{cid}-{key}.nii.gz")
            assert img.shape == (32, 32, 21)
            assert np.allclose(np.diag(img.affine)[:3], SPACING)
        assert nib.load(root / cid / f"{cid}-seg.nii.gz").get_data_dtype() == np.uint8
    assert (root / "times.csv").exists()


def test_determinism_same_seed_identical_bytes_other_seed_differs(cohorts):
    a, b, c = cohorts["a"], cohorts["b"], cohorts["c"]
    assert _files(a) == _files(b)
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    differing = [rel for rel in _files(a) if rel.suffix == ".gz" and (a / rel).read_bytes() != (c / rel).read_bytes()]
    assert len(differing) > 0.9 * len([r for r in _files(a) if r.suffix == ".gz"])


def test_table_matches_independent_recomputation_from_seg(cohorts):
    root = cohorts["a"]
    for r in _rows(root):
        cid = r["case_id"]
        img = nib.load(root / cid / f"{cid}-seg.nii.gz")
        seg = np.asarray(img.dataobj)
        ijk = np.argwhere((seg == 1) | (seg == 3))
        vox_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
        vol = len(ijk) * vox_ml
        world = ijk @ img.affine[:3, :3].T + img.affine[:3, 3]
        assert float(r["volume_ml"]) == pytest.approx(vol, rel=0.01)
        assert float(r["volume_whole_ml"]) == pytest.approx(np.count_nonzero(seg) * vox_ml, rel=0.01)
        assert float(r["log_volume"]) == pytest.approx(math.log(vol), abs=0.01)
        for axis, name in enumerate(("centroid_x", "centroid_y", "centroid_z")):
            assert float(r[name]) == pytest.approx(world[:, axis].mean(), abs=0.01 * SPACING)


def test_volumes_follow_gompertz_within_noise(cohorts):
    for r in _rows(cohorts["a"]):
        v0, a, k, t = (float(r[c]) for c in ("true_V0_ml", "true_a_per_year", "true_K_ml", "time_years"))
        truth = k * math.exp(math.log(v0 / k) * math.exp(-a * t))  # closed form, written out independently
        assert float(r["target_volume_ml"]) == pytest.approx(truth, rel=1e-6)
        # measured = round(truth * exp(eps) / voxel) voxels, eps ~ N(0, 0.05^2): 4 sigma + half a voxel
        tol = 4 * VOLUME_NOISE_SD + math.log(1 + 0.5 * VOX_ML / truth) + 1e-6
        assert abs(math.log(float(r["volume_ml"]) / truth)) < tol, r["case_id"]


def test_gompertz_closed_form_matches_ode_integration():
    for v0, a, k in ((5.0, 0.07, 30.0), (8.0, 0.5, 8.5), (10.0, 0.3, 6.0)):
        t = np.linspace(0.0, 6.0, 13)
        sol = solve_ivp(lambda _t, v: a * v * np.log(k / v), (0.0, 6.0), [v0], t_eval=t, rtol=1e-10, atol=1e-12)
        assert np.allclose(gompertz_volume(t, v0, a, k), sol.y[0], rtol=1e-6)


def test_tissue_contrasts_from_template_tissues():
    from custom.synth.anatomy import load_template_maps, output_grid, sample_maps
    from custom.synth.contrast import synthesize

    maps = load_template_maps()
    shape, affine = output_grid(3.75, maps.centre)
    axes = tuple(affine[d, d] * np.arange(shape[d]) + affine[d, 3] for d in range(3))
    grid = np.stack(np.meshgrid(*axes, indexing="ij"))
    tissues = sample_maps(maps, grid)
    seg = np.zeros(shape, dtype=np.uint8)
    imgs = synthesize(np.random.default_rng(0), tissues, seg, tissues["brain"] > 0.5, axes, maps.centre)
    wm, gm, csf = (tissues[t] > 0.9 for t in ("wm", "gm", "csf"))
    mean = {m: {t: float(imgs[m][sel].mean()) for t, sel in (("wm", wm), ("gm", gm), ("csf", csf))} for m in MODALITIES}
    assert mean["t1n"]["wm"] > mean["t1n"]["gm"] > mean["t1n"]["csf"]
    assert mean["t2f"]["csf"] < mean["t2f"]["gm"]
    assert mean["t2w"]["csf"] > mean["t2w"]["gm"] > mean["t2w"]["wm"]


def test_written_images_contrast_background_and_dural_contact(cohorts):
    root = cohorts["a"]
    for r in _rows(root):
        cid = r["case_id"]
        seg = np.asarray(nib.load(root / cid / f"{cid}-seg.nii.gz").dataobj)
        imgs = {m: np.asarray(nib.load(root / cid / f"{cid}-{m}.nii.gz").dataobj) for m in MODALITIES}
        fg = imgs["t1n"] > 0
        for m in MODALITIES:
            assert imgs[m].min() >= 0
            assert np.array_equal(imgs[m] > 0, fg), m  # one skull-stripped foreground, background exactly 0
        assert 0.05 < fg.mean() < 0.7
        assert not fg[0, 0, 0] and not fg[-1, -1, -1]
        tumour = (seg == 1) | (seg == 3)
        assert tumour.any() and fg[seg > 0].all()
        # t1c: enhancing tumour brighter than the brightest normal tissue (WM)
        et, normal = imgs["t1c"][seg == 3], imgs["t1c"][fg & (seg == 0)]
        assert et.mean() > np.percentile(normal, 95)
        # extra-axial, dural-based: the tumour touches the background outside the brain
        assert (ndi.binary_dilation(tumour) & ~fg).any(), cid


def test_subject_level_split_and_datalist_resolves(cohorts):
    from monai.data import load_decathlon_datalist

    root = cohorts["a"]
    dl = json.loads((root / "datalist.json").read_text())
    assert dl["modalities"] == list(MODALITIES)
    seen: dict[str, str] = {}
    for key in ("training", "validation", "test"):
        for item in dl[key]:
            assert seen.setdefault(item["subject_id"], key) == key
            assert item["case_id"].startswith(item["subject_id"] + "-")
            assert item["timepoint"] == int(item["case_id"][-3:])
    assert len(seen) == 3 and all(len(dl[k]) > 0 for k in ("training", "validation", "test"))
    items = load_decathlon_datalist(str(root / "datalist.json"), data_list_key="training")
    for it in items:
        assert all(pathlib.Path(p).exists() for p in it["image"]) and pathlib.Path(it["label"]).exists()
    sites = {}
    for r in _rows(root):
        assert sites.setdefault(r["subject_id"], r["attachment_site"]) == r["attachment_site"]


def test_table_only_reproduces_the_image_cohort(cohorts, tmp_path):
    """Same seed: the same laws, biomarkers and times; the same measured volume (the inner skull does not bind)."""
    table = generate_cohort(str(tmp_path / "t"), subjects=3, timepoints=3, seed=0, spacing=SPACING, table_only=True)
    img_rows, tab_rows = _rows(cohorts["a"]), _rows(table)
    assert len(img_rows) == len(tab_rows)
    same = ("case_id", "time_years", "true_V0_ml", "true_a_per_year", "true_K_ml", "calcification", "t2_signal")
    same += ("edema_extent", "rapid_growth", "atypical", "target_volume_ml", "volume_ml")
    for r, t in zip(img_rows, tab_rows):
        assert all(r[c] == t[c] for c in same), r["case_id"]
        assert t["centroid_x"] == "" and t["attachment_site"] == ""
    meta = json.loads((cohorts["a"] / "cohort_meta.json").read_text())
    dl = json.loads((cohorts["a"] / "datalist.json").read_text())
    assert dl["cohort"] == {k: meta[k] for k in ("generator", "version", "options")}
    assert dl["cohort"]["options"]["growth"] == "realistic" and dl["cohort"]["options"]["biomarkers"] is True


def test_show_writes_png(cohorts, tmp_path):
    from custom.plots.show import show

    out = show(str(cohorts["a"]), "BraTS-MEN-00001", str(tmp_path / "s.png"))
    data = pathlib.Path(out).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    with pytest.raises(FileNotFoundError):
        show(str(cohorts["a"]), "BraTS-MEN-09999", str(tmp_path / "x.png"))
