"""Target-vs-measured table of a synthetic cohort's natural history (class mix, growth rates, odds ratios).

``python -m custom.synth.calibration --cohort data/table/cohort.csv`` prints a markdown table: the class mix
(Strand et al. 2023), the relative growth rate quantiles of growers (Strand 2023, ``RGR = ln(V(5)/V0)/5`` of
the true law), the share of ordinary growers past the inflection point (Nakasu 2011), the atypical share,
the rapid share (AIMSS, Lee et al. 2017) and the odds ratios of rapid growth from a logistic regression
(statsmodels ``Logit``, Wald 95 % intervals) on the AIMSS indicators, against the cohort's configured values
(``cohort_meta.json`` beside the table).

A single cohort's 95 % interval misses a configured odds ratio one time in twenty by design. ``--coverage_seeds N``
redraws the cohort (its own size and options, table only) for seeds ``0 .. N-1`` and counts, per odds ratio, how
many of the N intervals hold the configured value: about 95 % of them should (Wald intervals of a correctly
specified logistic model).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

LITERATURE: dict[str, float] = {"grower": 0.59, "plateau": 0.27, "shrinker": 0.14, "rgr_q1": 2.4, "rgr_q2": 6.1}
LITERATURE["rgr_q3"] = 16.0


def odds_ratios(first: pd.DataFrame) -> pd.DataFrame:
    """Logit of ``rapid_growth`` on (no calcification, edema, T2 iso/hyper): OR and 95 % CI per indicator."""
    import statsmodels.api as sm

    x = pd.DataFrame(
        {
            "no_calcification": (first["calcification"] == "none").astype(float),
            "edema": (first["edema_extent"].astype(float) > 0).astype(float),
            "t2_iso_hyper": first["t2_signal"].isin(["iso", "hyper"]).astype(float),
        }
    )
    fit = sm.Logit(first["rapid_growth"].astype(float), sm.add_constant(x)).fit(disp=0)
    ci = np.exp(fit.conf_int())
    return pd.DataFrame({"or": np.exp(fit.params), "lo": ci[0], "hi": ci[1]}).drop(index="const")


def calibration_table(cohort_csv: str | Path) -> list[tuple[str, str, str]]:
    """(quantity, target, measured) rows for the cohort at ``cohort_csv`` (one row per subject used)."""
    path = Path(cohort_csv)
    if not path.is_file():
        raise FileNotFoundError(f"cohort table does not exist: {path}")
    df = pd.read_csv(path, keep_default_na=False)
    missing = {"calcification", "t2_signal", "edema_extent", "rapid_growth", "true_rgr_per_year"} - set(df.columns)
    if missing:
        raise ValueError(f"{path} has no biomarker columns {sorted(missing)}: not a version-2 synthetic cohort")
    meta_path = path.with_name("cohort_meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    effects = meta.get("effects", {})
    first = df[df["timepoint"] == 0]
    n = len(first)
    rows: list[tuple[str, str, str]] = [("subjects", "", str(n))]
    share = first["growth_class"].value_counts(normalize=True)
    for cls, label in (("grower", "grow"), ("plateau", "stable"), ("shrinker", "shrink")):
        rows.append((f"{label} (%)", f"{100 * LITERATURE[cls]:.0f}", f"{100 * share.get(cls, 0.0):.1f}"))
    growers = first[first["growth_class"] == "grower"]
    q = np.percentile(100 * growers["true_rgr_per_year"].astype(float), [25, 50, 75])
    for i, name in enumerate(("25th percentile", "median", "75th percentile")):
        rows.append((f"RGR of growers, {name} (%/yr)", f"{LITERATURE[f'rgr_q{i + 1}']:g}", f"{q[i]:.1f}"))
    ordinary = growers[growers["atypical"].astype(int) == 0]
    rows.append(
        ("ordinary growers past the inflection point (%)", "most", f"{100 * ordinary['past_inflection'].mean():.1f}")
    )
    rows.append(("atypical (% of subjects)", "small", f"{100 * first['atypical'].astype(int).mean():.1f}"))
    target = effects.get("rapid_share")
    rows.append(
        (
            "rapid growth >= 2 mL/yr (%)",
            f"{100 * target:.1f}" if target is not None else "",
            f"{100 * first['rapid_growth'].astype(int).mean():.1f}",
        )
    )
    ors = odds_ratios(first)
    biomarkers_on = meta.get("options", {}).get("biomarkers", True)
    for key, name in (
        ("no_calcification", "or_no_calcification"),
        ("edema", "or_edema"),
        ("t2_iso_hyper", "or_t2_iso_hyper"),
    ):
        r = ors.loc[key]
        rows.append(
            (
                f"OR rapid growth: {key}",
                f"{effects.get(name, '')}" if biomarkers_on else "1 (biomarkers off)",
                f"{r['or']:.2f} (95 % CI {r['lo']:.2f}-{r['hi']:.2f})",
            )
        )
    return rows


INDICATORS: dict[str, str] = {
    "no_calcification": "or_no_calcification",
    "edema": "or_edema",
    "t2_iso_hyper": "or_t2_iso_hyper",
}


def interval_coverage(meta: dict, seeds: int) -> dict[str, int]:
    """How many of ``seeds`` redrawn cohorts (``meta``'s size and options, seeds ``0 .. seeds-1``) have a 95 % Wald
    interval holding each configured odds ratio; the key ``all`` counts cohorts where all three hold."""
    from custom.synth.biomarkers import EffectSizes
    from custom.synth.cohort import generate_cohort

    opts, effects = meta["options"], EffectSizes(**meta["effects"])
    hits = dict.fromkeys([*INDICATORS, "all"], 0)
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(seeds):
            out = generate_cohort(
                str(Path(tmp) / str(seed)),
                subjects=int(opts["subjects"]),
                timepoints=1,  # the odds ratios are per subject; the visits do not change them
                seed=seed,
                spacing=float(opts["spacing"]),
                growth=str(opts["growth"]),
                schedule=str(opts["schedule"]),
                biomarkers=bool(opts["biomarkers"]),
                table_only=True,
                effects=effects,
            )
            ors = odds_ratios(pd.read_csv(out / "cohort.csv", keep_default_na=False))
            held = [
                bool(ors.loc[k, "lo"] <= getattr(effects, name) <= ors.loc[k, "hi"]) for k, name in INDICATORS.items()
            ]
            for k, h in zip(INDICATORS, held):
                hits[k] += h
            hits["all"] += all(held)
    return hits


def main(cohort: str, coverage_seeds: int = 0) -> None:
    """Print the markdown target-vs-measured table of ``cohort`` (a cohort.csv); with ``coverage_seeds`` > 0 also
    the coverage of the configured odds ratios by the 95 % intervals of that many redrawn cohorts."""
    lines = ["| quantity | target | measured |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in calibration_table(cohort)]
    if coverage_seeds > 0:
        meta = json.loads(Path(cohort).with_name("cohort_meta.json").read_text())
        if not meta.get("options", {}).get("biomarkers", True):
            raise ValueError(f"{cohort}: biomarkers are off, there are no configured odds ratios to cover")
        hits = interval_coverage(meta, coverage_seeds)
        n = meta["options"]["subjects"]
        for key, count in hits.items():
            what = "all three" if key == "all" else key
            lines.append(
                f"| 95 % CI holds the configured OR ({what}), {coverage_seeds} cohorts of {n} | "
                f"{'~86' if key == 'all' else '~95'} % | {count}/{coverage_seeds} |"
            )
    print("\n".join(lines))


if __name__ == "__main__":
    import fire

    fire.Fire(main)
