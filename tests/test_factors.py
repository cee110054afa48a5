"""Segmentation factors against hand-made label maps with known geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from custom.data.factors import FACTOR_NAMES, seg_factors

# anisotropic spacing (2, 1, 3) mm, x axis flipped, offset
AFFINE = np.array([[-2.0, 0, 0, 50.0], [0, 1.0, 0, -20.0], [0, 0, 3.0, 7.0], [0, 0, 0, 1]])


def _box_seg(shape=(10, 12, 8), lo=(2, 3, 1), size=(4, 6, 2), label=3) -> np.ndarray:
    seg = np.zeros(shape, dtype=np.uint8)
    seg[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = label
    return seg


def test_contract_keys():
    f = seg_factors(_box_seg(), AFFINE)
    for k in FACTOR_NAMES + ("volume_ml", "volume_ncr_ml", "volume_ed_ml", "volume_et_ml", "volume_whole_ml"):
        assert k in f


def test_box_volume_centroid_extent_under_anisotropic_affine():
    f = seg_factors(_box_seg(), AFFINE)
    # 4*6*2 voxels of 2*1*3 mm^3
    assert f["volume_ml"] == pytest.approx(48 * 6 / 1000.0)
    assert f["log_volume"] == pytest.approx(math.log(0.288))
    # centre index (2+1.5, 3+2.5, 1+0.5) -> world
    assert f["centroid_x"] == pytest.approx(50.0 - 2.0 * 3.5)
    assert f["centroid_y"] == pytest.approx(-20.0 + 5.5)
    assert f["centroid_z"] == pytest.approx(7.0 + 3.0 * 1.5)
    assert (f["extent_x"], f["extent_y"], f["extent_z"]) == pytest.approx((8.0, 6.0, 6.0))
    # the box is 8 x 6 x 6 mm: true area 264 mm^2; the face count is scaled by 2/3 (documented bias)
    assert f["surface_area_mm2"] == pytest.approx(264.0 * 2.0 / 3.0)
    # aspects: extent over the side of the cube of the same volume, 288 mm^3 -> side 288^(1/3)
    side = 288.0 ** (1.0 / 3.0)
    assert (f["aspect_x"], f["aspect_y"], f["aspect_z"]) == pytest.approx(
        (math.log(8.0 / side), math.log(6.0 / side), math.log(6.0 / side))
    )


def test_shape_factors_do_not_change_when_the_tumour_is_scaled():
    """Doubling every side of a box multiplies its volume by 8 and leaves sphericity and aspects unchanged."""
    from custom.data.factors import SHAPE_FACTORS

    small = np.zeros((24, 24, 24), dtype=np.uint8)
    small[2:6, 3:9, 1:3] = 3
    large = np.zeros((24, 24, 24), dtype=np.uint8)
    large[2:10, 3:15, 1:5] = 3
    fs, fl = seg_factors(small, AFFINE), seg_factors(large, AFFINE)
    assert fl["log_volume"] - fs["log_volume"] == pytest.approx(math.log(8.0))
    for name in SHAPE_FACTORS:
        assert fl[name] == pytest.approx(fs[name], rel=1e-9, abs=1e-9), name


def test_rotated_affine_centroid_and_volume():
    rot = np.array([[0.0, -1.5, 0, 3.0], [1.5, 0, 0, 4.0], [0, 0, 2.0, -5.0], [0, 0, 0, 1]])
    f = seg_factors(_box_seg(), rot)
    i, j, k = 3.5, 5.5, 1.5
    assert f["centroid_x"] == pytest.approx(3.0 - 1.5 * j)
    assert f["centroid_y"] == pytest.approx(4.0 + 1.5 * i)
    assert f["centroid_z"] == pytest.approx(-5.0 + 2.0 * k)
    assert f["volume_ml"] == pytest.approx(48 * 1.5 * 1.5 * 2.0 / 1000.0)
    # world x spans the j axis (6 voxels of 1.5 mm), world y the i axis (4 voxels)
    assert (f["extent_x"], f["extent_y"], f["extent_z"]) == pytest.approx((9.0, 6.0, 4.0))


def test_label_volumes():
    seg = np.zeros((6, 6, 6), dtype=np.uint8)
    seg[0, 0, :3] = 1
    seg[1, :, :] = 2
    seg[3, :2, :2] = 3
    f = seg_factors(seg, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert f["volume_ncr_ml"] == pytest.approx(3e-3)
    assert f["volume_ed_ml"] == pytest.approx(36e-3)
    assert f["volume_et_ml"] == pytest.approx(4e-3)
    assert f["volume_ml"] == pytest.approx(7e-3)  # tumour = labels 1 + 3
    assert f["volume_whole_ml"] == pytest.approx(43e-3)


def test_ball_sphericity_near_one_and_long_box_much_lower():
    n, r = 31, 10.0
    g = np.indices((n, n, n)) - 15
    ball = ((g**2).sum(axis=0) <= r * r).astype(np.uint8) * 3
    aff = np.diag([1.5, 1.5, 1.5, 1.0])
    fb = seg_factors(ball, aff)
    assert fb["volume_ml"] == pytest.approx(4 / 3 * math.pi * (r * 1.5) ** 3 / 1000.0, rel=0.03)
    assert fb["centroid_x"] == pytest.approx(15 * 1.5)
    assert 0.9 < fb["sphericity"] < 1.1
    assert fb["surface_area_mm2"] == pytest.approx(4 * math.pi * (r * 1.5) ** 2, rel=0.1)
    box = _box_seg(shape=(5, 5, 40), lo=(2, 2, 5), size=(1, 1, 30))
    fx = seg_factors(box, aff)
    assert fx["sphericity"] < 0.65
    assert fb["sphericity"] - fx["sphericity"] > 0.3


def test_empty_seg_gives_nan():
    f = seg_factors(np.zeros((4, 4, 4), dtype=np.uint8), AFFINE)
    assert f["volume_ml"] == 0.0
    assert math.isnan(f["log_volume"])
    assert math.isnan(f["centroid_x"]) and math.isnan(f["sphericity"])
    # edema alone is not tumour
    seg = np.zeros((4, 4, 4), dtype=np.uint8)
    seg[1, 1, 1] = 2
    f = seg_factors(seg, AFFINE)
    assert math.isnan(f["log_volume"]) and f["volume_whole_ml"] > 0
