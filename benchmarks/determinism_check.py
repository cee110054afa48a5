"""Run the same bundle training twice with the same seed and report how far the loss curves differ.

Usage (from the repository root): ``python benchmarks/determinism_check.py --out runs/det [--spatial 64 --epochs 3]``.
Prints a table of per-epoch train losses of both runs and the max relative difference; on CPU the runs are
bit-identical (tests/test_determinism.py); on CUDA, cuDNN autotuning and atomic adds make them differ slightly.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="runs/determinism")
    ap.add_argument("--spatial", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--bundle", default="vae_baseline")
    args = ap.parse_args()
    out = Path(args.out)
    spacing = 240.0 / args.spatial
    cohort = out / "cohort"
    if not (cohort / "datalist.json").exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "custom",
                "synth",
                "--out",
                str(cohort),
                "--subjects",
                "6",
                "--timepoints",
                "3",
                "--seed",
                "0",
                "--spacing",
                str(spacing),
            ],
            cwd=REPO,
            check=True,
        )
    curves = []
    for run in ("a", "b"):
        d = out / run
        subprocess.run(
            [
                sys.executable,
                "-m",
                "monai.bundle",
                "run",
                "training",
                "--config_file",
                str(REPO / "bundles" / args.bundle / "configs" / "train.json"),
                "--dataset_dir",
                str(cohort),
                "--output_dir",
                str(d),
                "--ckpt_dir",
                str(d / "models"),
                "--epochs",
                str(args.epochs),
                "--val_interval",
                str(args.epochs),
                "--spatial_size",
                f"[{args.spatial},{args.spatial},{args.spatial}]",
                "--spacing",
                str(spacing),
                "--seed",
                "0",
            ],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
        curves.append([float(r["train_epoch/loss"]) for r in csv.DictReader((d / "metrics.csv").open())])
    print("| epoch | run a loss | run b loss | rel. diff |\n|---|---|---|---|")
    worst = 0.0
    for e, (a, b) in enumerate(zip(*curves), 1):
        rel = abs(a - b) / max(abs(a), 1e-12)
        worst = max(worst, rel)
        print(f"| {e} | {a:.6f} | {b:.6f} | {rel:.2e} |")
    print(f"max relative difference of the per-epoch train loss: {worst:.2e}")


if __name__ == "__main__":
    main()
