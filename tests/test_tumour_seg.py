"""tumour_seg: its DiceCE term and tumour measurements against hand computations, and a 32^3 training -> inference
-> evaluation run whose masks, volume table and scores are checked against files read back with nibabel."""

from __future__ import annotations

import json
import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO
from monai.bundle import ConfigParser
from monai.metrics import DiceMetric

from custom.seg.measure import tumour_measurements
from custom.seg.regions import TumourRegionsd

BUNDLE = REPO / "bundles" / "tumour_seg" / "configs"
SPLITS = ["validation", "test"]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_dice_ce_term_of_train_json_by_hand() -> None:
    """L = w_dice (1 - mean_{c=1..3} (2 sum p g + eps) / (sum p + sum g + eps)) + w_ce mean_voxels(-ln p_target),
    sums over batch and voxels (dice_batch), background out of the Dice (dice_include_background false)."""
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "train.json"))
    parser["dice_weight"], parser["ce_weight"] = 0.7, 0.3
    loss = parser.get_parsed_content("loss")
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 4, 3, 2, 1))
    target = rng.integers(0, 4, size=(2, 1, 3, 2, 1))
    p = _softmax(logits)
    g = np.stack([(target[:, 0] == c) for c in range(4)], axis=1).astype(float)
    eps = 1e-5
    dice = [1 - (2 * (p[:, c] * g[:, c]).sum() + eps) / (p[:, c].sum() + g[:, c].sum() + eps) for c in (1, 2, 3)]
    ce = -np.mean(np.log(np.take_along_axis(p, target, axis=1)))
    expected = 0.7 * np.mean(dice) + 0.3 * ce
    got = loss(torch.tensor(logits), torch.tensor(target, dtype=torch.uint8))
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_volume_and_centroid_against_numpy_with_a_known_affine() -> None:
    """Tumour = labels 1 + 3 (edema, 2, is left out); V = n |det A|, centroid = mean world position of the voxels."""
    seg = np.zeros((6, 5, 4), dtype=np.uint8)
    seg[1:3, 1:4, 1] = 1  # 6 voxels
    seg[3, 2, 1:3] = 3  # 2 voxels
    seg[4, 0:5, 3] = 2  # edema, 5 voxels
    affine = np.array([[-2.0, 0, 0, 30.0], [0, 3.0, 0, -10.0], [0, 0, 1.5, 5.0], [0, 0, 0, 1]])
    m = tumour_measurements(seg[None], torch.tensor(affine))
    ijk = np.argwhere((seg == 1) | (seg == 3))
    world = np.c_[ijk, np.ones(len(ijk))] @ affine.T
    assert m["volume_mm3"] == pytest.approx(8 * 2.0 * 3.0 * 1.5)
    assert m["volume_ml"] == pytest.approx(8 * 9.0 / 1000.0)
    assert m["log_volume"] == pytest.approx(math.log(0.072))
    np.testing.assert_allclose([m["centroid_x"], m["centroid_y"], m["centroid_z"]], world[:, :3].mean(0))
    empty = tumour_measurements(np.where(seg == 2, 2, 0), affine)
    assert empty["volume_ml"] == 0.0 and math.isnan(empty["log_volume"]) and math.isnan(empty["centroid_x"])


def test_region_masks_give_monai_dice_of_the_hand_counted_overlap() -> None:
    pred = torch.zeros(1, 4, 4, 4)
    label = torch.zeros(1, 4, 4, 4)
    pred[0, :2, :2, :2] = 3  # 8 voxels tumour
    pred[0, 3, 3, 3] = 2  # 1 voxel edema
    label[0, :2, :2, :1] = 1  # 4 voxels tumour, inside pred's
    label[0, 3, 3, :] = 2  # 4 voxels edema, one shared
    d = TumourRegionsd(keys=["pred", "label"])({"pred": pred, "label": label})
    metric = DiceMetric(include_background=True)
    assert float(metric(d["pred_tumour"][None], d["label_tumour"][None])) == pytest.approx(2 * 4 / (8 + 4))
    assert float(metric(d["pred_whole"][None], d["label_whole"][None])) == pytest.approx(2 * 5 / (9 + 8))


@pytest.fixture(scope="module")
def tiny_run(tiny_cohort, tmp_path_factory) -> dict:
    """2 epochs at 32^3 on 4 training scans of the tiny cohort, then inference on every held-out scan and evaluation
    on the test split (in-process ``monai.bundle.run``, as ``python -m monai.bundle run`` does)."""
    from monai.bundle import run

    out = tmp_path_factory.mktemp("seg")
    common = {"dataset_dir": str(tiny_cohort), "ckpt_dir": str(out / "models")}
    run(
        "training", config_file=str(BUNDLE / "train.json"), output_dir=str(out / "train"), epochs=2, val_interval=1,
        init_filters=8, spatial_size=[32, 32, 32], spacing=7.5, num_workers=1, amp=False, limit_cases=4, **common,
    )  # fmt: skip
    run(config_file=str(BUNDLE / "inference.json"), output_dir=str(out / "infer"), infer_splits=SPLITS, **common)
    configs = [str(BUNDLE / "inference.json"), str(BUNDLE / "evaluate.json")]
    run(config_file=configs, output_dir=str(out / "eval"), **common)
    return {"out": out, "cohort": tiny_cohort}


def test_training_leaves_checkpoints_and_the_model_config(tiny_run) -> None:
    out = tiny_run["out"]
    assert (out / "models" / "model.pt").is_file() and (out / "train" / "checkpoints" / "last.pt").is_file()
    config = json.loads((out / "models" / "model_config.json").read_text())
    assert config["spatial_size"] == [32, 32, 32] and config["init_filters"] == 8


def test_masks_are_in_the_input_geometry_and_the_table_measures_them(tiny_run) -> None:
    out, cohort = tiny_run["out"], tiny_run["cohort"]
    table = pd.read_csv(out / "infer" / "seg_volumes.csv", dtype={"case_id": str})
    listed = json.loads((cohort / "datalist.json").read_text())
    cases = [it["case_id"] for s in SPLITS for it in listed[s]]
    assert sorted(table["case_id"]) == sorted(cases)
    for _, row in table.iterrows():
        mask = nib.load(row["mask_file"])
        t1c = nib.load(cohort / row["case_id"] / f"{row['case_id']}-t1c.nii.gz")
        assert mask.shape == t1c.shape
        np.testing.assert_allclose(mask.affine, t1c.affine, atol=1e-5)
        data = np.asarray(mask.dataobj)
        assert set(np.unique(data)) <= {0, 1, 2, 3}
        n = int(np.isin(data, (1, 3)).sum())
        vox_mm3 = abs(np.linalg.det(t1c.affine[:3, :3]))
        assert row["volume_mm3"] == pytest.approx(n * vox_mm3)
        if n:
            assert row["log_volume"] == pytest.approx(math.log(n * vox_mm3 / 1000.0))
            ijk = np.argwhere(np.isin(data, (1, 3)))
            centre = (np.c_[ijk, np.ones(n)] @ t1c.affine.T)[:, :3].mean(0)
            np.testing.assert_allclose(row[["centroid_x", "centroid_y", "centroid_z"]].to_numpy(float), centre)


def test_evaluation_scores_against_the_reference_masks(tiny_run) -> None:
    out = tiny_run["out"]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    table = pd.read_csv(out / "eval" / "seg_volumes.csv", dtype={"case_id": str})
    assert set(table["split"]) == {"test"} and metrics["n_scans"] == len(table)
    ref = []
    for f in table["reference_seg"]:
        img = nib.load(f)
        ref.append(np.isin(np.asarray(img.dataobj), (1, 3)).sum() * abs(np.linalg.det(img.affine[:3, :3])) / 1000)
    ref, pred = np.asarray(ref), table["volume_ml"].to_numpy(float)
    both = (ref > 0) & (pred > 0)
    assert metrics["n_empty"] == int((~both).sum())
    if both.any():
        rmse = np.sqrt(np.mean((np.log(pred[both]) - np.log(ref[both])) ** 2))
        assert metrics["log_volume_rmse"] == pytest.approx(rmse)
    assert 0.0 <= metrics["dice_whole"] <= 1.0 and 0.0 <= metrics["dice_tumour"] <= 1.0


def test_training_refuses_a_datalist_with_an_unsegmented_training_case(tiny_cohort, tmp_path) -> None:
    from custom.data.errors import DataValidationError
    from custom.seg.data import check_labels

    listed = json.loads((tiny_cohort / "datalist.json").read_text())
    case = listed["training"][0]
    case.pop("label")
    bad = tmp_path / "datalist.json"
    bad.write_text(json.dumps(listed))
    for it in listed["training"] + listed["validation"] + listed["test"]:  # paths relative to the cohort
        it["image"] = [str(tiny_cohort / p) for p in it["image"]]
        if "label" in it:
            it["label"] = str(tiny_cohort / it["label"])
    bad.write_text(json.dumps(listed))
    with pytest.raises(DataValidationError, match=case["case_id"]):
        check_labels(str(bad))
