"""The demo gives both encoders the same likelihood weighting, and the Exp3 layer's weighting composes with the
command line the way monai.bundle users expect (layer over train.json, command line over both)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import REPO
from monai.bundle import ConfigParser

from custom.demo import Demo


def _train_commands(tmp_path: Path, size: str, **overrides: object) -> dict[str, list[str]]:
    demo = Demo(str(tmp_path / "demo"), size, **overrides)
    seen: dict[str, list[str]] = {}
    demo._exec = lambda stage, cmd, **kw: seen.__setitem__(stage, cmd)  # type: ignore[method-assign]
    demo.stage_vae()
    demo.stage_dipvae()
    return seen


def _value(cmd: list[str], key: str) -> str:
    assert cmd.count(f"--{key}") == 1, cmd
    return cmd[cmd.index(f"--{key}") + 1]


@pytest.mark.parametrize("size,expected", [("cpu", 1.0), ("gpu", 20.0)])
def test_both_encoders_get_the_size_s_tumour_weight(tmp_path: Path, size: str, expected: float) -> None:
    cmds = _train_commands(tmp_path, size)
    for stage in ("vae_baseline_train", "dipvae_train"):
        assert float(_value(cmds[stage], "tumour_weight")) == expected
        assert _value(cmds[stage], "tumour_weight_mode") == "voxel"  # the recorded demo runs weighted per voxel


def test_command_line_tumour_weight_reaches_both_encoders(tmp_path: Path) -> None:
    cmds = _train_commands(tmp_path, "cpu", tumour_weight=7)
    assert _value(cmds["vae_baseline_train"], "tumour_weight") == "7"
    assert _value(cmds["dipvae_train"], "tumour_weight") == "7"


def _resolved(files: list[str], key: str = "tumour_weight", **cli: object) -> object:
    parser = ConfigParser()
    parser.read_config([str(REPO / "bundles" / f) for f in files])
    parser.update(cli)
    value = parser.get_parsed_content(key)
    return float(value) if key == "tumour_weight" else value


def test_tumour_weight_defaults_and_layering() -> None:
    # 0.5.0: W = 10 balanced over scans (run I10, bundles/vae_baseline/docs; 0.4.x: W = 5 per voxel)
    assert _resolved(["vae_baseline/configs/train.json"]) == 10.0
    assert _resolved(["vae_baseline/configs/train.json"], key="tumour_weight_mode") == "balanced"
    assert _resolved(["dipvae/configs/train.json"], key="tumour_weight_mode") == "voxel"
    assert _resolved(["dipvae/configs/train.json"]) == 1.0
    assert _resolved(["dipvae/configs/train.json", "dipvae/configs/exp3.json"]) == 20.0
    assert _resolved(["dipvae/configs/train.json", "dipvae/configs/exp3.json"], tumour_weight=1.0) == 1.0
