"""Bad input at the command line and in the metrics: refused before running, or scored as undefined."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from custom.__main__ import main
from custom.cli import datalist as datalist_command
from custom.cli_args import UsageError, check_arguments


def test_mistyped_option_is_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cohort"
    code = main(["synth", "--out", str(out), "--subject", "3"])
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.splitlines()[0] == (
        "error: python -m custom synth: unknown option --subject (did you mean --subjects?); valid options: "
        "--out, --subjects, --timepoints, --seed, --spacing, --workers, --growth, --schedule, --biomarkers, --table_only, "
        "--or_no_calcification, --or_edema, --or_t2_iso_hyper, --rapid_share; nothing was run"
    )
    assert "capitalize" not in err and "Traceback" not in err


def test_surplus_values_are_refused_before_anything_runs(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(["show", "d", "s", "o.png", "dl.json", "surplus"])
    err = capsys.readouterr().err
    assert code == 2 and "too many values ('surplus' left over after data_dir, subject, out, datalist)" in err


def test_valid_spellings_are_accepted() -> None:
    for args in (
        ["--data_dir", "d", "--out", "o", "--skip-invalid"],
        ["d", "o", "--skip_invalid=true", "--norequire_seg"],
        ["--help"],
    ):
        check_arguments("datalist", datalist_command, args)
    with pytest.raises(UsageError, match="unknown option --skip_invalids"):
        check_arguments("datalist", datalist_command, ["d", "o", "--skip_invalids"])


def test_dci_constant_factor_is_undefined_not_informative() -> None:
    from custom.metrics.dci import dci

    rng = np.random.default_rng(0)
    mu = rng.normal(size=(60, 4))
    informative = 2.0 * mu[:, 0] + 0.01 * rng.normal(size=60)
    constant = np.full(60, 3.0)
    split = (np.arange(40), np.arange(40, 60))
    out = dci(mu, np.stack([informative, constant], 1), ["vol", "const"], split=split, lasso_alpha=0.01)
    assert np.isnan(out["informativeness_per_factor"]["const"])
    assert out["informativeness_per_factor"]["vol"] > 0.99
    assert out["informativeness"] == out["informativeness_per_factor"]["vol"]  # the constant is left out of the mean
    assert np.all(np.asarray(out["importance"])[:, 1] == 0.0)


def test_gompertz_volume_tensor_times_with_float_parameters() -> None:
    from custom.ode.gompertz import gompertz_volume

    t = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    got = gompertz_volume(t, 2.0, 0.5, 10.0)
    expected = [10.0 * np.exp(np.log(0.2) * np.exp(-0.5 * x)) for x in (0.0, 1.0, 2.0)]  # V(t) = K exp(ln(V0/K) e^-at)
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float64
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)
    assert abs(float(got[0]) - 2.0) < 1e-12
