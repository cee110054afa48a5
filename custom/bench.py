"""Training-throughput benchmark of the real bundle training step: ``python -m custom bench --mode gpu``.

What is timed is the bundles' own training path, not a re-implementation: for each configuration the bundle's
``train.json`` is parsed with :class:`monai.bundle.ConfigParser` (overriding ``spatial_size``, ``spacing``,
``batch_size``, ``amp``, ``compile``, ``channels_last``, ``use_sbd``, ``dataset_dir``/``datalist``, ``cache``,
``output_dir``), and its ``network`` (through ``prepare_network``), ``loss``, ``optimizer``, ``train#step``
(:class:`custom.engines.train_step.VAETrainStep`) and ``train#dataloader`` are instantiated. The step runs on a
minimal engine object (``network``, ``optimizer``, ``loss_function``, ``state``) fed with batches from the bundle's
training loader (``train#dataloader``, a ``ThreadDataLoader``) over a cached (``cache="auto"``: GPU-resident on CUDA, as
in training) synthetic cohort, cycling over the batches.

Per configuration the table reports:

* ``step ms`` / ``vol/s``: median step time over the timed steps after warm-up (``torch.cuda.Event`` pairs around
  the step on CUDA, ``time.perf_counter`` on the CPU); ``vol/s = batch / median``. The step includes the batch's
  host-to-device copy, not the DataLoader's collate.
* ``e2e vol/s``: wall-clock over all timed iterations *including* fetching the next batch from the DataLoader,
  i.e. what a training epoch sees (the loader's thread may prepare the next batch while the step runs).
* ``TFLOP/s``: FLOPs of one eager step counted with :class:`torch.utils.flop_counter.FlopCounterMode` divided by
  the median step time (so compiled and eager rows share the FLOP count of the same model and batch).
* ``peak GiB``: ``torch.cuda.max_memory_allocated`` over the timed steps (reset after warm-up), as the reference.
* ``x ref``: ``vol/s`` over the reference VAE's eager bf16 ``vol/s`` at the same batch, run in the same process on
  the same device (``benchmarks/reference/refvae.py`` with a plain training step, :func:`_bench_reference`).

Plus the data pipeline alone (volumes/s iterating the bundle's DataLoader over the cached dataset with its collate
and pinning). Every configuration runs in a ``try``: a failure (compile error, out-of-memory) becomes a row with its
message, and configurations that would start after ``time_budget_s`` are listed as skipped.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import torch

__all__ = ["BenchSettings", "BenchRow", "run_bench", "default_settings", "markdown_table", "environment"]

REPO = Path(__file__).resolve().parents[1]
REFERENCE_FILE = REPO / "benchmarks" / "reference" / "refvae.py"

#: bundle variant name -> (bundle folder, config overrides that select the variant)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "vae_baseline": ("vae_baseline", {}),
    "dipvae": ("dipvae", {"use_sbd": False}),
    "dipvae_sbd": ("dipvae", {"use_sbd": True}),
}

COLUMNS = (
    "config",
    "batch",
    "compile",
    "status",
    "step ms",
    "vol/s",
    "e2e vol/s",
    "TFLOP/s",
    "GFLOP/step",
    "peak GiB",
    "x ref",
)


@dataclass(frozen=True)
class BenchSettings:
    """Everything a benchmark run depends on (stored in the JSON next to the results)."""

    mode: str
    device: str
    spatial_size: int
    spacing: float
    batch_sizes: tuple[int, ...]
    amp: bool
    compile_options: tuple[bool, ...]
    variants: tuple[str, ...]
    channels_last: bool = False
    warmup: int = 3
    steps: int = 12
    data_batches: int = 10
    time_budget_s: float = 330.0
    reference: bool = True
    subjects: int = 6
    timepoints: int = 3
    cohort_dir: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchRow:
    """One line of the table; numbers are ``None`` when not applicable or when the configuration failed."""

    config: str
    batch: int
    compile: bool
    status: str = "ok"
    step_ms: float | None = None
    vols_per_s: float | None = None
    e2e_vols_per_s: float | None = None
    tflops: float | None = None
    gflop_per_step: float | None = None
    peak_gib: float | None = None
    ratio_ref: float | None = None
    seconds: float | None = None

    def cells(self) -> list[str]:
        def num(v: float | None, fmt: str) -> str:
            return "-" if v is None else format(v, fmt)

        return [
            self.config,
            str(self.batch),
            "yes" if self.compile else "no",
            self.status,
            num(self.step_ms, ".1f"),
            num(self.vols_per_s, ".3g"),
            num(self.e2e_vols_per_s, ".3g"),
            num(self.tflops, ".3g"),
            num(self.gflop_per_step, ".1f"),
            num(self.peak_gib, ".2f"),
            num(self.ratio_ref, ".2f"),
        ]


def default_settings(mode: str = "cpu", **kwargs: Any) -> BenchSettings:
    """Settings of ``mode`` (``"gpu"``: 128^3, batches 8 and 2, bf16, compile off/on; ``"cpu"``: 32^3, batch 2,
    fp32, eager, few steps) with ``kwargs`` replacing fields (lists are turned into tuples)."""
    if mode == "gpu":
        if not torch.cuda.is_available():
            raise RuntimeError("bench --mode gpu needs a CUDA device; use --mode cpu on this machine")
        base = BenchSettings(
            mode="gpu",
            device="cuda",
            spatial_size=128,
            spacing=1.875,
            batch_sizes=(8, 2),
            amp=True,
            compile_options=(False, True),
            variants=tuple(VARIANTS),
            warmup=3,
            steps=12,
            data_batches=10,
            time_budget_s=330.0,
            subjects=6,
            timepoints=3,
        )
    elif mode == "cpu":
        base = BenchSettings(
            mode="cpu",
            device="cpu",
            spatial_size=32,
            spacing=7.5,
            batch_sizes=(2,),
            amp=False,
            compile_options=(False,),
            variants=("vae_baseline",),
            warmup=1,
            steps=3,
            data_batches=5,
            time_budget_s=50.0,
            subjects=4,
            timepoints=2,
        )
    else:
        raise ValueError(f"mode must be 'cpu' or 'gpu', got {mode!r}")
    aliases = {"compile": "compile_options", "batch_size": "batch_sizes", "batch": "batch_sizes"}
    fields = {aliases.get(k, k): v for k, v in kwargs.items()}
    for key in ("batch_sizes", "compile_options", "variants"):
        if key in fields:
            value = fields[key]
            value = value.split(",") if isinstance(value, str) else value
            value = value if isinstance(value, (list, tuple)) else [value]
            fields[key] = tuple(_coerce(v) for v in value)
    unknown = set(fields) - set(BenchSettings.__dataclass_fields__)
    if unknown:
        raise ValueError(
            f"unknown bench option(s) {sorted(unknown)}; known: {sorted(BenchSettings.__dataclass_fields__)}"
        )
    bad = set(fields.get("variants", ())) - set(VARIANTS)
    if bad:
        raise ValueError(f"unknown variant(s) {sorted(bad)}; known: {sorted(VARIANTS)}")
    return replace(base, **fields)


def _coerce(value: Any) -> Any:
    """Command-line strings to int/bool where they look like one (fire passes ``--batch_sizes 8,2`` as a tuple)."""
    if isinstance(value, str):
        v = value.strip()
        if v.lower() in ("true", "false"):
            return v.lower() == "true"
        return int(v) if v.isdigit() else v
    return value


def environment(device: str) -> dict[str, Any]:
    """Versions and hardware that a throughput number depends on (design.md §7: log torch and cuDNN)."""
    from custom.utils import cpu_model

    env: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpu": cpu_model(),
        "device": device,
    }
    try:
        import monai

        env["monai"] = monai.__version__
    except ImportError:  # pragma: no cover - monai is a requirement
        env["monai"] = None
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
    return env


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _cycle(loader: Any) -> Iterator[Any]:
    while True:
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise RuntimeError("the DataLoader yields no batch (fewer training cases than the batch size?)")


def _time_steps(
    step: Callable[[], None], device: torch.device, warmup: int, steps: int, before: Callable[[], None] | None = None
) -> tuple[list[float], float, float | None]:
    """Run ``before(); step()`` ``warmup`` times, then ``steps`` timed times.

    Returns (per-step seconds of ``step`` alone, wall seconds of all timed ``before + step`` iterations, peak GiB).
    """
    for _ in range(warmup):
        if before is not None:
            before()
        step()
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times: list[float] = []
    events = []
    start_wall = time.perf_counter()
    for _ in range(steps):
        if before is not None:
            before()
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            events.append((start, end))
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    _sync(device)
    wall = time.perf_counter() - start_wall
    if events:
        times = [s.elapsed_time(e) / 1e3 for s, e in events]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return times, wall, peak


def _count_flops(step: Callable[[], None]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return float(counter.get_total_flops())


def _release(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    try:
        torch._dynamo.reset()
    except Exception:  # pragma: no cover - dynamo missing or already reset
        pass


# ----------------------------------------------------------------------------------------------- bundle side


def _bundle_parser(
    variant: str, s: BenchSettings, batch: int, compile_: bool, datalist: str, workdir: Path, dataset: Any = None
) -> Any:
    """ConfigParser of ``variant``'s train.json with the benchmark's overrides (and a shared cached dataset)."""
    from monai.bundle import ConfigParser

    folder, variant_overrides = VARIANTS[variant]
    config = REPO / "bundles" / folder / "configs" / "train.json"
    if not config.exists():
        raise FileNotFoundError(f"{config} does not exist yet")
    parser = ConfigParser()
    parser.read_config(str(config))
    overrides: dict[str, Any] = {
        "bundle_root": str(REPO / "bundles" / folder),
        "spatial_size": [s.spatial_size] * 3,
        "spacing": s.spacing,
        "batch_size": batch,
        "amp": s.amp,
        "compile": compile_,
        "channels_last": s.channels_last,
        "dataset_dir": str(Path(datalist).parent),
        "datalist": datalist,
        "cache": "auto",
        "output_dir": str(workdir / f"out_{variant}"),
        "num_workers": 4,
        "device": f"$torch.device('{s.device}')",
        **variant_overrides,
        **s.overrides,
    }
    for key, value in overrides.items():
        parser[key] = value
    if dataset is not None:
        parser["train#dataset"] = dataset
    return parser


def _schedule_kwargs(parser: Any) -> dict[str, float]:
    """Loss keyword arguments at the last epoch (beta and DIP lambda at full strength), from the bundle's own
    ScheduleHandler; ``{"beta": 1.0}`` when the bundle has none."""
    handlers = parser["train"]["handlers"]
    for i, h in enumerate(handlers):
        if isinstance(h, dict) and str(h.get("_target_", "")).endswith("ScheduleHandler"):
            handler = parser.get_parsed_content(f"train#handlers#{i}")
            return handler.values(int(parser["epochs"]))
    return {"beta": 1.0}


def _bench_bundle(
    variant: str,
    s: BenchSettings,
    batch: int,
    compile_: bool,
    datalist: str,
    workdir: Path,
    dataset: Any,
    flops_cache: dict[tuple[str, int], float],
) -> BenchRow:
    device = torch.device(s.device)
    row = BenchRow(config=variant, batch=batch, compile=compile_)
    parser = _bundle_parser(variant, s, batch, compile_, datalist, workdir, dataset)
    network = parser.get_parsed_content("network")
    raw = parser.get_parsed_content("network_raw")
    engine = SimpleNamespace(
        network=network,
        optimizer=parser.get_parsed_content("optimizer"),
        loss_function=parser.get_parsed_content("loss"),
        state=SimpleNamespace(device=device, epoch=1, iteration=0, loss_kwargs=_schedule_kwargs(parser)),
    )
    train_step = parser.get_parsed_content("train#step")
    batches = _cycle(parser.get_parsed_content("train#dataloader"))
    current: dict[str, Any] = {}

    def fetch() -> None:
        current["batch"] = next(batches)

    def step() -> None:
        engine.state.iteration += 1
        train_step(engine, current["batch"])

    times, wall, peak = _time_steps(step, device, s.warmup, s.steps, before=fetch)
    key = (f"{variant}:{s.spatial_size}", batch)
    if key not in flops_cache:  # one eager step of the raw network: compiled and eager rows share the count
        engine.network = raw
        flops_cache[key] = _count_flops(step)
    _fill(row, batch, times, wall, peak, flops_cache[key])
    return row


def _fill(row: BenchRow, batch: int, times: list[float], wall: float, peak: float | None, flops: float) -> None:
    med = statistics.median(times)
    row.step_ms = med * 1e3
    row.vols_per_s = batch / med
    row.e2e_vols_per_s = batch * len(times) / wall
    row.gflop_per_step = flops / 1e9
    row.tflops = flops / med / 1e12
    row.peak_gib = peak


def _bench_data(s: BenchSettings, batch: int, datalist: str, workdir: Path, dataset: Any) -> BenchRow:
    """Volumes/s of the vae_baseline DataLoader alone (collate + pin memory), over the cached dataset."""
    parser = _bundle_parser("vae_baseline", s, batch, False, datalist, workdir, dataset)
    batches = _cycle(parser.get_parsed_content("train#dataloader"))
    next(batches)
    t0 = time.perf_counter()
    for _ in range(s.data_batches):
        next(batches)
    dt = time.perf_counter() - t0
    return BenchRow(
        config="data pipeline (DataLoader)",
        batch=batch,
        compile=False,
        step_ms=dt / s.data_batches * 1e3,
        vols_per_s=batch * s.data_batches / dt,
        e2e_vols_per_s=batch * s.data_batches / dt,
    )


# -------------------------------------------------------------------------------------------- reference side


def _load_reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_refvae", REFERENCE_FILE)
    if spec is None or spec.loader is None:
        raise FileNotFoundError(REFERENCE_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _bench_reference(s: BenchSettings, batch: int, compile_: bool) -> BenchRow:
    """The reference VAE with a plain step: MSE mean + KL, AdamW(1e-4); compiled rows also use channels_last_3d,
    the reference's fastest setting (compile + channels_last + bf16)."""
    device = torch.device(s.device)
    ref = _load_reference()
    torch.manual_seed(0)
    model = ref.VAE(size=s.spatial_size).to(device)
    x = torch.randn(batch, 4, s.spatial_size, s.spatial_size, s.spatial_size, device=device)
    if compile_:
        model = model.to(memory_format=torch.channels_last_3d)
        x = x.contiguous(memory_format=torch.channels_last_3d)
    optimizer = torch.optim.AdamW(model.parameters(), 1e-4)
    run = torch.compile(model) if compile_ else model
    current = {"net": run}

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=s.amp):
            xh, mu, lv = current["net"](x)
            loss = ((xh.float() - x) ** 2).mean() + (0.5 * (lv.exp() + mu**2 - 1 - lv)).float().sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    times, wall, peak = _time_steps(step, device, s.warmup, s.steps)
    current["net"] = model
    flops = _count_flops(step)
    name = "reference (compile+CL)" if compile_ else "reference (eager)"
    row = BenchRow(config=name, batch=batch, compile=compile_)
    _fill(row, batch, times, wall, peak, flops)
    return row


# --------------------------------------------------------------------------------------------------- driver


def _plan(s: BenchSettings) -> list[tuple[str, int, bool]]:
    """Configurations in priority order (the default vae_baseline step at batch 8 first, in case the time budget runs out)."""
    plan: list[tuple[str, int, bool]] = []
    for batch in s.batch_sizes:
        if s.reference:
            plan.append(("reference", batch, False))
        for compile_ in s.compile_options:
            for variant in s.variants:
                plan.append((variant, batch, compile_))
        if s.reference and True in s.compile_options:
            plan.append(("reference", batch, True))
    return plan


def _prepare_cohort(s: BenchSettings, workdir: Path) -> str:
    """Datalist of the cohort to train on: ``cohort_dir``'s, or a small synthetic cohort generated at ``spacing``."""
    if s.cohort_dir:
        datalist = Path(s.cohort_dir) / "datalist.json"
        if not datalist.exists():
            raise FileNotFoundError(f"{datalist} not found (cohort_dir must hold a generated cohort)")
        return str(datalist)
    from custom.synth.cohort import generate_cohort

    root = workdir / "cohort"
    generate_cohort(
        str(root),
        subjects=s.subjects,
        timepoints=s.timepoints,
        seed=0,
        spacing=s.spacing,
        workers=max(1, min(8, os.cpu_count() or 1)),
    )
    return str(root / "datalist.json")


def markdown_table(rows: Sequence[BenchRow]) -> str:
    """The result rows as a GitHub markdown table with :data:`COLUMNS`."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join("---" for _ in COLUMNS) + "|"]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in rows]
    return "\n".join(lines)


def _notes(s: BenchSettings) -> list[str]:
    return [
        "latent_ode row: `vol/s` counts conditioning windows (subject trajectories) per second, not volumes; "
        "one step = forward solve + backward + AdamW over all windows of a toy latent cohort of "
        f"{_ode_subjects(s.device)} subjects x 4 scans at z_dim = the encoders' "
        "(bundle train.json solver settings)"
    ]


#: subjects of the toy latent cohort the latent_ode row trains on (GPU mode; CPU mode uses 32)
ODE_SUBJECTS = 256


def _ode_subjects(device: str) -> int:
    """Toy-cohort size of the latent_ode row: ``ODE_SUBJECTS`` on CUDA, 32 on the CPU (the CPU mode runs in seconds)."""
    return ODE_SUBJECTS if str(device).startswith("cuda") else 32


def _bench_latent_ode(s: BenchSettings) -> BenchRow:
    """One full-batch training step of the latent_ode bundle's model, with the solver settings of its train.json
    (``solver``, ``step_size``, ``rtol``/``atol``, ``hidden``, ``k_eval``, ``learning_rate``), on
    :func:`custom.ode.toy.make_toy_trajectories` latents of the encoders' width (128 on the GPU, 32 on the CPU)."""
    from monai.bundle import ConfigParser

    from custom.ode.data import build_trajectories, fit_latent_space, volume_index
    from custom.ode.model import LatentODEForecaster
    from custom.ode.toy import make_toy_trajectories
    from custom.ode.train import _take, conditioning_windows, forecast_loss, store_latent_space

    cfg = ConfigParser()
    cfg.read_config(str(REPO / "bundles" / "latent_ode" / "configs" / "train.json"))
    device = torch.device(s.device)
    z_dim = 128 if s.spatial_size >= 128 else 32
    traj = make_toy_trajectories(n_subjects=_ode_subjects(s.device), n_times=4, z_dim=z_dim, split_fractions=(1.0, 0.0))
    space = fit_latent_space(traj)
    tr = build_trajectories(traj, "train", space)
    model = LatentODEForecaster(
        z_dim=z_dim,
        vol_index=volume_index(traj),
        hidden=int(cfg["hidden"]),
        method=str(cfg["solver"]),
        rtol=float(cfg["rtol"]),
        atol=float(cfg["atol"]),
        step_size=float(cfg["step_size"]),
        adjoint=bool(cfg["adjoint"]),
        encoder_features=str(cfg.get("encoder_features", "all")),  # the hybrid bundle has no amortised encoder
    )
    store_latent_space(model, space)
    model.to(device)
    batch, _ = conditioning_windows(tr, int(cfg["k_eval"]), True)
    batch = _take(batch, torch.arange(len(batch.index)), device)
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["learning_rate"]))

    def step() -> None:
        loss = forecast_loss(model, batch, 1.0)["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times, wall, peak = _time_steps(step, device, s.warmup, s.steps)
    row = BenchRow(config=f"latent_ode ({cfg['solver']}, h={cfg['step_size']})", batch=len(batch.index), compile=False)
    _fill(row, len(batch.index), times, wall, peak, _count_flops(step))
    return row


def run_bench(mode: str = "cpu", out: str | None = None, **kwargs: Any) -> str:
    """Run the benchmark and return its markdown report (environment, settings, table, notes).

    The command line (``python -m custom bench``) prints the returned report; progress goes to stdout as it runs.

    Args:
        mode: ``"gpu"`` (128^3, batches 8 and 2, bf16, compile off and on, every bundle variant, the reference
            eager and compiled; ~6 min on an H100) or ``"cpu"`` (32^3, batch 2, fp32 eager; < 60 s on 2 cores): the
            training step alone and the data pipeline alone, a breakdown; ``"bundle"``: the epoch throughput of the
            real ``python -m monai.bundle run training`` command against the reference
            (:mod:`custom.bench_bundle`, whose options replace the ones below).
        out: folder for ``bench_<mode>.json`` and ``bench_<mode>.md``; defaults to ``$OUT`` when set.
        **kwargs: :class:`BenchSettings` fields to change, e.g. ``batch_sizes=(8,)``, ``compile=(True,)``,
            ``variants=("vae_baseline",)``, ``steps=20``, ``time_budget_s=600``, ``cohort_dir=...``,
            ``overrides={"grad_clip": 0}`` (bundle config ids).
    """
    if mode == "bundle":
        from custom.bench_bundle import run_bundle_bench

        return run_bundle_bench(out=out, **kwargs)
    s = default_settings(mode, **kwargs)
    device = torch.device(s.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = environment(s.device)
    print("bench environment: " + ", ".join(f"{k}={v}" for k, v in env.items()), flush=True)
    rows: list[BenchRow] = []
    notes = _notes(s)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_") as tmp:
        workdir = Path(tmp)
        t0 = time.perf_counter()
        datalist = _prepare_cohort(s, workdir)
        first = _bundle_parser("vae_baseline", s, s.batch_sizes[0], False, datalist, workdir)
        dataset = first.get_parsed_content("train#dataset")
        notes.append(
            f"cohort + cache: {len(dataset)} training volumes at {s.spatial_size}^3 prepared in "
            f"{time.perf_counter() - t0:.1f} s"
        )
        for batch in s.batch_sizes:
            try:
                rows.append(_bench_data(s, batch, datalist, workdir, dataset))
            except Exception as err:  # noqa: BLE001 - reported, not fatal
                rows.append(BenchRow("data pipeline (DataLoader)", batch, False, status=_failure(err)))
        flops_cache: dict[tuple[str, int], float] = {}
        for name, batch, compile_ in _plan(s):
            if time.perf_counter() - t_start > s.time_budget_s:
                rows.append(
                    BenchRow(
                        name if name != "reference" else _ref_name(compile_),
                        batch,
                        compile_,
                        status="skipped (time budget)",
                    )
                )
                continue
            t_cfg = time.perf_counter()
            try:
                if name == "reference":
                    row = _bench_reference(s, batch, compile_)
                else:
                    row = _bench_bundle(name, s, batch, compile_, datalist, workdir, dataset, flops_cache)
            except FileNotFoundError as err:
                row = BenchRow(name, batch, compile_, status=f"skipped ({err})")
            except Exception as err:  # noqa: BLE001 - one failing configuration must not abort the table
                row = BenchRow(
                    name if name != "reference" else _ref_name(compile_), batch, compile_, status=_failure(err)
                )
            row.seconds = time.perf_counter() - t_cfg
            rows.append(row)
            print(
                f"bench: {row.config} B={batch} compile={compile_}: {row.status} "
                f"vol/s={row.vols_per_s} ({row.seconds:.0f} s)",
                flush=True,
            )
            _release(device)
    try:
        rows.append(_bench_latent_ode(s))
    except Exception as err:  # noqa: BLE001 - reported, not fatal
        rows.append(BenchRow("latent_ode", 0, False, status=_failure(err)))
    _ratios(rows)
    report = _report(s, env, rows, notes)
    target = out or os.environ.get("OUT")
    if target:
        folder = Path(target)
        folder.mkdir(parents=True, exist_ok=True)
        payload = {
            "environment": env,
            "settings": asdict(s),
            "rows": [asdict(r) for r in rows],
            "notes": notes,
            "columns": list(COLUMNS),
        }
        (folder / f"bench_{s.mode}.json").write_text(json.dumps(payload, indent=1, default=str))
        (folder / f"bench_{s.mode}.md").write_text(report + "\n")
    return report


def _ref_name(compile_: bool) -> str:
    return "reference (compile+CL)" if compile_ else "reference (eager)"


def _failure(err: BaseException) -> str:
    text = f"{type(err).__name__}: {err}".replace("|", "/").replace("\n", " ")
    return "failed: " + (text[:160] + "..." if len(text) > 160 else text)


def _ratios(rows: list[BenchRow]) -> None:
    """``x ref`` = vol/s over the reference eager vol/s at the same batch size (when both exist)."""
    ref = {r.batch: r.vols_per_s for r in rows if r.config == "reference (eager)" and r.vols_per_s}
    for r in rows:
        if r.vols_per_s and r.batch in ref and not r.config.startswith("data"):
            r.ratio_ref = r.vols_per_s / ref[r.batch]


def _report(s: BenchSettings, env: dict[str, Any], rows: list[BenchRow], notes: list[str]) -> str:
    dtype = "bf16 autocast" if s.amp else "fp32"
    head = [
        f"## Training throughput ({s.mode} mode, {s.spatial_size}^3, {dtype}, channels_last={s.channels_last})",
        "",
        "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()),
        "",
        f"Median of {s.steps} timed steps after {s.warmup} warm-up steps; `x ref` = vol/s / reference eager vol/s "
        "at the same batch.",
        "",
        markdown_table(rows),
        "",
    ]
    head += [f"- {n}" for n in notes]
    return "\n".join(head)
