"""The demo's report: ``report.md`` and a self-contained ``report.html`` (PNG figures embedded as base64)."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

#: (metric key in metrics.json, label) shown side by side for the two encoders
ENCODER_ROWS: list[tuple[str, str]] = [
    ("diag/au_count", "active units (Var_x E[z_j|x] > 0.01)"),
    ("diag/kl_raw", "KL(q(z|x) || p(z)) [nats]"),
    ("diag/kl_floor", "free-bits floor [nats]"),
    ("diag/recon_mu_mse", "recon MSE from mu (brain)"),
    ("diag/recon_z0_mse", "recon MSE from z = 0 (brain)"),
    ("diag/recon_z0_ratio", "z0 / mu MSE ratio (>= 2: decoder uses z)"),
    ("val_epoch/ssim_mean", "SSIM in brain (mean of 4 modalities)"),
    ("val_epoch/psnr_mean", "PSNR in brain [dB] (data range from data)"),
    ("probe/r2_log_volume", "probe R² log tumour volume (ridge fitted on training subjects, scored held-out)"),
    ("probe/r2_centroid", "probe R² centroid (mean x,y,z; same protocol)"),
    ("partition/r2_log_volume", "R² z_vol vs log volume"),
    ("partition/r2_centroid_x", "R² z_loc x vs centroid x"),
    ("partition/r2_centroid_y", "R² z_loc y vs centroid y"),
    ("partition/r2_centroid_z", "R² z_loc z vs centroid z"),
    ("partition/best_other_r2_log_volume", "best R² of any other single latent vs log volume"),
    ("traversal/z_vol_volume_spearman", "traversal: rank corr. of the z_vol offset with the decoded tumour size"),
    ("traversal/max_abs_volume_spearman", "traversal: largest |rank corr.| of any traversed coordinate"),
    ("dci/disentanglement", "DCI disentanglement"),
    ("dci/completeness", "DCI completeness"),
    ("dci/informativeness", "DCI informativeness (R²)"),
    ("sap/sap", "SAP (continuous)"),
    ("mig/mig", "MIG (10 quantile bins)"),
    ("mig/oracle", "MIG of a perfect code (same N)"),
    ("mig/null_mean", "MIG permutation null"),
    ("cov/offdiag_abs_mean", "mean |off-diagonal covariance| of mu"),
    ("tc/gaussian_total_correlation", "Gaussian total correlation of mu"),
]


def _read_json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.exists() else {}


def _last(paths: list[Path]) -> Path | None:
    return sorted(paths)[-1] if paths else None


def _fmt(v: Any) -> str:
    if isinstance(v, (int, float)):
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.4g}"
    return "–" if v is None else str(v)


def cohort_line(meta: dict[str, Any]) -> str:
    """One line naming the synthetic cohort's generator version and options (from cohort_meta.json)."""
    o = meta.get("options", {})
    if not o:
        return ""
    return (
        f"Synthetic cohort {meta.get('generator', '')} {meta.get('version', '')}: growth {o.get('growth')}, "
        f"schedule {o.get('schedule')}, biomarkers {'on' if o.get('biomarkers') else 'off'}, "
        f"seed {o.get('seed')}, {o.get('spacing')} mm."
    )


def collect(out: Path) -> dict[str, Any]:
    """Find the figures and numbers the demo stages left in ``out``."""
    enc = {}
    for name in ("vae_baseline", "dipvae"):
        run = out / name
        ev = run / "eval_test"
        enc[name] = {
            "metrics": _read_json(ev / "metrics.json").get("metrics", {}),
            "verdict": _read_json(ev / "metrics.json").get("verdict", ""),
            "verdict_train": _read_json(run / "eval_training" / "metrics.json").get("verdict", ""),
            "dashboard": run / "dashboard.png",
            "recon": _last(list((ev / "figures").glob("recon_*.png")))
            or _last(list((run / "figures").glob("recon_*.png"))),
            "traversal": ev / "traversal.png",
            "probes": ev / "probes.png",
        }
    ode = out / "latent_ode"
    return {
        "encoders": enc,
        "ode": _read_json(ode / "eval_test" / "metrics.json"),
        "growth": ode / "eval_test" / "growth.png",
        "forecast": _last(list((ode / "forecast").glob("*.png"))) if (ode / "forecast").exists() else None,
        "cohort_fig": out / "figures" / "cohort_subject.png",
        "cohort_meta": _read_json(out / "cohort" / "cohort_meta.json"),
        "durations": (
            {p.name: float(p.read_text()) for p in (out / ".done").glob("*")} if (out / ".done").exists() else {}
        ),
    }


def _forecast_metrics(report_dir: Path):
    import pandas as pd

    path = report_dir / "metrics.csv"
    return pd.read_csv(path) if path.exists() else None


def forecast_report_rows(report_dir: Path) -> list[str]:
    """The forecast report's last-scan table (every method, k_obs, stratum ``all``) as markdown rows."""
    from custom.forecast.report import markdown_table, summary_table

    met = _forecast_metrics(report_dir)
    if met is None:
        return []
    return markdown_table(summary_table({"metrics": met}, "last", ("all",))).splitlines()


def forecast_trust_sentence(report_dir: Path) -> str:
    """One sentence naming the forecast with the lowest mean last-scan error (oracle excluded) at the largest k, and
    whether its paired difference against the best measured-volume baseline excludes zero."""
    met = _forecast_metrics(report_dir)
    if met is None:
        return ""
    sel = met[(met["horizon"] == "last") & (met["stratum"] == "all") & (met["metric"] == "mean_rel_err")]
    sel = sel[sel["method"] != "Oracle"]
    k = int(sel["k_obs"].max())
    at_k = sel[sel["k_obs"] == k].sort_values("value")
    best = at_k.iloc[0]
    sentence = (
        f"At this size, trust **{best['method']}** most from {k} observed scans: its mean error at the last held-out "
        f"scan is {100 * best['value']:.1f} % [{100 * best['ci_lo']:.1f}, {100 * best['ci_hi']:.1f}] on "
        f"{int(best['n_subjects'])} test subjects, the lowest in the table"
    )
    paired_csv = report_dir / "paired.csv"
    if paired_csv.exists():
        import pandas as pd

        pr = pd.read_csv(paired_csv)
        row = pr[
            (pr["method"] == best["method"]) & (pr["k_obs"] == k) & (pr["stratum"] == "all") & (pr["horizon"] == "last")
        ]
        if len(row):
            r = row.iloc[0]
            clear = r["ci_hi"] < 0
            sentence += (
                f"; against {r['reference']} the paired difference is {100 * r['diff']:+.1f} points "
                f"[{100 * r['ci_lo']:+.1f}, {100 * r['ci_hi']:+.1f}]"
                + (" (the interval excludes 0)" if clear else " (the interval includes 0: no clear winner)")
            )
    return sentence + "."


def write_report(
    out: str | Path, size: str, params: dict[str, Any], commands: dict[str, str], wall_seconds: float | None = None
) -> Path:
    """Write report.md and report.html into ``out``; returns the HTML path.

    ``wall_seconds``: wall time of the demo command up to the report (stages done by an earlier run not included);
    printed with the CPU model and core count.
    """
    out = Path(out)
    c = collect(out)
    figs: list[tuple[str, Path | None, str]] = [
        (
            "The synthetic cohort",
            c["cohort_fig"],
            "One synthetic subject across its timepoints: t1c, t1n, t2f, t2w in three planes through the tumour, segmentation outlined (enhancing tumour, core, edema).",
        ),
        (
            "vae_baseline: training dashboard",
            c["encoders"]["vae_baseline"]["dashboard"],
            "Loss terms, the cyclical beta schedule against the free-bits KL floor, learning rate, gradient norm, active units and probe R² per epoch.",
        ),
        (
            "dipvae + Exp3: training dashboard",
            c["encoders"]["dipvae"]["dashboard"],
            "Same panels for DIP-VAE-II with the supervised latent partition.",
        ),
        (
            "vae_baseline: reconstruction (test case)",
            c["encoders"]["vae_baseline"]["recon"],
            "Input | reconstruction from mu | |difference|, per modality, three planes.",
        ),
        (
            "dipvae + Exp3: reconstruction (test case)",
            c["encoders"]["dipvae"]["recon"],
            "Input | reconstruction from mu | |difference|.",
        ),
        (
            "dipvae + Exp3: latent traversal",
            c["encoders"]["dipvae"]["traversal"],
            "One latent coordinate varied at a time around a test subject's mu (t1c): z0 is the log-volume coordinate, z1-z3 the centroid.",
        ),
        (
            "vae_baseline: latent traversal",
            c["encoders"]["vae_baseline"]["traversal"],
            "Most variable active units of the unsupervised baseline.",
        ),
        (
            "vae_baseline: held-out probes",
            c["encoders"]["vae_baseline"]["probes"],
            "Ridge read-out of mu fitted on the training subjects, scored on the test subjects: predicted against true log tumour volume and centroid per scan (one subject's scans joined); what the probe R² rows of the table measure.",
        ),
        (
            "dipvae + Exp3: held-out probes",
            c["encoders"]["dipvae"]["probes"],
            "The same read-out for DIP-VAE-II + Exp3, whose z0 and z1-z3 are supervised on these factors.",
        ),
        (
            "latent_ode: growth forecasts (held-out subjects)",
            c["growth"],
            "Measured volumes (dots), the hybrid forecast from the first scans with their segmentations (thick line), "
            "the images-only forecast (thin line) and the true Gompertz curve (dashed).",
        ),
        (
            "latent_ode: forecast of one subject (inference.json)",
            c["forecast"],
            "The inference workflow's growth plot for one subject.",
        ),
    ]
    enc = c["encoders"]
    rows = ["| metric | vae_baseline | dipvae + Exp3 |", "|---|---|---|"]
    for key, label in ENCODER_ROWS:
        a, b = enc["vae_baseline"]["metrics"].get(key), enc["dipvae"]["metrics"].get(key)
        if a is None and b is None:
            continue
        rows.append(f"| {label} | {_fmt(a)} | {_fmt(b)} |")
    ode_rows: list[str] = []
    table = c["ode"].get("table", {})
    if table:
        cols = [
            "n_subjects",
            "rel_vol_err_pct_last",
            "rel_vol_err_pct_last_median",
            "within_8pct_last",
            "rate_spearman",
        ]
        ode_rows = ["| method (observed scans) | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for method, m in table.items():
            ode_rows.append(f"| {method} | " + " | ".join(_fmt(m.get(k)) for k in cols) + " |")
        report_md = c["ode"].get("forecast_report")
        baselines = forecast_report_rows(Path(report_md).parent) if report_md else []
        if baselines:
            ode_rows += [
                "",
                "Against the measured-volume baselines on the same test subjects and targets (last held-out scan, "
                "all subjects; [95 % CI] from a subject bootstrap):",
                "",
            ]
            ode_rows += baselines + ["", forecast_trust_sentence(Path(report_md).parent)]
            ode_rows += ["", f"Full forecast report (strata, horizons, intervals, figures): `{report_md}`"]
    extra = {k: v for k, v in c["ode"].items() if isinstance(v, (int, float))}
    md: list[str] = [
        f"# Meningioma growth modelling: demo report ({size})",
        "",
        f"Cohort: {params.get('subjects')} subjects x {params.get('timepoints')} timepoints, "
        f"state {params.get('spatial_size')} at {params.get('spacing')} mm, z_dim {params.get('z_dim')}; "
        f"encoders {params.get('vae_epochs')} / {params.get('dip_epochs')} epochs"
        + (
            f"; tumour voxels weighted x{params['tumour_weight']:g} in both encoders' likelihood"
            if float(params.get("tumour_weight", 1.0)) != 1.0
            else ""
        )
        + ".",
        "",
        *([cohort_line(c["cohort_meta"]), ""] if cohort_line(c["cohort_meta"]) else []),
        "## Encoders on held-out test subjects",
        "",
        "Collapse verdict on the training split (the data the model was fitted to): "
        f"vae_baseline: {enc['vae_baseline']['verdict_train'] or '–'}; "
        f"dipvae: {enc['dipvae']['verdict_train'] or '–'}",
        "",
        f"Same diagnostics on the held-out test subjects: vae_baseline: {enc['vae_baseline']['verdict']}; "
        f"dipvae: {enc['dipvae']['verdict']}",
        "",
        *rows,
        "",
        "## Growth forecasts (held-out subjects)",
        "",
        *ode_rows,
        "",
    ]
    if extra:
        md += ["| quantity | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in extra.items()] + [""]
    md += ["## Figures", ""]
    for title, path, caption in figs:
        if path is not None and Path(path).exists():
            md += [f"### {title}", "", f"![{title}]({Path(path).relative_to(out)})", "", caption, ""]
    md += ["## Commands that reproduce each stage", ""]
    for stage, cmd in commands.items():
        md += [f"- **{stage}**: `{cmd}`"]
    overlap = " (vae_baseline and dipvae ran at the same time)" if params.get("parallel_encoders") else ""
    md += [
        "",
        "Stage durations (s)" + overlap + ": " + ", ".join(f"{k} {v:.0f}" for k, v in c["durations"].items()),
        "",
        _machine_line(wall_seconds),
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    (out / "report.html").write_text(_to_html(md, out))
    return out / "report.html"


def _machine_line(wall_seconds: float | None) -> str:
    """``Machine: <CPU model>, <n> cores, torch <v>; demo wall time <m> min <s> s.``"""
    import os

    import torch

    from custom.utils import cpu_model

    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        cores = os.cpu_count()
    line = f"Machine: {cpu_model()}, {cores} cores, torch {torch.__version__}"
    if torch.cuda.is_available():
        line += f", GPU {torch.cuda.get_device_name()}"
    if wall_seconds is not None:
        minutes, seconds = divmod(int(round(wall_seconds)), 60)
        line += f"; demo wall time {minutes} min {seconds} s (this invocation, up to the report)"
    return line + "."


def _to_html(md: list[str], out: Path) -> str:
    """A small Markdown subset (headings, tables, images, lists, code) to HTML with embedded images."""
    body: list[str] = []
    in_table = False
    for line in md:
        if line.startswith("|"):
            cells = [html.escape(x.strip()) for x in line.strip("|").split("|")]
            if set("".join(cells)) <= set("-"):
                continue
            if not in_table:
                body.append("<table>")
                in_table = True
                body.append("<tr>" + "".join(f"<th>{x}</th>" for x in cells) + "</tr>")
            else:
                body.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
            continue
        if in_table:
            body.append("</table>")
            in_table = False
        if line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("!["):
            src = line[line.rindex("](") + 2 : -1]
            data = base64.b64encode((out / src).read_bytes()).decode()
            body.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(src)}">')
        elif line.startswith("- "):
            text = html.escape(line[2:]).replace("**", "")
            body.append(f"<li>{_code(text)}</li>")
        elif line:
            body.append(f"<p>{_code(html.escape(line))}</p>")
    if in_table:
        body.append("</table>")
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
        "code{background:#f4f4f4;padding:1px 4px;font-size:85%;word-break:break-all}"
    )
    return f"<!doctype html><html><head><meta charset='utf-8'><title>demo report</title><style>{style}</style></head><body>{''.join(body)}</body></html>"


def _code(text: str) -> str:
    parts = text.split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))
