"""Synthetic cohort v2: biomarker-conditioned growth (odds ratios), literature calibration, images carry biomarkers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm

from custom.constants import MODALITIES
from custom.synth.biomarkers import Biomarkers, EffectSizes
from custom.synth.cohort import SubjectJob, generate_cohort, render_subject

N_TABLE = 5000


def _table(tmp_path, name: str, **kw) -> pd.DataFrame:
    root = generate_cohort(str(tmp_path / name), subjects=N_TABLE, timepoints=2, seed=0, table_only=True, **kw)
    return pd.read_csv(root / "cohort.csv", keep_default_na=False)


def _subjects(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["timepoint"] == 0].reset_index(drop=True)


@pytest.fixture(scope="module")
def default_table(tmp_path_factory) -> pd.DataFrame:
    """The default cohort (realistic, biomarkers on, AIMSS odds ratios), one row per subject."""
    return _subjects(_table(tmp_path_factory.mktemp("default"), "t", schedule="protocol"))


def _logit(first: pd.DataFrame):
    """Logit of rapid_growth on the AIMSS indicators, built from the table's biomarker columns."""
    x = pd.DataFrame(
        {
            "no_calcification": (first["calcification"] == "none").astype(float),
            "edema": (first["edema_extent"].astype(float) > 0).astype(float),
            "t2_iso_hyper": first["t2_signal"].isin(["iso", "hyper"]).astype(float),
        }
    )
    return sm.Logit(first["rapid_growth"].astype(float), sm.add_constant(x)).fit(disp=0)


@pytest.mark.parametrize(
    "effects",
    [EffectSizes(), EffectSizes(or_no_calcification=1.5, or_edema=6.0, or_t2_iso_hyper=2.0, rapid_share=0.2)],
    ids=["aimss", "custom"],
)
def test_logit_recovers_configured_odds_ratios(tmp_path, default_table, effects):
    first = default_table if effects == EffectSizes() else _subjects(_table(tmp_path, "t", effects=effects))
    fit = _logit(first)
    # family-wise 95 % over the three odds ratios (Bonferroni: each at 1 - 0.05 / 3)
    ci = np.exp(fit.conf_int(alpha=0.05 / 3))
    for name, target in (
        ("no_calcification", effects.or_no_calcification),
        ("edema", effects.or_edema),
        ("t2_iso_hyper", effects.or_t2_iso_hyper),
    ):
        assert ci.loc[name, 0] < target < ci.loc[name, 1], (name, target, ci.loc[name].tolist())
    # b0 was solved for the overall share: within 3 binomial standard errors
    se = math.sqrt(effects.rapid_share * (1 - effects.rapid_share) / len(first))
    assert abs(first["rapid_growth"].mean() - effects.rapid_share) < 3 * se


def test_rapid_label_is_aimss_threshold_on_true_law(default_table):
    first = default_table
    v0, a, k = (first[c].astype(float).to_numpy() for c in ("true_V0_ml", "true_a_per_year", "true_K_ml"))
    v5 = k * np.exp(np.log(v0 / k) * np.exp(-a * 5.0))  # closed form written out here
    assert np.array_equal((v5 - v0) / 5.0 >= 2.0, first["rapid_growth"].to_numpy() == 1)
    assert np.allclose(np.log(v5 / v0) / 5.0, first["true_rgr_per_year"].astype(float), rtol=1e-6, atol=1e-9)
    assert (first.loc[first["rapid_growth"] == 1, "growth_class"] == "grower").all()


def test_realistic_matches_literature_within_tolerance(default_table):
    first = default_table
    share = first["growth_class"].value_counts(normalize=True)
    # Strand et al. 2023: 59 % grow, 27 % stable, 14 % shrink (3 points ~ 4 binomial SE at n = 5000)
    for cls, target in (("grower", 0.59), ("plateau", 0.27), ("shrinker", 0.14)):
        assert abs(share[cls] - target) < 0.03, (cls, share[cls])
    growers = first[first["growth_class"] == "grower"]
    q1, med, q3 = np.percentile(100 * growers["true_rgr_per_year"].astype(float), [25, 50, 75])
    # Strand 2023: median 6.1 %/yr, IQR 2.4-16 %/yr
    assert abs(med / 6.1 - 1) < 0.15 and abs(q1 / 2.4 - 1) < 0.25 and abs(q3 / 16.0 - 1) < 0.2, (q1, med, q3)
    ordinary = growers[growers["atypical"] == 0]
    assert ordinary["past_inflection"].mean() > 0.6  # Nakasu 2011: most past the inflection point
    assert (
        0.02 < first["atypical"].mean() < 0.08 and (first.loc[first["atypical"] == 1, "growth_class"] == "grower").all()
    )


def test_biomarkers_off_is_the_control(tmp_path):
    first = _subjects(_table(tmp_path, "off", biomarkers="off"))
    ci = np.exp(_logit(first).conf_int(alpha=0.05 / 3))
    for name in ("no_calcification", "edema", "t2_iso_hyper"):
        assert ci.loc[name, 0] < 1.0 < ci.loc[name, 1], (name, ci.loc[name].tolist())
    assert np.allclose(first["rapid_probability"].astype(float), EffectSizes().rapid_share)
    # the biomarkers are still drawn (and painted): the control differs from the test cohort only in the law
    assert set(first["calcification"]) == {"none", "partial", "heavy"}


def test_table_only_deterministic_and_protocol_schedule(tmp_path):
    a = generate_cohort(str(tmp_path / "a"), subjects=50, timepoints=8, seed=3, table_only=True, schedule="protocol")
    b = generate_cohort(str(tmp_path / "b"), subjects=50, timepoints=8, seed=3, table_only=True, schedule="protocol")
    c = generate_cohort(str(tmp_path / "c"), subjects=50, timepoints=8, seed=4, table_only=True, schedule="protocol")
    for name in ("cohort.csv", "times.csv"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
        assert (a / name).read_bytes() != (c / name).read_bytes()
    assert not (a / "datalist.json").exists() and not list(a.glob("BraTS-MEN-*"))
    meta = json.loads((a / "cohort_meta.json").read_text())
    assert meta["version"].startswith("2.") and meta["options"]["schedule"] == "protocol"
    assert meta["options"]["table_only"] is True and meta["effects"]["or_edema"] == 2.74
    df = pd.read_csv(a / "cohort.csv")
    t = df.pivot(index="subject_id", columns="timepoint", values="time_years").to_numpy()
    assert np.all(t[:, 0] == 0.0)
    assert np.all(np.abs(t - np.array([0, 0.5, 1, 1.5, 2, 3, 4, 5])) <= 0.04 + 1e-12)
    with pytest.raises(ValueError, match="protocol"):
        generate_cohort(str(tmp_path / "d"), subjects=2, timepoints=9, table_only=True, schedule="protocol")
    with pytest.raises(ValueError, match="biomarkers"):
        generate_cohort(str(tmp_path / "d"), subjects=2, table_only=True, biomarkers="maybe")


def test_report_line_names_cohort_options(tmp_path):
    from custom.report import cohort_line

    root = generate_cohort(str(tmp_path / "r"), subjects=3, timepoints=2, growth="fast", table_only=True, seed=5)
    line = cohort_line(json.loads((root / "cohort_meta.json").read_text()))
    assert "growth fast, schedule irregular, biomarkers on, seed 5" in line and " 2." in line
    assert cohort_line({}) == ""


# -- images ---------------------------------------------------------------------------------------------------
VARIANTS = {
    "heavy_hypo_dry": Biomarkers("heavy", "hypo", 0.0),
    "none_iso_some": Biomarkers("none", "iso", 0.35),
    "none_hyper_wide": Biomarkers("none", "hyper", 0.8),
}


@pytest.fixture(scope="module")
def rendered():
    """One subject (same seed, growth independent of biomarkers so the tumour is the same) rendered at 3.75 mm
    with each forced biomarker set."""
    seed = np.random.SeedSequence(11).spawn(1)[0]
    out = {}
    for name, markers in VARIANTS.items():
        job = SubjectJob(0, seed, "", 1, 3.75, "realistic", "irregular", False, EffectSizes(), markers)
        out[name] = render_subject(job)[2][0]
    return out


def _ref(scan, modality: str) -> float:
    """Median intensity of the scan's normal brain (label 0 inside the foreground): per-scan gain removed."""
    img = scan.images[modality]
    return float(np.median(img[(scan.seg == 0) & (img > 0)]))


def test_same_tumour_across_forced_variants(rendered):
    tumours = [np.isin(s.seg, (1, 3)) for s in rendered.values()]
    assert all(np.array_equal(tumours[0], t) for t in tumours[1:]) and tumours[0].sum() > 30


def test_t2w_tumour_signal_follows_t2_class(rendered):
    rel = {}
    for name, scan in rendered.items():
        plain = np.isin(scan.seg, (1, 3)) & ~scan.calcified
        rel[name] = float(scan.images["t2w"][plain].mean()) / _ref(scan, "t2w")
    assert rel["heavy_hypo_dry"] < rel["none_iso_some"] < rel["none_hyper_wide"], rel
    assert rel["heavy_hypo_dry"] < 0.9 and rel["none_hyper_wide"] > 1.15


def test_calcified_voxels_dark_on_all_sequences_and_not_enhancing(rendered):
    scan = rendered["heavy_hypo_dry"]
    calc = scan.calcified
    assert calc.sum() >= 5 and np.all(scan.seg[calc] == 1)  # non-enhancing tumour core
    rest = np.isin(scan.seg, (1, 3)) & ~calc
    for m in MODALITIES:
        img = scan.images[m]
        assert img[calc].mean() < 0.6 * img[rest].mean(), m
        assert img[calc].mean() < 0.6 * _ref(scan, m), m  # darker than normal brain too: no enhancement on t1c
    assert not rendered["none_iso_some"].calcified.any()


def test_edema_volume_rises_with_edema_extent(rendered):
    ed = [int((rendered[n].seg == 2).sum()) for n in ("heavy_hypo_dry", "none_iso_some", "none_hyper_wide")]
    assert ed[0] == 0 < ed[1] < ed[2], ed
