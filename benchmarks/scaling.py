"""Multi-GPU scaling of the encoder bundles' real training: volumes/s and efficiency for 1..N GPUs.

Usage (from the repository root; ~10 min on 2 x H100 with the defaults below):

    python benchmarks/scaling.py --gpus 1,2 --bundles vae_baseline,dipvae --out DIR --epochs 4 --subjects 24 \\
        --timepoints 2 --spatial_size 128 --spacing 1.875 --batch_size 8

What it does:

1. generates a synthetic cohort once (``DIR/cohort``, :func:`custom.synth.cohort.generate_cohort`, seed 0, at the
   training spacing; reused when its ``datalist.json`` exists);
2. for every bundle B and GPU count N runs the bundle's own layered training config under torchrun, as a
   subprocess (``python -m torch.distributed.run``, i.e. ``torchrun`` of this interpreter)::

       torchrun --standalone --nproc_per_node=N -m monai.bundle run \\
           --config_file "['bundles/B/configs/train.json','bundles/B/configs/multi_gpu_train.json']" \\
           --dataset_dir DIR/cohort --output_dir DIR/B_nN --ckpt_dir DIR/B_nN/models --epochs E \\
           --val_interval 1000 --figure_interval 1000 --spatial_size [S,S,S] --spacing SP --batch_size BS --amp True

   (dipvae also gets ``--use_sbd False``; on the CPU, ``--device cpu``: ``--amp False --compile False`` and
   ``CUDA_VISIBLE_DEVICES=""``, so ``multi_gpu_train.json`` picks gloo). The log goes to ``DIR/B_nN/log.txt``;
   a failing run becomes a table row with the tail of its log, not a crash;
3. reads ``DIR/B_nN/metrics.csv`` (rank 0's :class:`~custom.engines.handlers.TidyCSVWriter`; the ``train_epoch/*``
   timing columns come from :class:`~custom.engines.handlers.EpochAverager`), drops the first epoch (torch.compile
   and cuDNN autotuning warm-up) and reports per (B, N):

   - ``vol/s``: median over the remaining epochs of ``train_epoch/volumes_per_s`` (global volumes per second);
   - ``efficiency`` = vol/s(N) / (N x vol/s(1)) of the same bundle (1.0 = linear scaling);
   - ``epoch s``: median ``train_epoch/seconds``;
   - ``peak GiB/GPU``: largest ``train_epoch/peak_gpu_gib`` over the kept epochs (each epoch's value is the mean
     of the ranks' peaks, because ``EpochMetricsAllReduce`` averages every ``train_epoch/*`` metric; the ranks run
     identical work, so it is also rank 0's peak up to allocator noise);
   - ``vols/epoch``: volumes trained per epoch = steps x batch x N. ``DistributedSampler(even_divisible=True)``
     pads the training list to a multiple of N (repeating cases) and ``drop_last`` drops each rank's incomplete
     batch, so this may differ from the datalist's training count (also written).

It writes ``DIR/scaling.md`` and ``DIR/scaling.json`` (rows, settings, environment: torch, CUDA, cuDNN, GPU name
and count from :func:`custom.bench.environment`) and prints the table.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make ``custom`` importable
    sys.path.insert(0, str(REPO))

__all__ = ["ScalingRow", "run_scaling", "markdown_table", "main"]

COLUMNS = ("bundle", "GPUs", "status", "vol/s", "efficiency", "epoch s", "peak GiB/GPU", "vols/epoch", "epochs used")

#: train.json ids this script overrides (checked before each run: an unknown id would be silently added by
#: ``monai.bundle run`` instead of changing anything)
REQUIRED_IDS = (
    "dataset_dir",
    "output_dir",
    "ckpt_dir",
    "epochs",
    "val_interval",
    "figure_interval",
    "spatial_size",
    "spacing",
    "batch_size",
    "amp",
    "compile",
    "cache",
)
#: per-bundle fixed overrides (the dipvae row measures the standard decoder, like vae_baseline)
BUNDLE_OVERRIDES: dict[str, dict[str, Any]] = {"dipvae": {"use_sbd": False}}


@dataclass
class ScalingRow:
    """One (bundle, GPU count) result; numbers are None when the run failed or was skipped."""

    bundle: str
    gpus: int
    status: str = "ok"
    vols_per_s: float | None = None
    efficiency: float | None = None
    epoch_s: float | None = None
    peak_gib: float | None = None
    vols_per_epoch: int | None = None
    epochs_used: int = 0
    wall_s: float | None = None
    per_epoch: list[dict[str, float]] = field(default_factory=list)

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        return [
            self.bundle,
            str(self.gpus),
            self.status,
            num(self.vols_per_s, ".3g"),
            num(self.efficiency, ".2f"),
            num(self.epoch_s, ".2f"),
            num(self.peak_gib, ".2f"),
            "-" if self.vols_per_epoch is None else str(self.vols_per_epoch),
            str(self.epochs_used),
        ]


def _as_list(value: str | Sequence[Any] | int) -> list[str]:
    """``"1,2"`` / ``(1, 2)`` / ``1`` -> ``["1", "2"]`` / ``["1"]`` (the CLI and Python callers both work)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value]
    return [str(value)]


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'auto', 'cuda' or 'cpu', got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda but torch sees no CUDA device")
    return device


def _cohort_size(cohort: Path) -> str:
    """ "S subjects x T scans" read from the cohort's datalist (a reused cohort may differ from the arguments)."""
    data = json.loads((cohort / "datalist.json").read_text())
    items = [it for key in ("training", "validation", "test") for it in data.get(key, [])]
    subjects = {it.get("subject_id") for it in items}
    return f"cohort of {len(subjects)} subjects, {len(items)} scans"


def prepare_cohort(out: Path, subjects: int, timepoints: int, spacing: float) -> Path:
    """``out/cohort`` with a synthetic cohort at ``spacing`` (generated once; reused when its datalist exists)."""
    cohort = out / "cohort"
    if not (cohort / "datalist.json").exists():
        from custom.synth.cohort import generate_cohort

        generate_cohort(
            str(cohort), subjects=subjects, timepoints=timepoints, seed=0, spacing=spacing, workers=os.cpu_count() or 1
        )
    return cohort


def bundle_overrides(
    bundle: str,
    device: str,
    cohort: Path,
    run_dir: Path,
    epochs: int,
    spatial_size: int,
    spacing: float,
    batch_size: int,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``monai.bundle run`` overrides of one scaling run (id -> value), in command-line order."""
    overrides: dict[str, Any] = {
        "dataset_dir": str(cohort),
        "output_dir": str(run_dir),
        "ckpt_dir": str(run_dir / "models"),
        "epochs": int(epochs),
        "val_interval": 1000,
        "figure_interval": 1000,
        "spatial_size": [int(spatial_size)] * 3,
        "spacing": float(spacing),
        "batch_size": int(batch_size),
        "amp": device == "cuda",
    }
    if device == "cpu":
        overrides["compile"] = False
    overrides.update(BUNDLE_OVERRIDES.get(bundle, {}))
    overrides.update(extra or {})
    return overrides


def check_override_ids(bundle: str, overrides: dict[str, Any]) -> None:
    """Raise ``KeyError`` naming every override id that is not a top-level id of ``bundles/<bundle>/configs/train.json``."""
    config = json.loads((REPO / "bundles" / bundle / "configs" / "train.json").read_text())
    missing = sorted(k for k in set(overrides) | set(REQUIRED_IDS) if k not in config)
    if missing:
        raise KeyError(f"bundles/{bundle}/configs/train.json has no id(s) {missing}")


def _cli_value(value: Any) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def torchrun_command(bundle: str, gpus: int, overrides: dict[str, Any]) -> list[str]:
    """``torchrun --standalone --nproc_per_node=N -m monai.bundle run --config_file [...] --<id> <value> ...``."""
    cfg = REPO / "bundles" / bundle / "configs"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        f"['{cfg / 'train.json'}','{cfg / 'multi_gpu_train.json'}']",
    ]
    for key, value in overrides.items():
        cmd += [f"--{key}", _cli_value(value)]
    return cmd


def _run_env(device: str, gpus: int) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    if device == "cpu":
        env["CUDA_VISIBLE_DEVICES"] = ""  # multi_gpu_train.json then picks gloo and the CPU on every rank
    # CPU mode: one thread per rank (torchrun's own default for N > 1), so N = 1 and N = 2 compare processes, not
    # thread counts (a 2-thread rank on a loaded 2-core host ran ~30x slower per step than a 1-thread one);
    # CUDA: each rank gets its share of the host cores for its host-side work
    threads = 1 if device == "cpu" else max(1, (os.cpu_count() or 1) // gpus)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    return env


def read_metrics(path: Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv`` (one per epoch), in epoch order."""
    with path.open(newline="") as fh:
        return sorted(csv.DictReader(fh), key=lambda r: int(float(r["epoch"])))


def _number(row: dict[str, str], key: str) -> float | None:
    text = row.get(key, "")
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if value == value else None  # nan -> None


def summarise(row: ScalingRow, metrics: list[dict[str, str]], batch_size: int, warmup_epochs: int = 1) -> None:
    """Fill ``row`` from its run's epochs: drop the first ``warmup_epochs`` (all are kept when nothing would remain),
    take medians of volumes/s and seconds, the largest peak GiB, and volumes per epoch from the iteration counter."""
    previous = 0
    for r in metrics:
        iteration = int(float(r["iteration"]))
        row.per_epoch.append(
            {
                "epoch": int(float(r["epoch"])),
                "steps": iteration - previous,
                "seconds": _number(r, "train_epoch/seconds"),
                "volumes_per_s": _number(r, "train_epoch/volumes_per_s"),
                "peak_gpu_gib": _number(r, "train_epoch/peak_gpu_gib"),
            }
        )
        previous = iteration
    kept = row.per_epoch[warmup_epochs:] or row.per_epoch
    rates = [e["volumes_per_s"] for e in kept if e["volumes_per_s"] is not None]
    if not rates:
        row.status = "failed: metrics.csv has no train_epoch/volumes_per_s"
        return
    row.epochs_used = len(rates)
    row.vols_per_s = statistics.median(rates)
    seconds = [e["seconds"] for e in kept if e["seconds"] is not None]
    row.epoch_s = statistics.median(seconds) if seconds else None
    peaks = [e["peak_gpu_gib"] for e in kept if e["peak_gpu_gib"] is not None]
    row.peak_gib = max(peaks) if peaks else None
    row.vols_per_epoch = int(kept[-1]["steps"]) * batch_size * row.gpus


def _failure(text: str, limit: int = 300) -> str:
    tail = " ".join(text.strip().splitlines()[-6:]).replace("|", "/")
    return tail[-limit:]


def run_one(
    bundle: str,
    gpus: int,
    device: str,
    cohort: Path,
    out: Path,
    epochs: int,
    spatial_size: int,
    spacing: float,
    batch_size: int,
    extra: dict[str, Any] | None,
    warmup_epochs: int,
    timeout_s: float | None,
) -> ScalingRow:
    """One torchrun training of ``bundle`` on ``gpus`` processes, summarised as a row (failures included)."""
    row = ScalingRow(bundle=bundle, gpus=gpus)
    run_dir = out / f"{bundle}_n{gpus}"
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = run_dir / "metrics.csv"
    if metrics.exists():
        metrics.unlink()  # never summarise a previous run's epochs
    overrides = bundle_overrides(bundle, device, cohort, run_dir, epochs, spatial_size, spacing, batch_size, extra)
    try:
        check_override_ids(bundle, overrides)
    except (KeyError, FileNotFoundError) as err:
        row.status = f"failed: {err}".replace("|", "/")
        return row
    cmd = torchrun_command(bundle, gpus, overrides)
    t0 = time.perf_counter()
    log = run_dir / "log.txt"
    with log.open("w") as fh:
        fh.write(" ".join(cmd) + "\n\n")
        fh.flush()
        try:
            proc = subprocess.run(
                cmd, cwd=REPO, env=_run_env(device, gpus), stdout=fh, stderr=subprocess.STDOUT, timeout=timeout_s
            )
            rc: int | str = proc.returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {timeout_s} s"
    row.wall_s = time.perf_counter() - t0
    if rc != 0 or not metrics.exists():
        row.status = f"failed (rc {rc}): {_failure(log.read_text(errors='replace'))}"
        return row
    summarise(row, read_metrics(metrics), batch_size, warmup_epochs)
    return row


def efficiencies(rows: Sequence[ScalingRow]) -> None:
    """``efficiency = vol/s(N) / (N x vol/s(1))`` per bundle, where both rows have numbers."""
    single = {r.bundle: r.vols_per_s for r in rows if r.gpus == 1 and r.vols_per_s}
    for r in rows:
        if r.vols_per_s and r.bundle in single:
            r.efficiency = r.vols_per_s / (r.gpus * single[r.bundle])


def markdown_table(rows: Sequence[ScalingRow]) -> str:
    """The rows as a GitHub markdown table with :data:`COLUMNS`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def _training_count(cohort: Path) -> int:
    return len(json.loads((cohort / "datalist.json").read_text()).get("training", []))


def run_scaling(
    gpus: str | Sequence[int] = "1,2",
    bundles: str | Sequence[str] = "vae_baseline,dipvae",
    out: str = "runs/scaling",
    epochs: int = 4,
    subjects: int = 24,
    timepoints: int = 2,
    spatial_size: int = 128,
    spacing: float = 1.875,
    batch_size: int = 8,
    device: str = "auto",
    overrides: dict[str, Any] | None = None,
    warmup_epochs: int = 1,
    timeout_s: float | None = None,
) -> dict[str, Any]:
    """Run the scaling benchmark and return its JSON payload (also written to ``out/scaling.json`` and ``.md``).

    Args:
        gpus: GPU (process) counts, e.g. ``"1,2"``; on CUDA, counts above ``torch.cuda.device_count()`` are
            listed as skipped.
        bundles: encoder bundles, e.g. ``"vae_baseline,dipvae"``.
        out: output folder (cohort, one run folder per (bundle, N), the report).
        epochs: training epochs per run; the first ``warmup_epochs`` are not summarised.
        subjects, timepoints: synthetic cohort size (subject-level 70/15/15 split).
        spatial_size, spacing, batch_size: training overrides (batch per process).
        device: ``"auto"`` (CUDA when available), ``"cuda"`` or ``"cpu"`` (test mode: gloo, fp32, no compile).
        overrides: extra bundle config overrides for every run (e.g. ``{"z_dim": 16}``); ids must exist.
        warmup_epochs: leading epochs dropped from the medians (compile and cuDNN autotuning warm-up).
        timeout_s: per-run time limit (None: no limit).
    """
    import torch

    from custom.bench import environment

    dev = _resolve_device(device)
    counts = [int(n) for n in _as_list(gpus)]
    names = _as_list(bundles)
    folder = Path(out).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    env = environment(dev)
    env["gpu_count"] = torch.cuda.device_count() if dev == "cuda" else 0
    t0 = time.perf_counter()
    cohort = prepare_cohort(folder, subjects, timepoints, spacing)
    cohort_s = time.perf_counter() - t0
    rows: list[ScalingRow] = []
    for bundle in names:
        for n in counts:
            if dev == "cuda" and n > env["gpu_count"]:
                rows.append(ScalingRow(bundle, n, status=f"skipped (only {env['gpu_count']} GPUs)"))
                continue
            row = run_one(
                bundle,
                n,
                dev,
                cohort,
                folder,
                epochs,
                spatial_size,
                spacing,
                batch_size,
                overrides,
                warmup_epochs,
                timeout_s,
            )
            rows.append(row)
            print(
                f"scaling: {bundle} N={n}: {row.status} vol/s={row.vols_per_s} " f"({row.wall_s or 0:.0f} s)",
                flush=True,
            )
    efficiencies(rows)
    settings = {
        "gpus": counts,
        "bundles": names,
        "epochs": epochs,
        "subjects": subjects,
        "timepoints": timepoints,
        "spatial_size": spatial_size,
        "spacing": spacing,
        "batch_size_per_gpu": batch_size,
        "device": dev,
        "amp": dev == "cuda",
        "overrides": overrides or {},
        "warmup_epochs_dropped": warmup_epochs,
    }
    notes = [
        f"training volumes in the datalist: {_training_count(cohort)} ({_cohort_size(cohort)}, "
        f"generated or reused in {cohort_s:.1f} s); `vols/epoch` = steps x batch x N: "
        "DistributedSampler(even_divisible=True) pads the list to a multiple of N and drop_last drops each "
        "rank's incomplete batch",
        f"vol/s = median over epochs {warmup_epochs + 1}..{epochs} of train_epoch/volumes_per_s (local volumes x N "
        "/ epoch seconds, mean over ranks); efficiency = vol/s(N) / (N x vol/s(1))",
        "peak GiB/GPU = largest train_epoch/peak_gpu_gib (torch.cuda.max_memory_allocated, mean over ranks) "
        "of the kept epochs",
    ]
    payload = {
        "environment": env,
        "settings": settings,
        "columns": list(COLUMNS),
        "rows": [asdict(r) for r in rows],
        "notes": notes,
        "training_volumes_in_datalist": _training_count(cohort),
    }
    report = "\n".join(
        [
            f"## Multi-GPU scaling ({dev}, {spatial_size}^3, batch {batch_size} per GPU, "
            f"{'bf16 autocast' if dev == 'cuda' else 'fp32'}, {epochs} epochs)",
            "",
            "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
            "",
            markdown_table(rows),
            "",
            *[f"- {n}" for n in notes],
        ]
    )
    (folder / "scaling.json").write_text(json.dumps(payload, indent=1, default=str))
    (folder / "scaling.md").write_text(report + "\n")
    print(report, flush=True)
    return payload


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gpus", default="1,2", help="comma-separated process (GPU) counts")
    ap.add_argument("--bundles", default="vae_baseline,dipvae", help="comma-separated encoder bundles")
    ap.add_argument("--out", default=os.environ.get("OUT", "runs/scaling"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--timepoints", type=int, default=2)
    ap.add_argument("--spatial_size", type=int, default=128)
    ap.add_argument("--spacing", type=float, default=1.875)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--device", default="auto", choices=("auto", "cuda", "cpu"))
    ap.add_argument("--overrides", default=None, help="JSON dict of extra bundle overrides, e.g. '{\"z_dim\": 16}'")
    ap.add_argument("--warmup_epochs", type=int, default=1)
    ap.add_argument("--timeout_s", type=float, default=None, help="per-run limit in seconds")
    a = ap.parse_args(argv)
    run_scaling(
        gpus=a.gpus,
        bundles=a.bundles,
        out=a.out,
        epochs=a.epochs,
        subjects=a.subjects,
        timepoints=a.timepoints,
        spatial_size=a.spatial_size,
        spacing=a.spacing,
        batch_size=a.batch_size,
        device=a.device,
        overrides=json.loads(a.overrides) if a.overrides else None,
        warmup_epochs=a.warmup_epochs,
        timeout_s=a.timeout_s,
    )


if __name__ == "__main__":
    main()
