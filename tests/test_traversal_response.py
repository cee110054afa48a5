"""The traversal-response metric on constructed decodings with known answers."""

import numpy as np
import pytest

from custom.metrics.traversal_response import traversal_response, tumour_threshold


def _ball(shape, centre, radius):
    idx = np.indices(shape).transpose(1, 2, 3, 0)
    return ((idx - np.asarray(centre)) ** 2).sum(-1) <= radius**2


def test_threshold_is_the_midpoint_of_tumour_median_and_brain_p99():
    t1c = np.zeros((1, 10, 10, 10))
    t1c[0, 1:9, 1:9, 1:9] = np.linspace(-1, 1, 512).reshape(8, 8, 8)  # brain
    label = np.zeros_like(t1c, dtype=np.uint8)
    label[0, 4:6, 4:6, 4:6] = 3
    t1c[label == 3] = 3.0
    other = (t1c != 0) & (label == 0)
    expected = 0.5 * (3.0 + np.percentile(t1c[other], 99))
    assert tumour_threshold(t1c, label) == pytest.approx(expected)
    with pytest.raises(ValueError):
        tumour_threshold(t1c, np.zeros_like(label))


def test_growing_moving_and_idle_coordinates():
    shape, steps = (24, 24, 24), 5
    offsets = np.linspace(-2, 2, steps)
    imgs = np.zeros((3, steps) + shape)
    for k in range(steps):
        imgs[0, k][_ball(shape, (12, 12, 12), 2 + k)] = 3.0  # grows
        imgs[1, k][_ball(shape, (6 + 3 * k, 12, 12), 3)] = 3.0  # moves along x by 12 voxels
        imgs[2, k][_ball(shape, (12, 12, 12), 3)] = 3.0  # idle
    out = traversal_response(imgs, offsets, tau=1.5, spacing=(2.0, 1.0, 1.0))
    assert out["volume_spearman"][0] == pytest.approx(1.0)
    assert out["volume_spearman"][2] == 0.0
    assert out["shift_mm"][1] == pytest.approx([24.0, 0.0, 0.0])  # 12 voxels x 2 mm
    assert out["shift_mm"][0] == pytest.approx([0.0, 0.0, 0.0])
    assert out["counts"][2].tolist() == [out["counts"][2][0]] * steps


def test_shift_is_nan_without_bright_voxels():
    imgs = np.zeros((1, 3, 8, 8, 8))
    out = traversal_response(imgs, [-1, 0, 1], tau=1.0)
    assert np.isnan(out["shift_mm"]).all() and out["volume_spearman"][0] == 0.0
