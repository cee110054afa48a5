"""The README's main job at a tiny size: every stage leaves its outputs and the report links to existing files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_demo_tiny_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, "-m", "custom", "demo", "--out", str(out), "--size", "tiny"], cwd=REPO,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("cohort", "vae_baseline", "dipvae", "latent_ode", "report"):
        assert (out / ".done" / stage).exists(), stage
    assert (out / "cohort" / "cohort.csv").exists()
    for name in ("vae_baseline", "dipvae"):
        assert (out / name / "models" / "model.pt").exists()
        assert (out / name / "eval_test" / "metrics.json").exists()
        assert (out / name / "dashboard.png").exists()
    assert (out / "dipvae" / "models" / "latent_partition.json").exists()
    assert (out / "latent_ode" / "metrics.json").exists() and (out / "latent_ode" / "growth.png").exists()
    assert list((out / "latent_ode" / "forecast").glob("*_forecast_t*.nii.gz"))
    report = (out / "report.md").read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) >= 6
    for link in links:
        assert (out / link).exists(), link
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(links)
    # a second run skips the finished stages
    again = subprocess.run([sys.executable, "-m", "custom", "demo", "--out", str(out), "--size", "tiny"], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already done" in again.stdout
