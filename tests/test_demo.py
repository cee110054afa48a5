"""The README's main job at a tiny size: every stage leaves its outputs and the report links to existing files."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def test_demo_tiny_end_to_end(tmp_path: Path) -> None:
    """The encoders trained concurrently (``--size gpu``'s way; real bundles here). The sequential CPU default is the
    README's first command, which CI runs in full before the tests."""
    parallel = True
    out = tmp_path / "demo"
    cmd = [
        sys.executable,
        "-m",
        "custom",
        "demo",
        "--out",
        str(out),
        "--size",
        "tiny",
        "--parallel_encoders",
        str(parallel),
    ]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("cohort", "vae_baseline", "dipvae", "latent_ode", "report"):
        assert (out / ".done" / stage).exists(), stage
    assert (out / "cohort" / "cohort.csv").exists()
    for name in ("vae_baseline", "dipvae"):
        assert (out / name / "models" / "model.pt").exists()
        assert (out / name / "eval_test" / "metrics.json").exists()
        assert (out / name / "eval_test" / "probes.png").exists()  # held-out probe figure (custom/plots/probes.py)
        assert (out / name / "dashboard.png").exists()
    assert (out / "dipvae" / "models" / "latent_partition.json").exists()
    ev = out / "latent_ode" / "eval_test"
    assert (ev / "metrics.json").exists() and (ev / "growth.png").exists() and (ev / "forecasts_test.csv").exists()
    assert (out / "latent_ode" / "models" / "model.pt").exists() and (out / "latent_ode" / "metrics.csv").exists()
    assert list((out / "latent_ode" / "forecast").glob("*_forecast_t*.nii.gz"))
    report = (out / "report.md").read_text()
    assert "growth fast, schedule irregular, biomarkers on" in report  # the cohort options it used
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report)
    assert len(links) >= 6
    for link in links:
        assert (out / link).exists(), link
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(links)
    # a second run skips the finished stages
    again = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already done" in again.stdout


def test_concurrent_stages_both_finish_and_a_failure_names_its_stage(tmp_path: Path) -> None:
    """``parallel_encoders``: the encoder stages run in threads; both leave their markers, and a failing one is
    reported (with its stage name) only after its sibling has finished."""
    import threading
    import time

    from custom.demo import Demo, DemoError, Stage

    demo = Demo(str(tmp_path / "d"), "tiny")
    demo.done.mkdir(parents=True)
    seen: list[str] = []
    both_running = threading.Barrier(2, timeout=10)  # deadlocks (-> BrokenBarrierError) if run one after the other

    def ok() -> None:
        both_running.wait()
        time.sleep(0.2)
        seen.append("ok")

    def bad() -> None:
        both_running.wait()
        raise DemoError("stage 'bad' failed (exit 1); its log is x.log")

    cmd_file = demo.out / "commands.json"
    demo._run_concurrently([(Stage("a", "a", ok), "[1/2]"), (Stage("b", "b", ok), "[2/2]")], cmd_file)
    assert seen == ["ok", "ok"] and (demo.done / "a").exists() and (demo.done / "b").exists()

    both_running.reset()
    seen.clear()
    try:
        demo._run_concurrently([(Stage("bad", "bad", bad), "[1/2]"), (Stage("c", "c", ok), "[2/2]")], cmd_file)
    except DemoError as err:
        assert "'bad'" in str(err)
    else:
        raise AssertionError("the failing stage was not reported")
    assert seen == ["ok"] and (demo.done / "c").exists() and not (demo.done / "bad").exists()
