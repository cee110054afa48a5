"""The training command users run, timed: ``python -m custom bench --mode bundle``.

For each variant (``vae_baseline``; ``dipvae``; ``dipvae_sbd`` = dipvae with ``configs/recipes/recipe2_sbd.json``
layered on ``train.json``) the benchmark runs the real command as a subprocess::

    python -m monai.bundle run training --config_file <train.json[, recipe]> --dataset_dir <cohort> \\
        --output_dir <tmp>/<variant> --ckpt_dir <tmp>/<variant>/models --epochs E --val_interval 100000 \\
        --batch_size B --spatial_size [S,S,S] --spacing 240/S --num_workers <cores> [--profile_steps k]

with the shipped defaults of everything else (augmentation, amp, compile, loader, handlers, checkpoints). The
overrides only size and time-limit the run: ``val_interval`` beyond the last epoch keeps validation (and the
dashboard, drawn at the same interval) out of every epoch; ``num_workers`` is the thread count of the one-off
preprocessing cache (the training loader has none); ``output_dir``/``ckpt_dir`` keep the run out of the repository.

The throughput is the one the trainer logs per epoch, ``train_epoch/volumes_per_s`` in ``metrics.csv``
(:class:`custom.engines.handlers.EpochAverager`: volumes of the epoch over the wall time from ``EPOCH_STARTED`` to
``EPOCH_COMPLETED``, with a CUDA sync at both ends). The first ``warmup_epochs`` (compile and ``cudnn.benchmark``
warm-up) and, with ``profile``, the profiled epoch (``profile_epoch``) are discarded; the table gives the median of
the rest, and ``peak GiB`` the largest ``train_epoch/peak_gpu_gib`` of those epochs.

In the same run and on the same device, the reference VAE (``benchmarks/reference/refvae.py``) is timed at the same
size and batch, eager and compiled + channels-last, bf16 autocast on CUDA, fp32 on the CPU (the step of the shared GPU anchor; median of the timed
steps, :func:`custom.bench._bench_reference`). Ratios are the bundle's median epoch vol/s over the reference's
step vol/s. The synthetic cohort is generated once (``python -m custom synth``) with ``subjects`` x ``timepoints``
scans; the default 288 x 1 gives ~200 training volumes, 25 steps per epoch at batch 8.

Time: ``time_budget_s`` bounds the whole run. Each bundle run gets an equal share of what is left (after a
reservation for the compiled reference when it is still to come); a run that reaches its share is stopped and
reports the epochs it finished (status ``stopped at time share``); a run that would start after the budget is
listed as skipped.
"""

from __future__ import annotations

import csv
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

__all__ = ["BundleBenchSettings", "BundleRow", "bundle_settings", "run_bundle_bench", "epoch_throughput"]

REPO = Path(__file__).resolve().parents[1]

#: variant -> (bundle folder, config files layered in order, relative to the bundle's configs/)
BUNDLE_VARIANTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "vae_baseline": ("vae_baseline", ("train.json",)),
    "dipvae": ("dipvae", ("train.json",)),
    "dipvae_sbd": ("dipvae", ("train.json", "recipes/recipe2_sbd.json")),
}

#: seconds kept back for the compiled reference while it is still to run (compile + 15 steps on an H200)
REFERENCE_COMPILED_RESERVE_S = 75.0


@dataclass(frozen=True)
class BundleBenchSettings:
    """Everything a bundle-mode run depends on (stored in the JSON beside the results)."""

    device: str
    spatial_size: int = 128
    batch_size: int = 8
    variants: tuple[str, ...] = tuple(BUNDLE_VARIANTS)
    epochs: int = 6
    warmup_epochs: int = 1
    subjects: int = 288
    timepoints: int = 1
    profile: bool = False
    profile_steps: int = 5
    profile_epoch: int = 2
    time_budget_s: float = 480.0
    reference: bool = True
    reference_compile: bool | None = None
    compile: bool | None = None
    reference_warmup: int | None = None
    reference_steps: int | None = None
    cohort_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def spacing(self) -> float:
        """Voxel size (mm) that puts the 240 mm field of view of the synthetic cohort on ``spatial_size`` voxels."""
        return 240.0 / self.spatial_size

    def discarded_epochs(self) -> set[int]:
        out = set(range(1, self.warmup_epochs + 1))
        if self.profile:
            out.add(self.profile_epoch)
        return out


@dataclass
class BundleRow:
    """One line of the ratio table; numbers are ``None`` when not measured."""

    run: str
    status: str = "ok"
    vols_per_s: float | None = None
    vols_per_s_range: tuple[float, float] | None = None
    epochs_timed: list[int] = field(default_factory=list)
    epoch_vols_per_s: list[float] = field(default_factory=list)
    ratio_ref_eager: float | None = None
    ratio_ref_compiled: float | None = None
    peak_gib: float | None = None
    seconds: float | None = None
    command: str | None = None
    profile: dict[str, Any] | None = None


def bundle_settings(**kwargs: Any) -> BundleBenchSettings:
    """Settings with ``kwargs`` replacing fields (command-line strings and comma lists coerced); CUDA when present."""
    from custom.bench import _coerce

    aliases = {"size": "spatial_size", "batch": "batch_size", "batch_sizes": "batch_size"}
    fields = {aliases.get(k, k): v for k, v in kwargs.items()}
    unknown = set(fields) - set(BundleBenchSettings.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown bench --mode bundle option(s) {sorted(unknown)}; known: "
            f"{sorted(BundleBenchSettings.__dataclass_fields__)}"
        )
    if "variants" in fields:
        value = fields["variants"]
        value = value.split(",") if isinstance(value, str) else value
        value = value if isinstance(value, (list, tuple)) else [value]
        fields["variants"] = tuple(str(v).strip() for v in value)
        bad = set(fields["variants"]) - set(BUNDLE_VARIANTS)
        if bad:
            raise ValueError(f"unknown variant(s) {sorted(bad)}; known: {sorted(BUNDLE_VARIANTS)}")
    for key, value in list(fields.items()):
        if key not in ("variants", "overrides", "cohort_dir", "device"):
            fields[key] = _coerce(value)
    device = fields.pop("device", None) or ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = str(device).startswith("cuda")
    fields.setdefault("reference_warmup", 3 if cuda else 1)  # the GPU anchor's 3 + 12; the CPU mode's 1 + 3
    fields.setdefault("reference_steps", 12 if cuda else 3)
    s = replace(BundleBenchSettings(device=device), **fields)
    if s.epochs <= max(s.discarded_epochs()):
        raise ValueError(
            f"epochs={s.epochs} leaves no timed epoch: epochs {sorted(s.discarded_epochs())} are discarded "
            "(warm-up / profiled); raise --epochs"
        )
    if s.batch_size < 1 or s.spatial_size < 16:
        raise ValueError(f"batch_size must be >= 1 and spatial_size >= 16, got {s.batch_size}, {s.spatial_size}")
    return s


def epoch_throughput(metrics_csv: Path, discard: set[int]) -> tuple[list[int], list[float], list[float]]:
    """(epochs kept, their ``train_epoch/volumes_per_s``, their ``train_epoch/peak_gpu_gib``) from a tidy CSV."""
    if not metrics_csv.exists():
        return [], [], []
    epochs, vols, peaks = [], [], []
    with metrics_csv.open(newline="") as fh:
        for row in csv.DictReader(fh):
            epoch = int(float(row["epoch"]))
            value = row.get("train_epoch/volumes_per_s", "")
            if epoch in discard or value in ("", None):
                continue
            epochs.append(epoch)
            vols.append(float(value))
            peak = row.get("train_epoch/peak_gpu_gib", "")
            if peak not in ("", None):
                peaks.append(float(peak))
    return epochs, vols, peaks


def _cohort(s: BundleBenchSettings, workdir: Path) -> Path:
    """Folder of the cohort: ``cohort_dir``, or one generated with ``python -m custom synth`` in ``workdir``."""
    if s.cohort_dir:
        root = Path(s.cohort_dir)
        if not (root / "datalist.json").exists():
            raise FileNotFoundError(f"{root / 'datalist.json'} not found (cohort_dir must hold a generated cohort)")
        return root
    root = workdir / "cohort"
    cmd = [sys.executable, "-m", "custom", "synth", "--out", str(root), "--subjects", str(s.subjects)]
    cmd += ["--timepoints", str(s.timepoints), "--seed", "0", "--spacing", str(s.spacing)]
    cmd += ["--workers", str(max(1, os.cpu_count() or 1))]
    subprocess.run(cmd, cwd=REPO, env=_env(), check=True, stdout=subprocess.DEVNULL)
    return root


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _override_args(values: dict[str, Any]) -> list[str]:
    """``--key value`` pairs in monai.bundle's command-line form (JSON for lists, dicts and booleans)."""
    out: list[str] = []
    for key, value in values.items():
        if isinstance(value, (list, dict, bool)) or value is None:
            text = json.dumps(value)
            text = {"true": "True", "false": "False", "null": "None"}.get(text, text)
        else:
            text = str(value)
        out += [f"--{key}", text]
    return out


def bundle_command(s: BundleBenchSettings, variant: str, cohort: Path, run_dir: Path) -> list[str]:
    """The ``python -m monai.bundle run training`` command of ``variant`` (see the module docstring)."""
    folder, configs = BUNDLE_VARIANTS[variant]
    files = [str(REPO / "bundles" / folder / "configs" / c) for c in configs]
    config_file = files[0] if len(files) == 1 else "[" + ",".join(f"'{f}'" for f in files) + "]"
    values: dict[str, Any] = {
        "dataset_dir": str(cohort),
        "output_dir": str(run_dir),
        "ckpt_dir": str(run_dir / "models"),
        "epochs": s.epochs,
        "val_interval": 100000,
        "batch_size": s.batch_size,
        "spatial_size": [s.spatial_size] * 3,
        "spacing": s.spacing,
        "num_workers": max(1, min(16, os.cpu_count() or 1)),
    }
    if s.compile is not None:
        values["compile"] = bool(s.compile)
    if s.profile:
        values["profile_steps"] = s.profile_steps
    values.update(s.overrides)
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_file] + _override_args(
        values
    )


def _run_bundle(
    s: BundleBenchSettings, variant: str, cohort: Path, workdir: Path, out: Path, share_s: float
) -> BundleRow:
    run_dir = workdir / variant
    cmd = bundle_command(s, variant, cohort, run_dir)
    row = BundleRow(run=f"bundle {variant}", command=" ".join(shlex.quote(c) for c in cmd))
    log = out / "logs" / f"{variant}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with log.open("w") as fh:
        fh.write(f"$ {row.command}\n")
        fh.flush()
        proc = subprocess.Popen(cmd, cwd=REPO, env=_env(), stdout=fh, stderr=subprocess.STDOUT)
        try:
            code: int | None = proc.wait(timeout=max(1.0, share_s))
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            code = None
    row.seconds = time.perf_counter() - t0
    epochs, vols, peaks = epoch_throughput(run_dir / "metrics.csv", s.discarded_epochs())
    if (run_dir / "metrics.csv").exists():
        shutil.copy(run_dir / "metrics.csv", out / f"metrics_{variant}.csv")
    row.epochs_timed, row.epoch_vols_per_s = epochs, vols
    if vols:
        row.vols_per_s = statistics.median(vols)
        row.vols_per_s_range = (min(vols), max(vols))
    row.peak_gib = max(peaks) if peaks else None
    if code is None:
        row.status = f"stopped at time share ({share_s:.0f} s) after {len(epochs)} timed epoch(s)"
    elif code != 0:
        row.status = f"failed (exit {code}; log {log.name})"
    elif not vols:
        row.status = "failed (no timed epoch in metrics.csv)"
    profile_json = run_dir / "profile_summary.json"
    if s.profile and profile_json.exists():
        row.profile = json.loads(profile_json.read_text())
        shutil.copy(profile_json, out / f"profile_{variant}.json")
        shutil.copy(run_dir / "profile_summary.md", out / f"profile_{variant}.md")
    elif s.profile:
        row.status += "; no profile summary written"
    return row


def _run_reference(s: BundleBenchSettings, compile_: bool) -> BundleRow:
    from custom.bench import BenchSettings, _bench_reference, _release

    bs = BenchSettings(
        mode="bundle",
        device=s.device,
        spatial_size=s.spatial_size,
        spacing=s.spacing,
        batch_sizes=(s.batch_size,),
        amp=s.device.startswith("cuda"),  # bf16 autocast on CUDA only: on the CPU it is far slower than fp32
        compile_options=(compile_,),
        variants=(),
        warmup=s.reference_warmup,
        steps=s.reference_steps,
    )
    name = _reference_name(compile_, s.device)
    t0 = time.perf_counter()
    try:
        ref = _bench_reference(bs, s.batch_size, compile_)
        row = BundleRow(run=name, vols_per_s=ref.vols_per_s, peak_gib=ref.peak_gib)
    except Exception as err:  # noqa: BLE001 - one failing row must not abort the table
        from custom.bench import _failure

        row = BundleRow(run=name, status=_failure(err))
    row.seconds = time.perf_counter() - t0
    _release(torch.device(s.device))
    return row


def _reference_name(compile_: bool, device: str) -> str:
    dtype = "bf16" if device.startswith("cuda") else "fp32"
    return f"reference compiled + channels-last {dtype}" if compile_ else f"reference eager {dtype}"


def _plan(s: BundleBenchSettings) -> list[tuple[str, str]]:
    """(kind, name) in run order: reference eager, the first bundle, reference compiled, the other bundles."""
    bundles = [("bundle", v) for v in s.variants]
    plan: list[tuple[str, str]] = []
    if s.reference:
        plan.append(("reference", "eager"))
    plan += bundles[:1]
    if s.reference and _reference_compiles(s):
        plan.append(("reference", "compiled"))
    return plan + bundles[1:]


def _reference_compiles(s: BundleBenchSettings) -> bool:
    if s.reference_compile is not None:
        return bool(s.reference_compile)
    return s.device.startswith("cuda")


def _ratios(rows: list[BundleRow]) -> None:
    eager = next((r.vols_per_s for r in rows if r.run.startswith("reference eager") and r.vols_per_s), None)
    compiled = next((r.vols_per_s for r in rows if r.run.startswith("reference compiled") and r.vols_per_s), None)
    for r in rows:
        if r.vols_per_s is None:
            continue
        r.ratio_ref_eager = r.vols_per_s / eager if eager else None
        r.ratio_ref_compiled = r.vols_per_s / compiled if compiled else None


COLUMNS = ("run", "status", "vol/s", "min-max", "timed epochs", "x ref eager", "x ref compiled", "peak GiB", "s")


def markdown_table(rows: list[BundleRow]) -> str:
    """The ratio table (one line per bundle run and reference row)."""

    def num(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    for r in rows:
        span = "-" if r.vols_per_s_range is None else f"{r.vols_per_s_range[0]:.1f}-{r.vols_per_s_range[1]:.1f}"
        epochs = ",".join(str(e) for e in r.epochs_timed) or "-"
        cells = [
            r.run,
            r.status.replace("|", "/"),
            num(r.vols_per_s, ".1f"),
            span,
            epochs,
            num(r.ratio_ref_eager, ".2f"),
            num(r.ratio_ref_compiled, ".2f"),
            num(r.peak_gib, ".2f"),
            num(r.seconds, ".0f"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _report(s: BundleBenchSettings, env: dict[str, Any], rows: list[BundleRow], notes: list[str]) -> str:
    discarded = ", ".join(str(e) for e in sorted(s.discarded_epochs()))
    head = [
        f"## Training command throughput (bundle mode, {s.spatial_size}^3, batch {s.batch_size})",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        "",
        f"Bundle rows: median `train_epoch/volumes_per_s` over the timed epochs (of {s.epochs}) of the real "
        f"`python -m monai.bundle run training` (shipped defaults; epochs {discarded} discarded: warm-up"
        + (", profiled" if s.profile else "")
        + "); reference rows: median step vol/s of "
        f"{s.reference_steps} steps after {s.reference_warmup} warm-up steps. `x ref` = bundle epoch vol/s / "
        "reference step vol/s.",
        "",
        markdown_table(rows),
        "",
    ]
    head += [f"- {n}" for n in notes]
    for r in rows:
        if r.command:
            head.append(f"- `{r.run}` command: `{r.command}`")
    return "\n".join(head) + "\n"


def run_bundle_bench(out: str | None = None, **kwargs: Any) -> str:
    """Run the bundle-mode benchmark; write ``bench_bundle.json`` / ``bench_bundle.md`` (and per-run metrics,
    logs and profile summaries) to ``out`` (default ``$OUT``); return the markdown report."""
    from custom.bench import environment

    s = bundle_settings(**kwargs)
    t_start = time.perf_counter()
    device = torch.device(s.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = environment(s.device)
    print("bench environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    target = Path(out or os.environ.get("OUT") or "bench_bundle_out")
    target.mkdir(parents=True, exist_ok=True)
    rows: list[BundleRow] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench_bundle_") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        cohort = _cohort(s, workdir)
        n_train = len(json.loads((cohort / "datalist.json").read_text()).get("training", []))
        notes.append(
            f"cohort: {n_train} training volumes ({s.subjects} subjects x {s.timepoints} timepoints unless "
            f"cohort_dir was given), {n_train // s.batch_size} steps per epoch, ready in {time.perf_counter() - t0:.0f} s"
        )
        print(f"bench: {notes[-1]}", flush=True)
        plan = _plan(s)
        for i, (kind, name) in enumerate(plan):
            left = s.time_budget_s - (time.perf_counter() - t_start)
            later = plan[i + 1 :]
            if kind == "reference":
                label = _reference_name(name == "compiled", s.device)
                if left <= 0:
                    rows.append(BundleRow(run=label, status="skipped (time budget)"))
                    continue
                row = _run_reference(s, name == "compiled")
            else:
                reserve = REFERENCE_COMPILED_RESERVE_S if ("reference", "compiled") in later else 0.0
                bundles_left = 1 + sum(1 for k, _ in later if k == "bundle")
                share = (left - reserve) / bundles_left
                if share < 30:
                    rows.append(BundleRow(run=f"bundle {name}", status="skipped (time budget)"))
                    continue
                row = _run_bundle(s, name, cohort, workdir, target, share)
            rows.append(row)
            print(f"bench: {row.run}: {row.status}, vol/s={row.vols_per_s} ({row.seconds:.0f} s)", flush=True)
    _ratios(rows)
    notes.append(f"whole benchmark: {time.perf_counter() - t_start:.0f} s (budget {s.time_budget_s:.0f} s)")
    report = _report(s, env, rows, notes)
    payload = {"environment": env, "settings": asdict(s), "rows": [asdict(r) for r in rows], "notes": notes}
    (target / "bench_bundle.json").write_text(json.dumps(payload, indent=1, default=str))
    (target / "bench_bundle.md").write_text(report)
    if not any(r.run.startswith("bundle") and r.vols_per_s for r in rows):
        print(report, flush=True)
        raise RuntimeError(f"no bundle run finished a timed epoch; see the logs in {target / 'logs'}")
    return report
