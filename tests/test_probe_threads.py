"""The probes and DCI run with one BLAS thread (custom.metrics.probes.one_blas_thread), and give the same R²."""

import numpy as np
from threadpoolctl import threadpool_info

from custom.metrics import probes
from custom.metrics.dci import dci


def _blas_threads() -> list[int]:
    return [m["num_threads"] for m in threadpool_info() if m["user_api"] == "blas"]


def test_probe_entry_points_hold_one_blas_thread_and_restore_it() -> None:
    seen: list[list[int]] = []

    @probes.one_blas_thread
    def probe() -> None:
        seen.append(_blas_threads())

    before = _blas_threads()
    probe()
    assert seen and all(n == 1 for n in seen[0])
    assert _blas_threads() == before  # restored on exit
    for fn in (probes.linear_probe_r2, probes.held_out_probe_r2, dci):
        assert hasattr(fn, "__wrapped__"), f"{fn.__name__} is not wrapped by one_blas_thread"


def test_one_thread_probe_matches_the_unwrapped_one() -> None:
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(80, 16))
    factors = mu[:, :2] @ np.array([[1.0, 0.5], [0.0, 2.0]]) + 0.1 * rng.normal(size=(80, 2))
    groups = np.repeat(np.arange(20), 4)
    wrapped = probes.linear_probe_r2(mu, factors, ["a", "b"], groups=groups, alpha=probes.PROBE_ALPHAS)
    plain = probes.linear_probe_r2.__wrapped__(mu, factors, ["a", "b"], groups=groups, alpha=probes.PROBE_ALPHAS)
    assert wrapped["r2"] == plain["r2"]
    assert wrapped["r2"]["a"] > 0.9 and wrapped["r2"]["b"] > 0.9  # linear factors of mu are recovered
