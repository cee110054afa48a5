"""Bad-data corpus through the bundle entry points (the data layer's own unit tests are in test_data_validation.py).

Each case copies the tiny cohort, breaks one thing, and runs a real entry point in-process through
``monai.bundle.run`` (the function behind ``python -m monai.bundle run``) or ``python -m custom datalist``:

* training, building the datalist from the folder (``prepare_data``): every corpus case;
* evaluation (``train.json`` + ``evaluate.json``) and inference (``inference.json``) on an existing datalist
  whose files were broken afterwards: the file-level cases.

Expected for each: a :class:`custom.data.errors.UserFacingError` in the raised chain whose message names the
broken file (or case/subject) and the problem, so the user never has only a library traceback; and no input
file changed (content hash, mode, link target of every entry).
"""

from __future__ import annotations

import builtins
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO

from custom.data.errors import UserFacingError

BUNDLE = REPO / "bundles" / "vae_baseline" / "configs"
SMALL = {
    "spatial_size": [32, 32, 32],
    "spacing": 7.5,
    "z_dim": 16,
    "amp": False,
    "num_workers": 1,
    "cache": "none",
    "epochs": 1,
    "val_interval": 100,
}


# ----------------------------------------------------------------------------------------------- helpers
def _snapshot(root: Path) -> dict[str, tuple]:
    state: dict[str, tuple] = {}
    for dirpath, _, names in os.walk(root):
        for name in names:
            p = Path(dirpath) / name
            if p.is_symlink():
                state[str(p)] = ("link", os.readlink(p))
            else:
                state[str(p)] = (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mode)
    return state


def _chain(err: BaseException) -> list[BaseException]:
    out, seen = [], set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _user_message(err: BaseException) -> str:
    clean = [e for e in _chain(err) if isinstance(e, UserFacingError)]
    assert clean, "only library errors: " + " | ".join(f"{type(e).__name__}: {e}" for e in _chain(err))[:3000]
    return str(clean[0])


def _file(root: Path, cid: str, kind: str) -> Path:
    return root / cid / f"{cid}-{kind}.nii.gz"


def _rewrite(path: Path, data: np.ndarray, affine: np.ndarray | None = None) -> None:
    img = nib.load(str(path))
    path.unlink()
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))


@pytest.fixture()
def cohort(tiny_cohort: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "data"
    shutil.copytree(tiny_cohort, dst)
    return dst


def _case(cohort: Path, split: str) -> str:
    return json.loads((cohort / "datalist.json").read_text())[split][0]["case_id"]


# ------------------------------------------------------------------------------------------- the corpus
def _truncated(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t1c")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p, "truncated"


def _wrong_dims(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t1n")
    _rewrite(p, np.asarray(nib.load(str(p)).dataobj)[:-3])
    return p, "differs from"


def _two_d(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t2f")
    _rewrite(p, np.asarray(nib.load(str(p)).dataobj)[:, :, 5])
    return p, "3d"


def _four_d(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t2w")
    vol = np.asarray(nib.load(str(p)).dataobj)
    _rewrite(p, np.stack([vol, vol], axis=-1))
    return p, "3d"


def _affine(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t1n")
    img = nib.load(str(p))
    shifted = img.affine.copy()
    shifted[0, 3] += 5.0
    _rewrite(p, np.asarray(img.dataobj), shifted)
    return p, "affine"


def _nan(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t1c")
    vol = np.asarray(nib.load(str(p)).dataobj, dtype=np.float32).copy()
    vol[5, 5, 5] = np.nan
    _rewrite(p, vol)
    return p, "non-finite"


def _zeros(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t2f")
    _rewrite(p, np.zeros(nib.load(str(p)).shape, np.float32))
    return p, "all zeros"


def _labels(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "seg")
    seg = np.asarray(nib.load(str(p)).dataobj).astype(np.uint8)
    seg[0, 0, 0] = 7
    _rewrite(p, seg)
    return p, "labels outside"


def _loop(root: Path, cid: str) -> tuple[Path, str]:
    p = _file(root, cid, "t1c")
    p.unlink()
    os.symlink(p.name, p)  # points to itself
    return p, "link"


FILE_CASES: dict[str, Callable[[Path, str], tuple[Path, str]]] = {
    "truncated_gz": _truncated,
    "wrong_dimensions": _wrong_dims,
    "image_2d": _two_d,
    "image_4d": _four_d,
    "mismatched_affine": _affine,
    "nan_voxels": _nan,
    "all_zero": _zeros,
    "symlink_loop": _loop,
}
IMAGE_CASES = FILE_CASES  # every file case breaks an image channel, so inference sees it too


def _refuse_reading(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """chmod 000, and as root (which bypasses permission bits) make ``open`` refuse like the kernel would."""
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
        real_open = builtins.open

        def refusing(file, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
            if isinstance(file, (str, os.PathLike)) and os.fspath(file) == os.fspath(path):
                raise PermissionError(13, "Permission denied", os.fspath(file))
            return real_open(file, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", refusing)
        monkeypatch.setattr(os, "access", lambda p, mode, *a, **k: os.fspath(p) != os.fspath(path))


# ------------------------------------------------------------------------------------------- entry points
def _train(cohort: Path, tmp: Path, **extra: object) -> None:
    from monai.bundle import run

    run(
        "training",
        config_file=str(BUNDLE / "train.json"),
        dataset_dir=str(cohort),
        datalist=str(tmp / "built" / "datalist.json"),
        output_dir=str(tmp / "run"),
        ckpt_dir=str(tmp / "models"),
        **SMALL,
        **extra,
    )


def _evaluate(cohort: Path, tmp: Path) -> None:
    from monai.bundle import run

    run(
        config_file=[str(BUNDLE / "train.json"), str(BUNDLE / "evaluate.json")],
        dataset_dir=str(cohort),
        datalist=str(cohort / "datalist.json"),
        output_dir=str(tmp / "run"),
        ckpt_dir=str(tmp / "models"),
        eval_split="test",
        **SMALL,
    )


def _infer(cohort: Path, tmp: Path) -> None:
    from monai.bundle import run

    run(
        config_file=str(BUNDLE / "inference.json"),
        datalist=str(cohort / "datalist.json"),
        output_dir=str(tmp / "infer"),
        ckpt_dir=str(tmp / "models"),
        spatial_size=[32, 32, 32],
        spacing=7.5,
        z_dim=16,
        amp=False,
    )


def _expect_clean_error(entry: Callable[[], None], cohort: Path, needle: str, *words: str) -> str:
    before = _snapshot(cohort)
    with pytest.raises(Exception) as info:
        entry()
    message = _user_message(info.value)
    assert needle in message, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    assert _snapshot(cohort) == before, "an input file was modified"
    return message


# ------------------------------------------------------------------------------------------------ tests
@pytest.mark.parametrize("name", sorted(FILE_CASES))
def test_training_refuses_broken_file(name: str, cohort: Path, tmp_path: Path) -> None:
    path, word = FILE_CASES[name](cohort, _case(cohort, "training"))
    _expect_clean_error(lambda: _train(cohort, tmp_path), cohort, str(path), word)


def test_training_refuses_wrong_label_values(cohort: Path, tmp_path: Path) -> None:
    path, word = _labels(cohort, _case(cohort, "training"))
    _expect_clean_error(lambda: _train(cohort, tmp_path), cohort, str(path), word)


def test_training_refuses_unreadable_file(cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _file(cohort, _case(cohort, "training"), "t2w")
    mode = path.stat().st_mode
    _refuse_reading(monkeypatch, path)
    try:
        with pytest.raises(Exception) as info:
            _train(cohort, tmp_path)
    finally:
        monkeypatch.undo()
        os.chmod(path, mode)
    message = _user_message(info.value)
    assert str(path) in message and "permission denied" in message.lower()


def test_training_refuses_duplicated_case_ids(cohort: Path, tmp_path: Path) -> None:
    cid = _case(cohort, "training")
    shutil.copytree(cohort / cid, cohort / "copy" / cid)
    _expect_clean_error(lambda: _train(cohort, tmp_path), cohort, str(cohort / "copy" / cid), cid)


def test_training_refuses_times_csv_with_missing_time(cohort: Path, tmp_path: Path) -> None:
    rows = json.loads((cohort / "datalist.json").read_text())
    items = [i for s in ("training", "validation", "test") for i in rows[s]]
    lines = [f"{i['subject_id']},{i['timepoint']},{0.5 * i['timepoint']}" for i in items[1:]]
    (cohort / "times.csv").write_text("subject_id,timepoint,time_years\n" + "\n".join(lines) + "\n")
    _expect_clean_error(lambda: _train(cohort, tmp_path), cohort, items[0]["case_id"], "time")


def test_training_refuses_non_monotonic_times(cohort: Path, tmp_path: Path) -> None:
    rows = json.loads((cohort / "datalist.json").read_text())
    items = [i for s in ("training", "validation", "test") for i in rows[s]]
    subject = items[0]["subject_id"]
    lines = [
        f"{i['subject_id']},{i['timepoint']},{(-1.0 if i['subject_id'] == subject else 1.0) * i['timepoint']}"
        for i in items
    ]
    (cohort / "times.csv").write_text("subject_id,timepoint,time_years\n" + "\n".join(lines) + "\n")
    _expect_clean_error(lambda: _train(cohort, tmp_path), cohort, subject)


def test_datalist_cli_refuses_missing_seg_when_required(
    cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from custom.__main__ import main

    cid = _case(cohort, "training")
    seg = _file(cohort, cid, "seg")
    seg.unlink()
    before = _snapshot(cohort)
    code = main(["datalist", str(cohort), "--out", str(tmp_path / "dl.json"), "--require_seg", "true"])
    err = capsys.readouterr().err
    assert code == 2 and cid in err and "missing segmentation" in err and "Traceback" not in err
    assert _snapshot(cohort) == before


def test_training_skips_and_reports_when_asked(cohort: Path, tmp_path: Path) -> None:
    """``skip_invalid`` on an existing datalist: the bundle's dataset drops the case and lists it in a CSV."""
    from monai.bundle import ConfigParser

    cid = _case(cohort, "training")
    path, _ = _nan(cohort, cid)
    before = _snapshot(cohort)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "train.json"))
    parser.update(
        {
            "dataset_dir": str(cohort),
            "datalist": str(cohort / "datalist.json"),
            "skip_invalid": True,
            "output_dir": str(tmp_path / "run"),
            **SMALL,
        }
    )
    dataset = parser.get_parsed_content("train#dataset")
    n_train = len(json.loads((cohort / "datalist.json").read_text())["training"])
    assert len(dataset) == n_train - 1
    assert cid not in {item["case_id"] for item in dataset.data}
    report = (tmp_path / "run" / "skipped_training.csv").read_text()  # the output dir, never the data folder
    assert cid in report and str(path) in report and "non-finite" in report
    assert _snapshot(cohort) == before


@pytest.mark.parametrize("name", ["truncated_gz", "nan_voxels", "mismatched_affine", "image_2d"])
def test_evaluate_refuses_broken_file(name: str, cohort: Path, tmp_path: Path) -> None:
    path, word = FILE_CASES[name](cohort, _case(cohort, "test"))
    _expect_clean_error(lambda: _evaluate(cohort, tmp_path), cohort, str(path), word)


@pytest.fixture()
def with_weights(tmp_path: Path) -> Path:
    """Untrained weights of the 32^3 network: the refusals happen before the network runs."""
    import torch

    from custom.networks import ResNetVAE

    models = tmp_path / "models"
    models.mkdir()
    torch.save(
        ResNetVAE(in_channels=4, out_channels=4, spatial_size=[32, 32, 32], z_dim=16).state_dict(), models / "model.pt"
    )
    return models


@pytest.mark.parametrize("name", sorted(IMAGE_CASES))
def test_inference_refuses_broken_input(name: str, cohort: Path, tmp_path: Path, with_weights: Path) -> None:
    path, word = IMAGE_CASES[name](cohort, _case(cohort, "test"))
    if name == "symlink_loop":  # the datalist reader's existence check meets the loop first: "does not exist"
        word = "exist"
    _expect_clean_error(lambda: _infer(cohort, tmp_path), cohort, str(path), word)


def test_inference_refuses_wrong_channel_count(cohort: Path, tmp_path: Path, with_weights: Path) -> None:
    dl = json.loads((cohort / "datalist.json").read_text())
    dl["test"] = [dict(dl["test"][0], image=dl["test"][0]["image"][:3])]
    (cohort / "datalist.json").write_text(json.dumps(dl))
    message = _expect_clean_error(lambda: _infer(cohort, tmp_path), cohort, dl["test"][0]["case_id"], "expected 4")
    assert "t1c" in message and "t2w" in message


def test_datalist_building_skips_and_reports_when_asked(cohort: Path, tmp_path: Path) -> None:
    """``prepare_data`` with ``skip_invalid``: the built datalist leaves the bad case out and lists it."""
    from monai.bundle import ConfigParser

    cid = _case(cohort, "training")
    path, _ = _zeros(cohort, cid)
    before = _snapshot(cohort)
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "train.json"))
    built = tmp_path / "built" / "datalist.json"
    parser.update({"dataset_dir": str(cohort), "datalist": str(built), "prepare_data#skip_invalid": True, **SMALL})
    assert parser.get_parsed_content("prepare_data") == str(built)
    listed = {i["case_id"] for s in ("training", "validation", "test") for i in json.loads(built.read_text())[s]}
    assert cid not in listed and len(listed) == 17
    report = (built.parent / "skipped_datalist.csv").read_text()
    assert cid in report and str(path) in report and "all zeros" in report
    assert _snapshot(cohort) == before
