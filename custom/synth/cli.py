"""Command-line entry for the synthetic cohort (wired into ``python -m custom synth`` with fire)."""

from __future__ import annotations

import csv
import time
from collections import Counter

from custom.synth.biomarkers import EffectSizes
from custom.synth.cohort import generate_cohort


def synth(
    out: str,
    subjects: int = 40,
    timepoints: int = 4,
    seed: int = 0,
    spacing: float = 1.0,
    workers: int = 2,
    growth: str = "realistic",
    schedule: str = "irregular",
    biomarkers: str = "on",
    table_only: bool = False,
    or_no_calcification: float = EffectSizes.or_no_calcification,
    or_edema: float = EffectSizes.or_edema,
    or_t2_iso_hyper: float = EffectSizes.or_t2_iso_hyper,
    rapid_share: float = EffectSizes.rapid_share,
) -> str:
    """Generate a synthetic longitudinal meningioma cohort under ``out`` and print a one-line summary.

    Example: ``python -m custom synth --out data/synth --subjects 40 --spacing 1.875``;
    ``--table_only`` writes only cohort.csv, times.csv and cohort_meta.json (thousands of subjects in seconds).
    """
    start = time.perf_counter()
    effects = EffectSizes(or_no_calcification, or_edema, or_t2_iso_hyper, rapid_share)
    path = generate_cohort(
        out,
        subjects=subjects,
        timepoints=timepoints,
        seed=seed,
        spacing=spacing,
        workers=workers,
        growth=growth,
        schedule=schedule,
        biomarkers=biomarkers,
        table_only=table_only,
        effects=effects,
    )
    with open(path / "cohort.csv") as fh:
        rows = list(csv.DictReader(fh))
    first = [r for r in rows if r["timepoint"] == "0"]
    classes = Counter(r["growth_class"] for r in first)
    rapid = sum(int(r["rapid_growth"]) for r in first)
    files = "cohort.csv, times.csv, cohort_meta.json" + ("" if table_only else ", datalist.json")
    print(
        f"wrote {len(rows)} scans of {subjects} subjects to {path} in {time.perf_counter() - start:.1f} s "
        f"(classes: {dict(sorted(classes.items()))}; rapid growth: {rapid}); see {files}"
    )
    return str(path)
