"""Forecast masks and images (custom.forecast_mask): no change reproduces the last scan, a ball grows to the right
radius, the ranked mask has the forecast voxel count, and the scores agree with MONAI's functions and with numbers computed by hand.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage as ndi

from custom.forecast_mask.images import anchored_image
from custom.forecast_mask.level_set import forecast_mask, signed_distance, tumour_mask
from custom.forecast_mask.metrics import (
    centroid_error_mm,
    dice,
    hd95_mm,
    image_scores,
    mask_scores,
    relative_volume_difference,
    tumour_box,
)


def _ball(shape: tuple[int, int, int], centre_mm: np.ndarray, radius_mm: float, spacing) -> np.ndarray:
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    return np.linalg.norm(grid - centre_mm, axis=-1) <= radius_mm


METHODS = [("level_set", "smooth"), ("ranked", "smooth"), ("ranked", "centroid")]


def _blob(rng: np.random.Generator, spacing) -> np.ndarray:
    m = np.zeros((20, 18, 12), bool)
    for _ in range(3):  # a lobulated blob with holes and corners
        c = rng.uniform(4, 10, 3)
        m |= _ball(m.shape, c * np.asarray(spacing), rng.uniform(2, 5), spacing)
    m[rng.integers(0, 20, 4), rng.integers(0, 18, 4), rng.integers(0, 12, 4)] ^= True
    return m


@pytest.mark.parametrize("method, tie", METHODS)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9, 1.1, 2.5)])
def test_no_change_returns_the_last_mask_exactly(spacing: tuple[float, float, float], method: str, tie: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        m = _blob(rng, spacing)
        v_ml = m.sum() * np.prod(spacing) / 1000.0
        out = forecast_mask(m, v_ml, spacing, method=method, tie_break=tie)
        assert out.dtype == bool and np.array_equal(out, m)


@pytest.mark.parametrize("tie", ["smooth", "centroid"])
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9, 1.1, 2.5)])
def test_ranked_mask_has_the_forecast_voxel_count_nested_and_connected(spacing, tie: str) -> None:
    rng = np.random.default_rng(1)
    v_mm3 = float(np.prod(spacing))
    for _ in range(4):
        m = _blob(rng, spacing)
        lab, _ = ndi.label(m, np.ones((3, 3, 3)))
        m = lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))  # its largest 26-connected component
        outs = []
        for factor in (0.3, 0.8, 0.97, 1.02, 1.3, 2.5):
            n = int(round(factor * m.sum()))
            target_ml = (n + rng.uniform(-0.45, 0.45)) * v_mm3 / 1000.0  # not a whole voxel count
            out = forecast_mask(m, target_ml, spacing, method="ranked", tie_break=tie)
            assert out.sum() == n  # within half a voxel of the target volume
            assert (out >= m).all() if factor > 1 else (out <= m).all()
            if factor > 1:
                assert ndi.label(out, np.ones((3, 3, 3)))[1] == 1  # grown from the last mask, one component
            outs.append(out)
        for small, large in zip(outs, outs[1:]):
            assert (large >= small).all()  # nested in the volume


@pytest.mark.parametrize("tie", ["smooth", "centroid"])
def test_ranked_mask_fills_the_concave_side_first(tie: str) -> None:
    # an L of three voxels in the plane z = 5 (corner (5, 5, 5), arms (6, 5, 5) and (5, 6, 5)); all 13 of its face
    # neighbours lie 1 voxel away. By hand, with g(r^2) = exp(-r^2 / 2) (the Gaussian of sigma 1 voxel), the
    # concave corner (6, 6, 5) has the smoothed mask 2 g(1) + g(2) = 1.58 and centroid distance 0.943 voxels (the
    # centroid is (16/3, 16/3, 5)), then (5, 5, 4) and (5, 5, 6) have g(1) + 2 g(2) = 1.34 and 1.105 voxels; every
    # other face neighbour has less (e.g. (6, 5, 4): 1.20 and 1.25 voxels). So three more voxels are those three.
    m = np.zeros((11, 11, 11), bool)
    m[5, 5, 5] = m[6, 5, 5] = m[5, 6, 5] = True
    out = forecast_mask(m, 6e-3, (1.0, 1.0, 1.0), method="ranked", tie_break=tie)
    expected = m.copy()
    expected[6, 6, 5] = expected[5, 5, 4] = expected[5, 5, 6] = True
    assert np.array_equal(out, expected)
    # the level set cannot add three voxels: its nearest counts are the L (3) or the L and its shell (16)
    assert forecast_mask(m, 6e-3, (1.0, 1.0, 1.0), method="level_set").sum() == 3


def test_unknown_mask_method_or_tie_break_is_a_clear_error() -> None:
    m = np.zeros((5, 5, 5), bool)
    m[2, 2, 2] = True
    with pytest.raises(ValueError, match="unknown forecast-mask method"):
        forecast_mask(m, 1e-3, (1.0, 1.0, 1.0), method="levelset")
    with pytest.raises(ValueError, match="unknown tie-break"):
        forecast_mask(m, 5e-3, (1.0, 1.0, 1.0), tie_break="random")


def test_no_change_returns_the_last_image_exactly() -> None:
    x_last = torch.randn(4, 9, 8, 7) * 300 + 800
    decoded = torch.randn(4, 9, 8, 7)
    assert torch.equal(anchored_image(x_last, decoded.clone(), decoded), x_last)
    change = torch.zeros_like(decoded)
    change[0, 3, 3, 3] = 2.0
    assert float((anchored_image(x_last, decoded + change, decoded) - x_last)[0, 3, 3, 3]) == pytest.approx(2.0)


@pytest.mark.parametrize("method, tie", METHODS)
@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 1.0, 2.0)])
@pytest.mark.parametrize("r0, r1", [(5.0, 9.0), (9.0, 5.0)])
def test_a_ball_grows_or_shrinks_to_the_radius_of_its_volume(spacing, r0: float, r1: float, method, tie) -> None:
    shape = tuple(int(round(40 / s)) + 1 for s in spacing)
    centre = np.array([20.0, 20.0, 20.0])
    start = _ball(shape, centre, r0, spacing)
    out = forecast_mask(start, 4.0 / 3.0 * math.pi * r1**3 / 1000.0, spacing, method=method, tie_break=tie)
    voxel_mm3 = float(np.prod(spacing))
    expected = _ball(shape, centre, r1, spacing)  # the voxelised ball of the target radius, built independently
    # volume within one voxel layer of the sphere (4 pi r^2 x the largest voxel side) of the exact ball volume
    layer = 4 * math.pi * r1**2 * max(spacing)
    assert abs(out.sum() * voxel_mm3 - 4.0 / 3.0 * math.pi * r1**3) < layer
    # radius within one voxel: every forecast voxel within r1 + one voxel side, every voxel of radius
    # r1 - one side inside the forecast
    grid = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1)
    r = np.linalg.norm(grid - centre, axis=-1)
    assert r[out].max() <= r1 + max(spacing) + 1e-9
    assert out[r <= r1 - max(spacing)].all()
    assert np.count_nonzero(out ^ expected) < layer / voxel_mm3


def test_signed_distance_is_negative_inside_positive_outside_in_mm() -> None:
    m = np.zeros((7, 7, 7), bool)
    m[2:5, 2:5, 2:5] = True
    d = signed_distance(m, (2.0, 2.0, 2.0))
    assert d[3, 3, 3] == pytest.approx(-4.0)  # two voxels of 2 mm to the nearest outside voxel
    assert d[0, 3, 3] == pytest.approx(4.0) and d[5, 3, 3] == pytest.approx(2.0)
    assert (d[m] < 0).all() and (d[~m] > 0).all()


def test_empty_last_mask_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="empty"):
        forecast_mask(np.zeros((5, 5, 5), bool), 1.0, (1.0, 1.0, 1.0))


def test_tumour_mask_keeps_the_tumour_labels_not_edema() -> None:
    seg = np.array([0, 1, 2, 3])
    assert tumour_mask(seg).tolist() == [False, True, False, True]


def test_mask_scores_against_monai_and_hand_numbers() -> None:
    a = np.zeros((10, 10, 10), bool)
    a[2:5, 2:5, 2:5] = True  # 27 voxels
    b = np.zeros_like(a)
    b[3:6, 2:5, 2:4] = True  # 18 voxels; overlap x 3:5, y 2:5, z 2:4 = 2 x 3 x 2 = 12
    assert dice(a, b) == pytest.approx(2 * 12 / (27 + 18))
    ta, tb = (torch.as_tensor(v, dtype=torch.float32)[None, None] for v in (a, b))
    assert dice(a, b) == pytest.approx(float(compute_dice(ta, tb, include_background=True)))
    spacing = np.array([1.0, 1.5, 2.0])
    monai_hd = compute_hausdorff_distance(ta, tb, include_background=True, percentile=95, spacing=spacing.tolist())
    assert hd95_mm(a, b, spacing) == pytest.approx(float(monai_hd))
    p, t = np.zeros_like(a), np.zeros_like(a)
    p[2, 2, 2], t[2, 2, 5] = True, True
    assert hd95_mm(p, t, spacing) == pytest.approx(6.0)  # 3 voxels along z at 2 mm
    assert relative_volume_difference(a, b) == pytest.approx((27 - 18) / 18)
    affine = np.array([[0, -1.5, 0, 10], [1.0, 0, 0, -4], [0, 0, 2.0, 7], [0, 0, 0, 1]])
    # centroids (voxel index): a (3, 3, 3), b (4, 3, 2.5); world: x = -1.5 j + 10, y = i - 4, z = 2 k + 7
    # a -> (5.5, -1, 13), b -> (5.5, 0, 12): distance sqrt(0 + 1 + 1)
    assert centroid_error_mm(a, b, affine) == pytest.approx(math.sqrt(2.0))
    s = mask_scores(a, b, np.diag([1.0, 1.5, 2.0, 1.0]))
    assert s["abs_rvd"] == pytest.approx(0.5) and s["dice"] == pytest.approx(24 / 45)
    assert math.isnan(hd95_mm(np.zeros_like(a), b, spacing))


def test_image_scores_psnr_by_hand_and_ssim_of_identical_images() -> None:
    g = torch.Generator().manual_seed(0)
    y = torch.rand(2, 12, 12, 12, generator=g) * 4.0 - 1.0
    region = np.zeros((12, 12, 12), bool)
    region[5:7, 5:7, 5:7] = True
    box = tumour_box(region, margin=3)
    assert box == (slice(2, 10),) * 3
    rng = float(y[(slice(None), *box)].max() - y[(slice(None), *box)].min())
    s = image_scores(y + 0.1, y, box)
    assert s["psnr"] == pytest.approx(20 * math.log10(rng / 0.1), rel=1e-5)
    assert image_scores(y, y, box)["ssim"] == pytest.approx(1.0, abs=1e-6)
    noise = torch.randn(y.shape, generator=g)
    weak, strong = (image_scores(y + a * noise, y, box)["ssim"] for a in (0.2, 1.0))
    assert strong < weak < 0.99


def test_mask_report_states_growers_rvd_interval_and_mean_volume_gap(tmp_path) -> None:
    import pandas as pd

    from custom.forecast_mask.score import summarise, write_mask_report

    # four subjects, one target scan each: two growers (RVD forecast -0.1 / 0.0, copy-last -0.4 / -0.3) and two
    # stable; by hand the growers' mean RVD difference is (0.3 + 0.3) / 2 = 0.300, |RVD| (-0.3 - 0.3) / 2 = -0.300,
    # Dice (0.1 + 0.2) / 2 = 0.150; mean volume gaps 0.010 (growers) and (0.01 + 0.01 + 0.03 + 0.05) / 4 = 0.025
    rows = []
    for sid, cls, rf, rc, df, dc, gap in [
        ("a", "grower", -0.1, -0.4, 0.8, 0.7, 0.01),
        ("b", "grower", 0.0, -0.3, 0.9, 0.7, 0.01),
        ("c", "plateau", 0.05, 0.0, 0.95, 1.0, 0.03),
        ("d", "plateau", -0.05, 0.0, 0.9, 1.0, 0.05),
    ]:
        row = {"method": "latent_ode_hybrid", "mask_method": "ranked", "k_obs": 2, "subject_id": sid}
        row |= {"growth_class": cls, "t_last_obs": 1.0, "time_years": 2.0, "volume_ml": 2.0 if cls == "grower" else 1.0}
        row |= {"last_obs_volume_ml": 1.0, "mask_volume_fidelity": gap}
        for name, r, d in (("forecast", rf, df), ("copy_last", rc, dc), ("oracle_volume", 0.0, 0.95)):
            row |= {f"{name}_rvd": r, f"{name}_abs_rvd": abs(r), f"{name}_dice": d}
            row |= {f"{name}_hd95_mm": 1.0, f"{name}_centroid_err_mm": 1.0}
        rows.append(row)
    scores = pd.DataFrame(rows)
    text = Path(write_mask_report(scores, summarise(scores, n_boot=200), tmp_path)["report"]).read_text()
    line = next(s for s in text.splitlines() if s.startswith("- latent_ode_hybrid, k = 2: growers"))
    assert "dice 0.150 [" in line and "abs_rvd -0.300 [-0.300, -0.300]" in line and "rvd 0.300 [0.300, 0.300]" in line
    assert "mean volume gap all 0.025, growers 0.010" in line
    assert "exact volume" in text


def test_mask_headline_scores_the_last_held_out_scan(tmp_path) -> None:
    import pandas as pd

    from custom.forecast_mask.score import summarise, write_mask_report

    # two growers, two target scans each; only the last scans differ from copy-last: Dice +0.2 and +0.1, so the
    # last-scan growers' mean difference is 0.150 by hand, while all target scans average (0 + 0.2 + 0 + 0.1) / 4
    rows = []
    for sid, last_gain in (("a", 0.2), ("b", 0.1)):
        for t, is_last in ((1.5, False), (2.0, True)):
            gain = last_gain if is_last else 0.0
            row = {"method": "latent_ode_hybrid", "mask_method": "ranked", "k_obs": 2, "subject_id": sid}
            row |= {"growth_class": "grower", "t_last_obs": 1.0, "time_years": t, "is_last": is_last}
            row |= {"volume_ml": 2.0, "last_obs_volume_ml": 1.0, "mask_volume_fidelity": 0.0}
            for name, d in (("forecast", 0.7 + gain), ("copy_last", 0.7), ("oracle_volume", 0.9)):
                row |= {f"{name}_dice": d, f"{name}_rvd": -0.2, f"{name}_abs_rvd": 0.2}
                row |= {f"{name}_hd95_mm": 1.0, f"{name}_centroid_err_mm": 1.0}
            rows.append(row)
    scores = pd.DataFrame(rows)
    summary = summarise(scores, n_boot=100)
    dice = summary[(summary["stratum"] == "growers") & (summary["metric"] == "dice")].set_index("scans")
    assert dice.loc["last", "diff"] == pytest.approx(0.15) and dice.loc["all", "diff"] == pytest.approx(0.075)
    assert dice.loc["last", "n_scans"] == 2 and dice.loc["all", "n_scans"] == 4
    text = Path(write_mask_report(scores, summary, tmp_path)["report"]).read_text()
    assert "- latent_ode_hybrid, k = 2: growers (last held-out scan) forecast - copy_last dice 0.150 [" in text
