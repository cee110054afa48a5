"""Schedules against values worked out by hand from the formulas in design.md §6."""

from __future__ import annotations

import pytest

from custom.engines.handlers.schedules import ScheduleHandler
from custom.schedules import (
    ConstantBeta,
    CyclicalBeta,
    DIPLambdaSchedule,
    LinearBeta,
    LinearCapacity,
    TumourWeightSchedule,
)


@pytest.mark.parametrize(
    "epoch, expected",
    [
        # T=160, M=4 -> period T/M = 40, ceil = 40, R = 0.5; tau = ((t-1) mod 40)/40
        (1, 0.0),  # tau = 0
        (11, 0.5),  # tau = 10/40 = 0.25 -> 0.25/0.5
        (20, 0.95),  # tau = 19/40 = 0.475 -> 0.95
        (21, 1.0),  # tau = 20/40 = 0.5 = R -> still the ramp branch: 0.5/0.5 = 1
        (40, 1.0),  # tau = 39/40 > R -> beta_max
        (41, 0.0),  # new cycle
        (51, 0.5),
        (160, 1.0),
    ],
)
def test_cyclical_beta_hand_values(epoch: int, expected: float) -> None:
    assert CyclicalBeta(beta_max=1.0, total_epochs=160, n_cycles=4, ratio=0.5)(epoch) == pytest.approx(expected)


def test_cyclical_beta_scales_with_beta_max_and_non_integer_period() -> None:
    assert CyclicalBeta(beta_max=4.0)(11) == pytest.approx(2.0)
    # T=10, M=3: period 10/3, ceil 4; epoch 3 -> tau = 2/(10/3) = 0.6 > 0.5 -> beta_max; epoch 5 -> restart at 0
    sched = CyclicalBeta(beta_max=1.0, total_epochs=10, n_cycles=3, ratio=0.5)
    assert sched(2) == pytest.approx(0.3 / 0.5)
    assert sched(3) == 1.0
    assert sched(5) == 0.0


def test_linear_beta() -> None:
    sched = LinearBeta(beta_max=2.0, warmup_epochs=4, start=2)
    assert [sched(t) for t in (1, 2, 3, 4, 6, 7, 100)] == pytest.approx([0.0, 0.0, 0.5, 1.0, 2.0, 2.0, 2.0])
    assert LinearBeta(beta_max=1.0, warmup_epochs=0, start=3)(3) == 0.0
    assert LinearBeta(beta_max=1.0, warmup_epochs=0, start=3)(4) == 1.0


def test_constant_beta() -> None:
    assert ConstantBeta(0.25)(1) == ConstantBeta(0.25)(999) == 0.25


def test_linear_capacity() -> None:
    sched = LinearCapacity(c_max=30.0, total_epochs=4)
    # C = 30 * (t - 1) / 3
    assert [sched(t) for t in (1, 2, 3, 4, 10)] == pytest.approx([0.0, 10.0, 20.0, 30.0, 30.0])
    assert LinearCapacity(c_max=5.0, total_epochs=1)(1) == 5.0


def test_dip_lambda_start_epoch_gives_zero() -> None:
    sched = DIPLambdaSchedule(start_epoch=20, warmup_epochs=40)
    assert sched(1) == 0.0
    assert sched(20) == 0.0  # documented: the epoch equal to start_epoch gives 0
    assert sched(21) == pytest.approx(1 / 40)
    assert sched(40) == pytest.approx(0.5)
    assert sched(60) == 1.0
    assert sched(200) == 1.0
    assert DIPLambdaSchedule(start_epoch=5, warmup_epochs=0)(6) == 1.0


def test_epoch_zero_treated_as_first_epoch() -> None:
    assert CyclicalBeta()(0) == 0.0
    assert DIPLambdaSchedule(start_epoch=0, warmup_epochs=4)(0) == pytest.approx(0.25)


def test_invalid_arguments_raise() -> None:
    with pytest.raises(ValueError):
        CyclicalBeta(ratio=0.0)
    with pytest.raises(ValueError):
        LinearBeta(warmup_epochs=-1)
    with pytest.raises(ValueError):
        DIPLambdaSchedule(start_epoch=-1)


@pytest.mark.parametrize(
    "epoch, expected", [(1, 20.0), (10, 20.0), (11, 20.0 - 19.0 / 10), (15, 10.5), (20, 1.0), (40, 1.0)]
)
def test_tumour_weight_warmup_hand_values(epoch: int, expected: float) -> None:
    # hold 20 for epochs 1-10, then 20 + (1 - 20) * (t - 10) / 10: 18.1 at 11, 10.5 at 15, 1 from 20 on
    assert TumourWeightSchedule(peak=20.0, hold_epochs=10, decay_epochs=10)(epoch) == pytest.approx(expected)


def test_tumour_weight_constant_and_step() -> None:
    assert [TumourWeightSchedule(peak=5.0)(t) for t in (1, 100)] == [5.0, 5.0]  # hold None: the constant weight
    assert [TumourWeightSchedule(peak=5.0, hold_epochs=3)(t) for t in (0, 3, 4)] == [5.0, 5.0, 1.0]
    assert TumourWeightSchedule()(7) == 1.0  # the plain likelihood
    with pytest.raises(ValueError):
        TumourWeightSchedule(peak=0.5)
    with pytest.raises(ValueError):
        TumourWeightSchedule(peak=2.0, hold_epochs=-1)


def test_schedule_handler_hands_the_tumour_weight_to_the_step() -> None:
    handler = ScheduleHandler(
        beta=ConstantBeta(1.0), tumour_weight=TumourWeightSchedule(peak=8.0, hold_epochs=2, decay_epochs=2)
    )
    assert [handler.values(t)["tumour_weight"] for t in (2, 3, 4)] == [8.0, 4.5, 1.0]
    assert "tumour_weight" not in ScheduleHandler(beta=ConstantBeta(1.0)).values(1)


@pytest.mark.parametrize(
    "epoch, expected", [(1, 1.0), (20, 1.0), (21, 1.0 + 19.0 / 5), (23, 1.0 + 19.0 * 3 / 5), (25, 20.0), (60, 20.0)]
)
def test_tumour_weight_late_ramp_hand_values(epoch: int, expected: float) -> None:
    # plain likelihood to epoch 20, then 1 + 19 (t - 20) / 5 up to 20 at epoch 25, held to the end
    assert TumourWeightSchedule(peak=20.0, start_epoch=20, ramp_epochs=5)(epoch) == pytest.approx(expected)


def test_tumour_weight_ramp_hold_decay() -> None:
    s = TumourWeightSchedule(peak=5.0, start_epoch=2, ramp_epochs=2, hold_epochs=1, decay_epochs=2)
    # 1, 1 | 3, 5 (ramp) | 5 (hold) | 3, 1 (decay) | 1
    assert [s(t) for t in range(1, 10)] == pytest.approx([1, 1, 3, 5, 5, 3, 1, 1, 1])
    with pytest.raises(ValueError):
        TumourWeightSchedule(peak=2.0, start_epoch=-1)
