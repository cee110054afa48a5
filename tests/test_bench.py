"""The training-throughput benchmark's CPU mode: the real bundle step at 32^3 produces a complete, positive table."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from custom.bench import COLUMNS, default_settings, run_bench


def _table(report: str) -> list[list[str]]:
    lines = [ln for ln in report.splitlines() if ln.startswith("|")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in lines]


@pytest.fixture(scope="module")
def cpu_run(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    out = tmp_path_factory.mktemp("bench")
    report = run_bench(
        mode="cpu",
        out=str(out),
        cohort_dir=str(tiny_cohort),
        warmup=0,
        steps=1,
        data_batches=2,
        overrides={"z_dim": 16},
    )
    return report, out


def test_table_has_expected_columns_and_rows(cpu_run: tuple[str, Path]) -> None:
    table = _table(cpu_run[0])
    assert tuple(table[0]) == COLUMNS
    configs = [row[0] for row in table[2:]]
    assert configs[:3] == ["data pipeline (DataLoader)", "reference (eager)", "vae_baseline"]
    assert len(configs) == 4 and configs[3].startswith("latent_ode (rk4")  # the bundle's default solver
    assert all(len(row) == len(COLUMNS) for row in table[2:])


def test_numbers_are_positive(cpu_run: tuple[str, Path]) -> None:
    table = _table(cpu_run[0])
    col = {name: i for i, name in enumerate(table[0])}
    for row in table[2:]:
        assert row[col["status"]] == "ok", row
        for name in ("step ms", "vol/s", "e2e vol/s"):
            assert float(row[col[name]]) > 0, (row[0], name)
    for row in table[3:]:  # training steps also carry FLOPs; the encoder steps the ratio to the reference
        for name in ("TFLOP/s", "GFLOP/step") + (() if row[0].startswith("latent_ode") else ("x ref",)):
            assert float(row[col[name]]) > 0, (row[0], name)
    ref = next(r for r in table if r[0] == "reference (eager)")
    assert float(ref[col["x ref"]]) == pytest.approx(1.0)


def test_json_is_consistent_with_flop_definition(cpu_run: tuple[str, Path]) -> None:
    payload = json.loads((cpu_run[1] / "bench_cpu.json").read_text())
    assert payload["environment"]["torch"] and payload["settings"]["spatial_size"] == 32
    assert (cpu_run[1] / "bench_cpu.md").read_text().startswith("## Training throughput")
    ref = next(r for r in payload["rows"] if r["config"] == "reference (eager)")
    # the reference VAE at 32^3: forward FLOPs of its convolutions alone, computed by hand, bound the count from below
    # (stem conv 4->32, k3, stride 2 -> 16^3 outputs; 2 FLOPs per MAC; training step ~3x forward)
    stem = 2 * 16**3 * 32 * 4 * 27 * 2  # batch 2
    assert ref["gflop_per_step"] * 1e9 > 3 * stem
    assert ref["tflops"] == pytest.approx(ref["gflop_per_step"] / 1e3 / (ref["step_ms"] / 1e3), rel=1e-6)
    assert ref["vols_per_s"] == pytest.approx(2 / (ref["step_ms"] / 1e3), rel=1e-6)


def test_settings_reject_unknown_options() -> None:
    with pytest.raises(ValueError, match="unknown bench option"):
        default_settings("cpu", no_such_option=1)
    with pytest.raises(ValueError, match="unknown variant"):
        default_settings("cpu", variants="nope")
    assert default_settings("cpu", batch_sizes="2,4").batch_sizes == (2, 4)
