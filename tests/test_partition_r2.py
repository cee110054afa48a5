"""The Exp3 partition's own R² and the "no other single latent predicts log-volume better" check."""

import numpy as np
import pytest

from custom.data.factors import FACTOR_NAMES
from custom.engines.handlers.diagnostics import _partition_r2


def _factors(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(n, len(FACTOR_NAMES)))


def test_partition_r2_follows_factor_index_and_finds_the_best_other_coordinate():
    rng = np.random.default_rng(0)
    f = _factors(400, rng)
    iv, ia = FACTOR_NAMES.index("log_volume"), FACTOR_NAMES.index("aspect_x")
    mu = rng.normal(size=(400, 6))
    mu[:, 0] = f[:, iv] + 0.5 * rng.normal(size=400)  # z_vol: r^2 = 1 / 1.25 = 0.8
    mu[:, 1] = f[:, ia]  # z_shape[0] supervised on aspect_x, exactly
    mu[:, 4] = f[:, iv] + 0.1 * rng.normal(size=400)  # a free coordinate that knows the volume better
    out = _partition_r2(mu, f, {"vol": [0], "shape": [1]}, {"vol": [iv], "shape": [ia]})
    assert out["partition/r2_log_volume"] == pytest.approx(0.8, abs=0.05)
    assert out["partition/r2_aspect_x"] == pytest.approx(1.0)
    assert out["partition/best_other_coord_log_volume"] == 4.0
    assert out["partition/best_other_r2_log_volume"] == pytest.approx(1 / 1.01, abs=0.01)


def test_partition_r2_default_groups_are_size_free_shape_factors():
    rng = np.random.default_rng(1)
    f = _factors(50, rng)
    out = _partition_r2(rng.normal(size=(50, 8)), f, {"vol": [0], "loc": [1, 2, 3], "shape": [4, 5, 6, 7]})
    shape_keys = sorted(k for k in out if k.startswith("partition/r2_") and "centroid" not in k and "volume" not in k)
    assert shape_keys == [
        "partition/r2_aspect_x",
        "partition/r2_aspect_y",
        "partition/r2_aspect_z",
        "partition/r2_sphericity",
    ]
