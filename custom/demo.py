"""``python -m custom demo``: the whole method on the embedded synthetic cohort, through the real bundles.

Every stage is the same ``python -m monai.bundle run ...`` command a user types (with overrides), run as a
subprocess whose output goes to ``<out>/logs/<stage>.log``. A finished stage leaves ``<out>/.done/<stage>``
and is skipped when the command is run again; a failing stage stops the demo and names its log.
The last stage writes ``report.md`` and a self-contained ``report.html`` (PNGs embedded).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]

#: Sizes of the demo. ``cpu`` finishes in minutes on a 2-core laptop; ``gpu`` is the full 128^3 method.
#: Many subjects and few epochs: the synthetic cohort is free, and with 22 training subjects the Exp3 volume
#: coordinate memorised them (R² 0.98 on training scans, 0.06 on held-out ones at 32^3); 84 training subjects with
#: the same number of steps gave 0.73 held-out (runs recorded in bundles/dipvae/docs/experiments.md).
#: Cohort: biomarkers on (growth depends on calcification, edema and T2 signal, docs/synthetic_cohort.md) with the
#: ``fast`` growth mode on the irregular schedule: four scans over ~0-6 years at a ~0.5/yr make every grower change
#: by many voxels, which the short demo trainings need; ``realistic`` growth (median 6 %/yr) over the same scans
#: changes a tumour by about a quarter of its volume, close to voxel and measurement noise at 7.5 mm.
SIZES: dict[str, dict[str, Any]] = {
    # cpu: DIP from epoch 8, full strength at 14 of 16: starting at 3 (full at 8) left 9/32 units active on
    # the training split, starting at 8 kept 27/32 at the same decorrelation (bundles/dipvae/docs/experiments.md)
    "cpu": {
        "subjects": 120,
        "timepoints": 4,
        "synth_spacing": 7.5,
        "spacing": 7.5,
        "spatial_size": [32, 32, 32],
        "z_dim": 32,
        "batch_size": 4,
        "vae_epochs": 16,
        "dip_epochs": 16,
        "lambda_start": 8,
        "lambda_warmup": 6,
        "val_interval": 4,
        "ode_epochs": 300,
        "ode_val_interval": 10,
        "amp": False,
        "compile": False,
        "num_workers": 2,
        "growth": "fast",
        "schedule": "irregular",
        "biomarkers": "on",
        "checkpoint_interval": 4,
        "parallel_encoders": False,
        "tumour_weight": 1.0,
        "tumour_weight_mode": "voxel",
        "vae_augment": True,
    },
    # tumour_weight (both encoders): x20 on the segmented tumour at 128^3 makes the decoders draw it (z_vol grows
    # it in the traversal; the baseline's held-out probes rose from 0.07 / 0.37 to 0.80 / 0.88); at 32^3 it made
    # the ODE forecast worse than LOCF, so cpu keeps the plain likelihood (measurements in bundles/*/docs/experiments.md);
    # tumour_weight_mode "voxel" (both encoders): the recorded demo runs weighted every tumour voxel alike
    # (vae_baseline's default became "balanced" in 0.5.0; dipvae's is "voxel")
    # gpu: eager, not compiled (at ~7k volumes per encoder the ~40 s compile costs more than it saves); the two
    # encoders train at the same time on the one GPU (each leaves it idle while it caches data and evaluates);
    # DIP from epoch 10, full at 22 of 30: from 6 (full at 15) the decoder stopped using z (z=0 decoded within
    # 1.04x of mu on the recorded H100 run). vae_augment (the baseline's `augment`, on by default since 0.4.0): the
    # recorded gpu demo ran without it, and tiny is a smoke test
    "gpu": {
        "subjects": 80,
        "timepoints": 4,
        "synth_spacing": 1.875,
        "spacing": 1.875,
        "spatial_size": [128, 128, 128],
        "z_dim": 128,
        "batch_size": 4,
        "vae_epochs": 30,
        "dip_epochs": 30,
        "lambda_start": 10,
        "lambda_warmup": 12,
        "val_interval": 10,
        "ode_epochs": 300,
        "ode_val_interval": 10,
        "amp": True,
        "compile": False,
        "num_workers": 8,
        "growth": "fast",
        "schedule": "irregular",
        "biomarkers": "on",
        "checkpoint_interval": 10,
        "parallel_encoders": True,
        "tumour_weight": 20.0,
        "tumour_weight_mode": "voxel",
        "vae_augment": False,
    },
    "tiny": {
        "subjects": 6,
        "timepoints": 3,
        "synth_spacing": 7.5,
        "spacing": 7.5,
        "spatial_size": [32, 32, 32],
        "z_dim": 16,
        "batch_size": 2,
        "vae_epochs": 1,
        "dip_epochs": 1,
        "lambda_start": 1,
        "lambda_warmup": 1,
        "val_interval": 1,
        "ode_epochs": 20,
        "ode_val_interval": 5,
        "amp": False,
        "compile": False,
        "num_workers": 1,
        "growth": "fast",
        "schedule": "irregular",
        "biomarkers": "on",
        "checkpoint_interval": 1,
        "parallel_encoders": False,
        "tumour_weight": 1.0,
        "tumour_weight_mode": "voxel",
        "vae_augment": False,
    },
}


@dataclass
class Stage:
    name: str
    title: str
    run: Callable[[], None]
    log: Path = field(default_factory=Path)


class DemoError(RuntimeError):
    """A stage failed; the message names the stage and its log file."""


def _bundle_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "monai.bundle", *args]


def _ov(**kw: Any) -> list[str]:
    """Command-line overrides in the form monai.bundle expects (JSON for lists/bools)."""
    out: list[str] = []
    for k, v in kw.items():
        out += [
            f"--{k}",
            (
                json.dumps(v)
                if isinstance(v, (list, dict))
                else ("True" if v is True else "False" if v is False else str(v))
            ),
        ]
    return out


class Demo:
    """The pipeline; see the module docstring."""

    def __init__(self, out: str, size: str = "cpu", **overrides: Any) -> None:
        if size not in SIZES:
            raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
        self.out = Path(out).resolve()
        self.size = size
        self.p = {**SIZES[size], **overrides}
        self.logs = self.out / "logs"
        self.done = self.out / ".done"
        self.cohort = self.out / "cohort"
        self.commands: dict[str, str] = {}
        self.t_start: float | None = None

    # -- internals ------------------------------------------------------------------------------------
    def _bar_position(self) -> int:
        """tqdm line of the calling thread: concurrent stages draw their progress bars on separate lines."""
        import threading

        return getattr(threading.current_thread(), "bar_position", 0)

    def _exec(self, stage: str, cmd: list[str], epochs_csv: Path | None = None, total: int | None = None) -> None:
        """Run ``cmd`` from the repository root, log to ``logs/<stage>.log``, show an epoch progress bar."""
        from tqdm import tqdm

        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{stage}.log"
        self.commands.setdefault(stage, " ".join(shlex.quote(c) for c in cmd))
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        with (
            log.open("a") as fh,
            tqdm(
                total=total,
                desc=f"  {stage}",
                unit="epoch",
                leave=False,
                disable=total is None,
                position=self._bar_position(),
            ) as bar,
        ):
            fh.write(f"$ {self.commands[stage]}\n")
            fh.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
            while proc.poll() is None:
                time.sleep(1.0)
                if epochs_csv is not None and epochs_csv.exists():
                    n = max(0, sum(1 for _ in epochs_csv.open()) - 1)
                    bar.update(max(0, n - bar.n))
            if proc.returncode != 0:
                raise DemoError(f"stage '{stage}' failed (exit {proc.returncode}); its log is {log}")

    def _train_encoder(self, name: str, configs: list[str], epochs: int, extra: dict[str, Any]) -> None:
        p = self.p
        run = self.out / name
        cfg = "[" + ",".join(f"'{REPO / 'bundles' / name / 'configs' / c}'" for c in configs) + "]"
        cmd = _bundle_cmd("run", "training", "--config_file", cfg) + _ov(
            dataset_dir=str(self.cohort),
            output_dir=str(run),
            ckpt_dir=str(run / "models"),
            epochs=epochs,
            val_interval=p["val_interval"],
            spatial_size=p["spatial_size"],
            spacing=p["spacing"],
            z_dim=p["z_dim"],
            batch_size=p["batch_size"],
            amp=p["amp"],
            compile=p["compile"],
            num_workers=p["num_workers"],
            figure_interval=epochs,
            checkpoint_interval=p["checkpoint_interval"],
            tumour_weight=p["tumour_weight"],
            tumour_weight_mode=p["tumour_weight_mode"],
            **extra,
        )
        self._exec(f"{name}_train", cmd, epochs_csv=run / "metrics.csv", total=epochs)

    def _evaluate_encoder(self, name: str, configs: list[str]) -> None:
        p = self.p
        run = self.out / name
        cfg = "[" + ",".join(f"'{REPO / 'bundles' / name / 'configs' / c}'" for c in configs + ["evaluate.json"]) + "]"
        cmd = _bundle_cmd("run", "--config_file", cfg) + _ov(
            dataset_dir=str(self.cohort),
            output_dir=str(run),
            ckpt_dir=str(run / "models"),
            eval_split="test",
            spatial_size=p["spatial_size"],
            spacing=p["spacing"],
            z_dim=p["z_dim"],
            batch_size=p["batch_size"],
            amp=p["amp"],
            num_workers=p["num_workers"],
        )
        self._exec(f"{name}_evaluate", cmd)

    # -- stages ---------------------------------------------------------------------------------------
    def stage_cohort(self) -> None:
        p = self.p
        cmd = [
            sys.executable,
            "-m",
            "custom",
            "synth",
            "--out",
            str(self.cohort),
            "--subjects",
            str(p["subjects"]),
            "--timepoints",
            str(p["timepoints"]),
            "--seed",
            "0",
            "--spacing",
            str(p["synth_spacing"]),
            "--workers",
            str(max(1, os.cpu_count() or 1)),
            "--growth",
            p["growth"],
            "--schedule",
            p["schedule"],
            "--biomarkers",
            p["biomarkers"],
        ]
        self._exec("cohort", cmd)
        subject = self._show_subject()
        self._exec(
            "cohort_figure",
            [
                sys.executable,
                "-m",
                "custom",
                "show",
                "--data_dir",
                str(self.cohort),
                "--subject",
                subject,
                "--out",
                str(self.out / "figures" / "cohort_subject.png"),
            ],
        )

    def _show_subject(self) -> str:
        import csv

        rows = list(csv.DictReader((self.cohort / "cohort.csv").open()))
        growers = [r for r in rows if r.get("growth_class") == "grower"] or rows
        return growers[0]["subject_id"]

    def stage_vae(self) -> None:
        self._train_encoder("vae_baseline", ["train.json"], self.p["vae_epochs"], {"augment": self.p["vae_augment"]})
        self._evaluate_encoder("vae_baseline", ["train.json"])

    def stage_dipvae(self) -> None:
        p = self.p
        self._train_encoder(
            "dipvae",
            ["train.json", "exp3.json"],
            p["dip_epochs"],
            {"lambda_start_epoch": p["lambda_start"], "lambda_cov_annealing_epochs": p["lambda_warmup"]},
        )
        self._evaluate_encoder("dipvae", ["train.json", "exp3.json"])

    def stage_latent_ode(self) -> None:
        p = self.p
        run = self.out / "latent_ode"
        configs = REPO / "bundles" / "latent_ode" / "configs"
        common = _ov(
            encoder_bundle=str(self.out / "dipvae"),
            dataset_dir=str(self.cohort),
            output_dir=str(run),
            ckpt_dir=str(run / "models"),
        )
        cmd = _bundle_cmd("run", "training", "--config_file", str(configs / "train.json")) + common
        self._exec("latent_ode_train", cmd + _ov(epochs=p["ode_epochs"], val_interval=p["ode_val_interval"]))
        both = str([str(configs / "train.json"), str(configs / "evaluate.json")])
        self._exec("latent_ode_evaluate", _bundle_cmd("run", "--config_file", both) + common)
        forecast = json.loads((run / "eval_test" / "metrics.json").read_text())
        subject = forecast.get("example_subject")
        if subject:
            cmd = _bundle_cmd("run", "--config_file", str(configs / "inference.json")) + _ov(
                encoder_bundle=str(self.out / "dipvae"),
                ode_dir=str(run / "models"),
                dataset_dir=str(self.cohort),
                subject=subject,
                output_dir=str(run / "forecast"),
                n_observed=2,
            )
            self._exec("latent_ode_inference", cmd)

    def stage_report(self) -> None:
        from custom.report import write_report

        wall = time.time() - self.t_start if self.t_start is not None else None
        write_report(self.out, size=self.size, params=self.p, commands=self.commands, wall_seconds=wall)

    # -- driver ---------------------------------------------------------------------------------------
    def stages(self) -> list[list[Stage]]:
        """Steps in order; the stages of one step are independent and run at the same time when
        ``parallel_encoders`` (both encoders need only the cohort)."""
        encoders = [
            Stage("vae_baseline", "vae_baseline: train + evaluate", self.stage_vae),
            Stage("dipvae", "dipvae + Exp3: train + evaluate", self.stage_dipvae),
        ]
        steps = [[Stage("cohort", "synthetic cohort", self.stage_cohort)]]
        steps += [encoders] if self.p.get("parallel_encoders") else [[e] for e in encoders]
        steps += [
            [
                Stage(
                    "latent_ode",
                    "latent_ode: encode, train, evaluate (hybrid and images only), forecast",
                    self.stage_latent_ode,
                )
            ],
            [Stage("report", "report", self.stage_report)],
        ]
        return steps

    def _run_stage(self, st: Stage, label: str, cmd_file: Path) -> None:
        t0 = time.time()
        print(f"{label} {st.title} ...", flush=True)
        st.run()
        (self.done / st.name).write_text(f"{time.time() - t0:.1f}\n")
        cmd_file.write_text(json.dumps(self.commands, indent=1))
        print(f"{label} {st.title}: done in {time.time() - t0:.0f} s", flush=True)

    def _run_concurrently(self, todo: list[tuple[Stage, str]], cmd_file: Path) -> None:
        """Run stages in threads (each drives its own subprocess); re-raise the first failure after all end."""
        import threading

        errors: list[BaseException] = []

        def work(st: Stage, label: str) -> None:
            try:
                self._run_stage(st, label, cmd_file)
            except BaseException as err:  # noqa: BLE001 - reported below, after the sibling stage ends
                errors.append(err)

        threads = [threading.Thread(target=work, args=item, name=item[0].name) for item in todo]
        for k, t in enumerate(threads):
            t.bar_position = k  # type: ignore[attr-defined]
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]

    def run(self) -> Path:
        self.out.mkdir(parents=True, exist_ok=True)
        self.done.mkdir(exist_ok=True)
        cmd_file = self.out / "commands.json"
        if cmd_file.exists():
            self.commands.update(json.loads(cmd_file.read_text()))
        steps = self.stages()
        n = sum(len(step) for step in steps)
        t_all = time.time()
        self.t_start = t_all
        i = 0
        for step in steps:
            todo: list[tuple[Stage, str]] = []
            for st in step:
                i += 1
                label = f"[{i}/{n}]"
                marker = self.done / st.name
                if marker.exists() and st.name != "report":
                    print(f"{label} {st.title}: already done ({marker}), skipped", flush=True)
                else:
                    todo.append((st, label))
            if len(todo) > 1:
                self._run_concurrently(todo, cmd_file)
            elif todo:
                self._run_stage(*todo[0], cmd_file)
        from custom.utils import cpu_model

        minutes, seconds = divmod(int(round(time.time() - t_all)), 60)
        print(
            f"demo finished in {minutes} min {seconds} s on {cpu_model()} ({os.cpu_count()} cores): "
            f"{self.out / 'report.html'}",
            flush=True,
        )
        return self.out / "report.html"


def run_demo(out: str = "runs/demo", size: str = "cpu", **overrides: Any) -> str:
    """Entry point of ``python -m custom demo``."""
    try:
        return str(Demo(out, size, **overrides).run())
    except DemoError as err:
        from custom.data.errors import UserFacingError

        raise UserFacingError(str(err)) from None
