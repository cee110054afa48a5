"""Shared fixtures: a tiny synthetic cohort (32^3-friendly) generated once per test session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

#: overrides that make any encoder bundle run in seconds on a CPU
TINY = [
    "--spatial_size",
    "[32,32,32]",
    "--spacing",
    "7.5",
    "--num_workers",
    "1",
    "--amp",
    "false",
    "--batch_size",
    "2",
    "--z_dim",
    "16",
]


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 subjects x 3 timepoints at 7.5 mm (32x32x21 voxels), seed 0."""
    from custom.synth.cohort import generate_cohort

    out = tmp_path_factory.mktemp("cohort") / "synthetic"
    generate_cohort(str(out), subjects=6, timepoints=3, seed=0, spacing=7.5, workers=1)
    return out


def run_bundle(*args: str, cwd: Path = REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run ``python -m monai.bundle <args>`` from the repository root and fail loudly with its output."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="2")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if proc.returncode != 0:
        raise AssertionError(f"monai.bundle {' '.join(args)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc
