"""Scoring of volume forecasts against the measured volumes of held-out scans, and the markdown/CSV/figure report.

Per forecast row, with ``V`` the measured volume at the target scan and ``V_hat`` the forecast:

* relative volume error ``|V_hat - V| / V`` (mean and median), ``|ln(V_hat / V)|`` (median), and the share of
  forecasts within +-8 % (``|V_hat - V| / V <= 0.08``, the repeat-volumetry limit, Oya et al. 2011);
* interval coverage ``lo_L <= V <= hi_L`` at L = 80 %, 90 %;
* Brier score (Brier, Mon. Weather Rev. 1950) ``mean (p - o)^2`` of ``p_growth15`` against ``o = [V > 1.15 V_last]``
  and of ``p_prog40`` against ``o = [V >= 1.40 V_last]``, beside the base-rate forecast's Brier ``o_bar (1 - o_bar)``
  (the event frequency of the same cell: the climatological reference of the Brier skill score).

Cells: method x k_obs x stratum (all, growers, stable, shrinkers, fastest20, see :mod:`custom.forecast.strata`) x
horizon (all, <=1y, 1-2y, >2y, last scan = each subject's last target). Every statistic carries a subject-level
bootstrap 95 % CI (:mod:`custom.forecast.bootstrap`). Paired differences: in each cell, the mean relative error of
each method minus that of the best measured-volume baseline of the cell (lowest mean relative error), on the same
rows and the same resamples. Rates: Spearman rank correlation of ``pred_a_per_year`` with ``true_a_per_year`` over
subjects (one value per subject and k_obs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from scipy.stats import spearmanr
from threadpoolctl import threadpool_limits

from custom.forecast.bootstrap import boot_means, boot_median, boot_spearman, percentile_ci, resample_counts
from custom.forecast.conformal import GROWTH15, PROG40, join_truth
from custom.forecast.frames import check_forecast
from custom.forecast.strata import FASTEST, change_rate, class_stratum, fastest_subjects, horizon_bin
from custom.forecast.volumetry import MEASURED_BASELINES

#: (metric, row column, statistic) of the metrics table.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("mean_rel_err", "rel_err", "mean"),
    ("median_rel_err", "rel_err", "median"),
    ("median_abs_log", "abs_log", "median"),
    ("within8", "within8", "mean"),
    ("cover80", "cover80", "mean"),
    ("cover90", "cover90", "mean"),
    ("brier_growth15", "brier15", "mean"),
    ("brier_prog40", "brier40", "mean"),
    ("event_growth15", "event15", "mean"),
    ("event_prog40", "event40", "mean"),
)
HORIZONS: tuple[str, ...] = ("all", "<=1y", "1-2y", ">2y", "last")
#: Resamples of the Spearman CIs (the first of the cell's resamples).
SPEARMAN_BOOT = 400


def score_rows(forecast: pd.DataFrame, truth: pd.DataFrame, method: str) -> pd.DataFrame:
    """Row-level scores of one method's forecast (truth joined on the target scan)."""
    check_forecast(forecast, method)
    df = join_truth(forecast, truth)
    if "last_obs_volume_ml" not in df:
        raise ValueError("scoring needs last_obs_volume_ml in the forecast or the truth frame (see make_task)")
    v, vh = df["volume_ml"].to_numpy(dtype=float), df["pred_volume_ml"].to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "method": method,
            "subject_id": df["subject_id"].astype(str),
            "k_obs": df["k_obs"].astype(int),
            "time_years": df["time_years"],
            "t_last_obs": df["t_last_obs"],
            "horizon_years": df["horizon_years"],
            "volume_ml": v,
            "pred_volume_ml": vh,
            "last_obs_volume_ml": df["last_obs_volume_ml"],
            "rel_err": np.abs(vh - v) / v,
            "abs_log": np.abs(np.log(vh / v)),
        }
    )
    optional = ("true_volume_ml", "last_obs_true_volume_ml", "true_a_per_year", "pred_a_per_year", "growth_class")
    for col in optional + ("p_growth15", "p_prog40"):
        out[col] = df[col].to_numpy() if col in df else np.nan
    out["within8"] = (out["rel_err"] <= 0.08).astype(float)
    ratio = v / out["last_obs_volume_ml"].to_numpy(dtype=float)
    out["event15"] = (ratio > GROWTH15).astype(float)
    out["event40"] = (ratio >= PROG40).astype(float)
    for lv in ("80", "90"):
        lo, hi = f"lo{lv}_ml", f"hi{lv}_ml"
        out[f"cover{lv}"] = (
            ((df[lo] <= v) & (v <= df[hi])).astype(float).to_numpy() if lo in df and hi in df else np.nan
        )
    for col, ev, name in (("p_growth15", "event15", "brier15"), ("p_prog40", "event40", "brier40")):
        out[name] = (df[col].to_numpy(dtype=float) - out[ev]) ** 2 if col in df else np.nan
    last_t = out.groupby(["subject_id", "k_obs"])["time_years"].transform("max")
    out["is_last"] = out["time_years"] == last_t
    out["horizon_bin"] = horizon_bin(out["horizon_years"])
    return out


def _cells(rows: pd.DataFrame, fastest: set[tuple[str, int]]):
    """Yield (k_obs, stratum, subject list, row mask) over k_obs x strata."""
    strat = class_stratum(rows["growth_class"].fillna("unknown"))
    key = list(zip(rows["subject_id"], rows["k_obs"]))
    is_fast = np.array([kk in fastest for kk in key])
    for k in sorted(rows["k_obs"].unique()):
        at_k = rows["k_obs"].to_numpy() == k
        names = ["all"] + sorted(set(strat[at_k])) + [FASTEST]
        for name in names:
            mask = at_k & (True if name == "all" else (is_fast if name == FASTEST else (strat == name).to_numpy()))
            if mask.any():
                yield int(k), name, mask


def _horizon_mask(rows: pd.DataFrame, horizon: str) -> np.ndarray:
    if horizon == "all":
        return np.ones(len(rows), dtype=bool)
    if horizon == "last":
        return rows["is_last"].to_numpy()
    return (rows["horizon_bin"] == horizon).to_numpy()


def score_forecasts(
    forecasts: dict[str, pd.DataFrame],
    truth: pd.DataFrame,
    n_boot: int = 1000,
    seed: int = 0,
    reference_methods: Sequence[str] | None = None,
    fastest_share: float = 0.2,
) -> dict[str, pd.DataFrame]:
    """Score forecasts of several methods on the same targets (see the module docstring).

    Args:
        forecasts: method name -> forecast frame (all k_obs of that method in one frame).
        truth: truth frame(s) of the same targets (from ``make_task``; concatenate over k_obs).
        n_boot: bootstrap resamples of subjects.
        seed: bootstrap seed.
        reference_methods: candidates for "best baseline" (default: the measured-volume baselines present).
        fastest_share: share of subjects in the fastest-changer stratum.

    Returns:
        ``{"rows", "metrics", "paired", "rates"}``: row scores; ``method, k_obs, stratum, horizon, metric, value,
        ci_lo, ci_hi, n_subjects, n_forecasts``; ``method, reference, k_obs, stratum, horizon, diff, ci_lo, ci_hi,
        rel_diff, rel_ci_lo, rel_ci_hi``; ``method, k_obs, stratum, spearman, ci_lo, ci_hi, n_subjects``.
    """
    if not forecasts:
        raise ValueError("score_forecasts needs at least one forecast frame")
    # one BLAS thread: the products are small and many; threads contending for shared cores slowed them tenfold
    with threadpool_limits(limits=1, user_api="blas"):
        return _score_forecasts(forecasts, truth, n_boot, seed, reference_methods, fastest_share)


def _score_forecasts(
    forecasts: dict[str, pd.DataFrame],
    truth: pd.DataFrame,
    n_boot: int,
    seed: int,
    reference_methods: Sequence[str] | None,
    fastest_share: float,
) -> dict[str, pd.DataFrame]:
    rows = pd.concat([score_rows(f, truth, m) for m, f in forecasts.items()], ignore_index=True)
    targets = rows.groupby("method").size()
    if targets.nunique() != 1:
        raise ValueError(f"methods forecast different numbers of targets: {targets.to_dict()}")
    refs = [m for m in (reference_methods or MEASURED_BASELINES) if m in forecasts]
    first = rows[rows["method"] == next(iter(forecasts))]
    rate = change_rate(first)
    fastest = fastest_subjects(rate, fastest_share)
    rng = np.random.default_rng(seed)
    metrics, paired, rates = [], [], []
    for k, stratum, mask in _cells(first, fastest):
        cell = first[mask]
        subjects = sorted(cell["subject_id"].unique())
        code = {s: i for i, s in enumerate(subjects)}
        counts = resample_counts(len(subjects), n_boot, rng).astype(np.float64)
        key_cols = ["subject_id", "k_obs", "time_years"]
        cell_keys = cell[key_cols]
        by_method = {
            m: cell_keys.merge(g, on=key_cols, how="left")
            for m, g in rows[rows["k_obs"] == k].groupby("method", sort=False)
        }
        for horizon in HORIZONS:
            hm = _horizon_mask(cell, horizon)
            if not hm.any():
                continue
            subj = cell.loc[hm, "subject_id"].map(code).to_numpy()
            boot_err = {}
            sliced = {m: g[hm] for m, g in by_method.items()}
            # every mean-type metric of every method from one product with the cell's resample counts
            mean_cols = {
                (m, col): gh[col].to_numpy(dtype=float)
                for m, gh in sliced.items()
                for _, col, stat in METRICS
                if stat == "mean" and np.all(np.isfinite(gh[col].to_numpy(dtype=float)))
            }
            mean_boot = (
                dict(zip(mean_cols, boot_means(np.stack(list(mean_cols.values()), axis=1), subj, counts).T))
                if mean_cols
                else {}
            )
            for m, gh in sliced.items():
                for metric, col, stat in METRICS:
                    x = gh[col].to_numpy(dtype=float)
                    if not np.all(np.isfinite(x)):
                        continue
                    if stat == "mean":
                        val, boot = float(np.mean(x)), mean_boot[(m, col)]
                    else:
                        val, boot = float(np.median(x)), boot_median(x, subj, counts)
                    lo, hi = percentile_ci(boot)
                    metrics.append(
                        dict(
                            method=m,
                            k_obs=k,
                            stratum=stratum,
                            horizon=horizon,
                            metric=metric,
                            value=val,
                            ci_lo=lo,
                            ci_hi=hi,
                            n_subjects=len(set(subj)),
                            n_forecasts=int(hm.sum()),
                        )
                    )
                    if metric == "mean_rel_err":
                        boot_err[m] = (gh["rel_err"].to_numpy(dtype=float), boot)
                if "brier15" in gh and np.all(np.isfinite(gh["brier15"])):
                    for ev, name in (("event15", "brier_base_growth15"), ("event40", "brier_base_prog40")):
                        o = gh[ev].to_numpy(dtype=float)
                        metrics.append(
                            dict(
                                method=m,
                                k_obs=k,
                                stratum=stratum,
                                horizon=horizon,
                                metric=name,
                                value=float(o.mean() * (1 - o.mean())),
                                ci_lo=np.nan,
                                ci_hi=np.nan,
                                n_subjects=len(set(subj)),
                                n_forecasts=int(hm.sum()),
                            )
                        )
            cands = [m for m in refs if m in boot_err]
            if not cands:
                continue
            best = min(cands, key=lambda m: float(np.mean(boot_err[m][0])))
            e_ref, b_ref = boot_err[best]
            for m, (e, b) in boot_err.items():
                if m == best:
                    continue
                d_boot = b - b_ref  # the resampled mean of e - e_ref (same rows, same weights)
                with np.errstate(divide="ignore", invalid="ignore"):
                    r_boot = b / b_ref - 1.0
                    rel = float(np.mean(e) / np.mean(e_ref) - 1.0) if np.mean(e_ref) > 0 else float("nan")
                lo, hi = percentile_ci(d_boot)
                rlo, rhi = percentile_ci(r_boot)
                paired.append(
                    dict(
                        method=m,
                        reference=best,
                        k_obs=k,
                        stratum=stratum,
                        horizon=horizon,
                        diff=float(np.mean(e - e_ref)),
                        ci_lo=lo,
                        ci_hi=hi,
                        rel_diff=rel,
                        rel_ci_lo=rlo,
                        rel_ci_hi=rhi,
                    )
                )
        for m, g in by_method.items():
            per_subj = g.groupby("subject_id")[["pred_a_per_year", "true_a_per_year"]].first()
            if not (np.all(np.isfinite(per_subj.to_numpy(dtype=float))) and len(per_subj) >= 3):
                continue
            x, y = per_subj["pred_a_per_year"].to_numpy(float), per_subj["true_a_per_year"].to_numpy(float)
            if np.ptp(x) == 0 or np.ptp(y) == 0:  # e.g. one observed scan: every rate is the prior's
                continue
            rho = float(spearmanr(x, y).statistic)
            boots = boot_spearman(x, y, counts[: min(n_boot, SPEARMAN_BOOT)])
            lo, hi = percentile_ci(np.asarray(boots, dtype=float))
            rates.append(dict(method=m, k_obs=k, stratum=stratum, spearman=rho, ci_lo=lo, ci_hi=hi, n_subjects=len(x)))
    out = {
        "rows": rows,
        "metrics": pd.DataFrame(metrics),
        "paired": pd.DataFrame(
            paired,
            columns=[
                "method",
                "reference",
                "k_obs",
                "stratum",
                "horizon",
                "diff",
                "ci_lo",
                "ci_hi",
                "rel_diff",
                "rel_ci_lo",
                "rel_ci_hi",
            ],
        ),
        "rates": pd.DataFrame(
            rates, columns=["method", "k_obs", "stratum", "spearman", "ci_lo", "ci_hi", "n_subjects"]
        ),
    }
    out["metrics"].attrs["fastest_source"] = rate.attrs.get("source", "")
    return out


def markdown_table(df: pd.DataFrame, floatfmt: str = "{:.3f}") -> str:
    """GitHub-flavoured markdown table of a frame (floats formatted with ``floatfmt``)."""

    def fmt(v: object) -> str:
        if isinstance(v, (float, np.floating)):
            return "" if not np.isfinite(v) else floatfmt.format(v)
        return str(v)

    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def _with_ci(metrics: pd.DataFrame, metric: str, pct: bool) -> pd.Series:
    m = metrics[metrics["metric"] == metric]
    scale = 100.0 if pct else 1.0
    text = [
        (
            (f"{scale * v:.1f} [{scale * lo:.1f}, {scale * hi:.1f}]" if pct else f"{v:.3f} [{lo:.3f}, {hi:.3f}]")
            if np.isfinite(lo)
            else f"{scale * v:.3f}"
        )
        for v, lo, hi in zip(m["value"], m["ci_lo"], m["ci_hi"])
    ]
    return pd.Series(text, index=pd.MultiIndex.from_frame(m[["method", "k_obs", "stratum", "horizon"]]))


def summary_table(
    scores: dict[str, pd.DataFrame], horizon: str = "last", strata: Sequence[str] = ("all",)
) -> pd.DataFrame:
    """One row per (k_obs, stratum, method) at ``horizon``: the headline metrics with their 95 % CIs (in %)."""
    met = scores["metrics"]
    met = met[(met["horizon"] == horizon) & met["stratum"].isin(strata)]
    cols = {
        "mean rel err %": ("mean_rel_err", True),
        "median rel err %": ("median_rel_err", True),
        "median |ln| %": ("median_abs_log", True),
        "within 8 %": ("within8", True),
        "cover80 %": ("cover80", True),
        "cover90 %": ("cover90", True),
        "Brier >15 %": ("brier_growth15", False),
        "base Brier": ("brier_base_growth15", False),
    }
    parts = {
        name: _with_ci(met, metric, pct) for name, (metric, pct) in cols.items() if (met["metric"] == metric).any()
    }
    table = pd.DataFrame(parts).reset_index()
    n = met[met["metric"] == "mean_rel_err"].set_index(["method", "k_obs", "stratum", "horizon"])["n_subjects"]
    table.insert(4, "subjects", table.set_index(["method", "k_obs", "stratum", "horizon"]).index.map(n))
    order = {s: i for i, s in enumerate(strata)}
    table = table.sort_values(["k_obs", "stratum", "method"], key=lambda c: c.map(order) if c.name == "stratum" else c)
    return table.drop(columns="horizon").fillna("")


def write_forecast_report(
    scores: dict[str, pd.DataFrame],
    out_dir: str | Path,
    forecasts: dict[str, pd.DataFrame] | None = None,
    observed: pd.DataFrame | None = None,
    title: str = "Volume forecasts on held-out subjects",
    notes: Sequence[str] = (),
    interval_method: str | None = None,
) -> str:
    """Write ``report.md``, ``metrics.csv``, ``paired.csv``, ``rates.csv``, ``scored_rows.csv`` and the figures.

    Returns the path of ``report.md``.
    """
    from custom.forecast.figures import plot_error_by_horizon, plot_reliability, plot_subject_forecasts

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("metrics", "paired", "rates"):
        scores[name].to_csv(out / f"{name}.csv", index=False)
    scores["rows"].to_csv(out / "scored_rows.csv", index=False)
    figs = {
        "error_by_horizon.png": plot_error_by_horizon(scores["metrics"], out / "error_by_horizon.png"),
        "reliability.png": plot_reliability(scores["rows"], out / "reliability.png"),
    }
    if forecasts is not None and observed is not None:
        figs["subject_forecasts.png"] = plot_subject_forecasts(
            forecasts, scores["rows"], observed, out / "subject_forecasts.png", interval_method=interval_method
        )
    strata = [s for s in ("all", "growers", "stable", "shrinkers", FASTEST) if s in set(scores["metrics"]["stratum"])]
    strata += sorted(set(scores["metrics"]["stratum"]) - set(strata))
    lines = [f"# {title}", ""] + [f"{n}" for n in notes] + [""]
    lines += [
        "Errors are against the measured volume of each held-out target scan; [95 % CI] from a subject-level",
        "bootstrap. `within 8 %`: share of forecasts within +-8 % of the measured volume. Coverage and Brier are",
        "for conformal intervals and probabilities calibrated on the validation subjects. Fastest changers: by "
        f"{scores['metrics'].attrs.get('fastest_source', 'true')} volumes.",
        "",
        "## Last held-out scan",
        "",
        markdown_table(summary_table(scores, "last", strata)),
        "",
        "## All target scans",
        "",
        markdown_table(summary_table(scores, "all", ("all",))),
        "",
    ]
    pr = scores["paired"]
    if len(pr):
        sel = pr[(pr["horizon"] == "last") & pr["stratum"].isin(["all", "growers"])].copy()
        for c in ("diff", "ci_lo", "ci_hi", "rel_diff", "rel_ci_lo", "rel_ci_hi"):
            sel[c] = 100 * sel[c]
        lines += [
            "## Paired differences against the best measured-volume baseline (last scan)",
            "",
            "`diff`: mean relative error of the method minus the reference's, percentage points; `rel_diff`: ratio",
            "of the mean errors minus 1, in %; both with subject-bootstrap 95 % CIs.",
            "",
            markdown_table(sel, "{:.1f}"),
            "",
        ]
    if len(scores["rates"]):
        lines += ["## Recovered growth rate against the true rate (Spearman)", "", markdown_table(scores["rates"]), ""]
    lines += ["## Figures", ""] + [f"![{n}]({n})" for n, p in figs.items() if p] + [""]
    lines += [
        "Every cell (strata x horizons x k_obs x metric) is in `metrics.csv`; paired differences in `paired.csv`."
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return str(path)
