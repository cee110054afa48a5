"""bench --mode bundle without running a bundle: the CSV reading, the command it runs, the ratios, bad options;
and the torch_threads config id through the bundle's own initialize list."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from custom.bench_bundle import BundleRow, _ratios, bundle_command, bundle_settings, epoch_throughput

REPO = Path(__file__).resolve().parents[1]


def test_epoch_throughput_discards_warmup_and_profiled_epochs(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,iteration,train_epoch/loss,train_epoch/volumes_per_s,train_epoch/peak_gpu_gib\n"
        "1,25,9.0,20.0,30.0\n2,50,8.0,50.0,12.0\n3,75,7.0,110.0,11.5\n4,100,6.0,100.0,11.0\n5,125,5.0,130.0,11.2\n"
    )
    epochs, vols, peaks = epoch_throughput(csv, {1, 2})
    assert epochs == [3, 4, 5] and vols == [110.0, 100.0, 130.0] and max(peaks) == 11.5
    assert epoch_throughput(tmp_path / "missing.csv", {1}) == ([], [], [])


def test_ratios_by_hand() -> None:
    rows = [
        BundleRow(run="reference eager bf16", vols_per_s=80.0),
        BundleRow(run="bundle vae_baseline", vols_per_s=200.0),
        BundleRow(run="reference compiled + channels-last bf16", vols_per_s=125.0),
        BundleRow(run="bundle dipvae", status="failed"),
    ]
    _ratios(rows)
    assert rows[1].ratio_ref_eager == pytest.approx(2.5) and rows[1].ratio_ref_compiled == pytest.approx(1.6)
    assert rows[3].ratio_ref_eager is None


def test_command_is_the_bundle_command_with_sizing_overrides_only(tmp_path: Path) -> None:
    s = bundle_settings(size=32, batch_size=2, epochs=4, profile=True, profile_steps=3, device="cpu")
    cmd = bundle_command(s, "dipvae_sbd", tmp_path / "cohort", tmp_path / "run")
    assert cmd[1:5] == ["-m", "monai.bundle", "run", "training"]
    config = cmd[cmd.index("--config_file") + 1]
    assert "dipvae/configs/train.json" in config and "recipes/recipe2_sbd.json" in config
    keys = {c[2:] for c in cmd if c.startswith("--")} - {"config_file"}
    assert keys == {
        "dataset_dir",
        "output_dir",
        "ckpt_dir",
        "epochs",
        "val_interval",
        "batch_size",
        "spatial_size",
        "spacing",
        "num_workers",
        "profile_steps",
    }
    assert cmd[cmd.index("--spatial_size") + 1] == "[32, 32, 32]" and cmd[cmd.index("--spacing") + 1] == "7.5"
    assert int(cmd[cmd.index("--val_interval") + 1]) > s.epochs


def test_bad_options_are_named() -> None:
    with pytest.raises(ValueError, match="unknown variant"):
        bundle_settings(variants="vae_baseline,nope")
    with pytest.raises(ValueError, match="leaves no timed epoch"):
        bundle_settings(epochs=2, profile=True)
    with pytest.raises(ValueError, match="unknown bench --mode bundle option"):
        bundle_settings(batch_sizes_typo=3)


@pytest.mark.parametrize("bundle", ["vae_baseline", "dipvae"])
def test_torch_threads_config_id_sets_the_thread_count(bundle: str) -> None:
    from monai.bundle import ConfigParser

    before = torch.get_num_threads()
    parser = ConfigParser()
    parser.read_config(str(REPO / "bundles" / bundle / "configs" / "train.json"))
    assert parser["torch_threads"] is None and parser["profile_steps"] is None
    parser["torch_threads"] = 1
    try:
        parser.get_parsed_content("initialize")
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    parser["torch_threads"] = 0
    with pytest.raises(RuntimeError) as info:  # MONAI wraps the component's error; the cause names the id
        parser.get_parsed_content("initialize", lazy=False)
    assert "torch_threads must be >= 1" in str(info.value.__cause__)


def test_demo_report_names_the_cpu_model_and_wall_time() -> None:
    from custom.report import _machine_line

    cpuinfo = Path("/proc/cpuinfo")
    line = _machine_line(754.4)
    assert line.endswith("demo wall time 12 min 34 s (this invocation, up to the report).")
    if cpuinfo.exists():
        model = next(
            ln.split(":", 1)[1].strip() for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")
        )
        assert line.startswith(f"Machine: {model}, ")
