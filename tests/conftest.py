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


class TrainedBundles:
    """Tiny trained bundles of one test session, trained on first use and shared by every test file.

    ``trained("vae_baseline")`` / ``trained("dipvae")``: 1 epoch at 32^3, z 16, 4 cases (``TINY``);
    ``trained("latent_ode")``: 2 epochs (hidden 8) on the latents of the tiny dipvae. Each returns the training
    folder, whose ``models/`` holds ``model.pt`` and ``model_config.json``.
    """

    def __init__(self, cohort: Path, root: Path) -> None:
        self.cohort, self.root, self._done = cohort, root, {}

    def __call__(self, name: str) -> Path:
        if name not in self._done:
            out = self.root / name
            common = ["--dataset_dir", str(self.cohort), "--output_dir", str(out), "--ckpt_dir", str(out / "models")]
            config = ["--config_file", str(REPO / "bundles" / name / "configs" / "train.json")]
            if name == "latent_ode":
                encoder = ["--encoder_bundle", str(self("dipvae"))]
                extra = ["--epochs", "2", "--hidden", "8", "--val_interval", "1", "--batch_size", "4"]
                run_bundle("run", "training", *config, *common, *encoder, *extra, "--device", "cpu")
            else:
                datalist = ["--datalist", str(self.cohort / "datalist.json"), "--limit_cases", "4"]
                extra = ["--epochs", "1", "--val_interval", "100", "--cache", "none", *TINY]
                run_bundle("run", "training", *config, *common, *datalist, *extra)
            self._done[name] = out
        return self._done[name]


@pytest.fixture(scope="session")
def trained(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> TrainedBundles:
    """The session's :class:`TrainedBundles` (each bundle trained once, on first use)."""
    return TrainedBundles(tiny_cohort, tmp_path_factory.mktemp("trained"))


class ExportedBundles:
    """``python -m custom export-bundle``'s zips of the session's :class:`TrainedBundles`, each made once (no size
    given: the export reads ``models/model_config.json`` written by training)."""

    def __init__(self, trained: TrainedBundles, out: Path) -> None:
        self.trained, self.out, self._done = trained, out, {}

    def __call__(self, name: str) -> Path:
        if name not in self._done:
            from custom.export import export_bundle

            weights = self.trained(name) / "models" / "model.pt"
            self._done[name] = Path(export_bundle(str(REPO / "bundles" / name), str(self.out), model=str(weights)))
        return self._done[name]


@pytest.fixture(scope="session")
def exports(trained: TrainedBundles, tmp_path_factory: pytest.TempPathFactory) -> ExportedBundles:
    """The session's :class:`ExportedBundles` (zips in one folder, each made on first use)."""
    return ExportedBundles(trained, tmp_path_factory.mktemp("dist"))
