"""Thin command functions behind ``python -m custom``; each imports its machinery lazily."""

from __future__ import annotations

from typing import Any


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
    or_no_calcification: float = 3.87,
    or_edema: float = 2.74,
    or_t2_iso_hyper: float = 3.76,
    rapid_share: float = 0.254,
) -> str:
    """Generate the synthetic longitudinal meningioma cohort in ``out`` (BraTS-MEN layout, cohort.csv, datalist.json).

    ``growth`` realistic | fast, ``schedule`` irregular | protocol, ``biomarkers`` on | off (growth independent
    of appearance), ``table_only`` (no images), odds ratios of rapid growth and the overall rapid share.
    """
    from custom.synth.cli import synth as _synth

    return _synth(
        out=out,
        subjects=subjects,
        timepoints=timepoints,
        seed=seed,
        spacing=spacing,
        workers=workers,
        growth=growth,
        schedule=schedule,
        biomarkers=biomarkers,
        table_only=table_only,
        or_no_calcification=or_no_calcification,
        or_edema=or_edema,
        or_t2_iso_hyper=or_t2_iso_hyper,
        rapid_share=rapid_share,
    )


def datalist(
    data_dir: str,
    out: str,
    times: str | None = None,
    seed: int = 0,
    split: str = "0.7,0.15,0.15",
    skip_invalid: bool = False,
    require_seg: bool = False,
) -> str:
    """Discover and validate a BraTS-MEN folder, then write a decathlon-style datalist JSON to ``out``.

    Scan times come from ``times`` (CSV ``subject_id,timepoint,time_years``), or ``<data_dir>/times.csv`` when present.
    """
    from pathlib import Path

    from custom.data.cli import datalist as _datalist

    if times is None and (Path(data_dir) / "times.csv").exists():
        times = str(Path(data_dir) / "times.csv")
        print(f"using scan times from {times}")
    return _datalist(
        data_dir=data_dir,
        out=out,
        times=times,
        seed=seed,
        split=split,
        skip_invalid=skip_invalid,
        require_seg=require_seg,
    )


def show(data_dir: str, subject: str, out: str, datalist: str | None = None) -> str:
    """Draw one subject across its timepoints (4 modalities x 3 planes, segmentation outlined) to a PNG."""
    from custom.plots.show import show as _show

    return _show(data_dir=data_dir, subject=subject, out=out, datalist=datalist)


def demo(out: str = "runs/demo", size: str = "cpu", **overrides: Any) -> str:
    """Run the whole pipeline (cohort -> vae_baseline -> dipvae+Exp3 -> latent_ode) and write report.html."""
    from custom.demo import run_demo

    return run_demo(out=out, size=size, **overrides)


def traverse(
    bundle: str,
    out: str,
    datalist: str = "data/synthetic/datalist.json",
    split: str = "validation",
    case: int = 0,
    steps: int = 7,
    span: float = 2.0,
) -> str:
    """Latent traversal grid of a trained encoder bundle around one case's mu (network from models/model_config.json)."""
    from custom.traversal import traverse_bundle

    return traverse_bundle(bundle=bundle, out=out, datalist=datalist, split=split, case=case, steps=steps, span=span)


def probes(fit: str, eval: str, out: str, select: str | None = None) -> str | None:
    """Held-out probe figure from ``evaluate.json``'s latents: ridge on ``fit`` (training split), penalty chosen on
    ``select`` (validation split), predicted against true log volume and centroid for every scan of ``eval``."""
    from custom.plots.probes import probe_figure

    return probe_figure(fit_latents=fit, eval_latents=eval, out_png=out, select_latents=select)


def export_bundle(bundle: str, out: str, model: str | None = None, **overrides: Any) -> str:
    """Zip a trained bundle (configs, models/model.pt + model.ts, docs, LICENSE, custom code) for sharing.

    ``overrides`` (e.g. ``--spatial_size "[64,64,64]" --z_dim 64``) are written into the exported configs and
    metadata, so the zip describes the network that was actually trained.
    """
    from custom.export import export_bundle as _export

    return _export(bundle=bundle, out=out, model=model, **overrides)


def bench(mode: str = "cpu", out: str | None = None, **kwargs: Any) -> str:
    """Training-throughput benchmark table (``mode='gpu'`` at 128^3 against the reference, ``'cpu'`` quick)."""
    from custom.bench import run_bench

    return run_bench(mode=mode, out=out, **kwargs)


def forecast_baselines(
    cohort: str,
    out: str,
    k_obs: str = "1,2",
    seed: int = 0,
    n_boot: int = 1000,
    normalise: str = "auto",
    methods: str | None = None,
    horizon_edges: str = "1,2,3,4,5",
    eb_prior: str = "mom",
) -> str:
    """Measured-volume forecast baselines on ``cohort`` (cohort.csv): fit on training subjects, conformal intervals
    calibrated on validation subjects per (k_obs, horizon bin) (``horizon_edges`` in years, ``none``: all horizons
    pooled), test subjects scored; ``eb_prior`` is the EBGompertz population prior (mad | mom | em); writes
    report.md, CSVs and figures to ``out``."""
    from custom.forecast.cli import run_forecast_baselines

    names = (
        None if methods is None else [m.strip() for m in (methods.split(",") if isinstance(methods, str) else methods)]
    )
    return run_forecast_baselines(
        cohort=cohort,
        out=out,
        k_obs=k_obs,
        seed=seed,
        n_boot=n_boot,
        normalise=normalise,
        methods=names,
        horizon_edges=horizon_edges,
        eb_prior=eb_prior,
    )
