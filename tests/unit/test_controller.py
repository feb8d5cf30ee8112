"""DualLaneController: lanes, sample-and-hold, clipping, reset."""

from __future__ import annotations

import pytest

from strategies.controller import DualLaneController


def test_zero_error_gives_base_bonus() -> None:
    ctl = DualLaneController(base_bonus=0.01)
    for _ in range(60):
        assert ctl.update(0.0, 1.0) == pytest.approx(0.01)


def test_fast_lane_scales_with_error_and_market_multiplier() -> None:
    ctl = DualLaneController(base_bonus=1.0, fast_kp=0.25, slow_kp=0.05)
    assert ctl.update(0.2, 2.0) == pytest.approx(1.0 * (1 + 0.25 * 0.2 * 2.0))
    assert ctl.fast == pytest.approx(0.1)
    assert ctl.slow == 0.0


def test_negative_error_lowers_the_bonus() -> None:
    ctl = DualLaneController(base_bonus=1.0)
    assert ctl.update(-0.4, 1.0) == pytest.approx(1.0 - 0.25 * 0.4)
    assert ctl.update(-0.4, 1.5) == pytest.approx(1.0 - 0.25 * 0.4 * 1.5)


def test_clips_at_both_ends() -> None:
    ctl = DualLaneController(base_bonus=0.5)
    assert ctl.update(10.0, 1.0) == 1.0  # 2 * base
    assert ctl.update(-10.0, 1.0) == 0.0
    assert ctl.update(-10.0, 3.0) == 0.0


def test_slow_lane_samples_every_25_steps_and_holds() -> None:
    ctl = DualLaneController(base_bonus=1.0, fast_kp=0.0, slow_kp=0.05, slow_every=25)
    for step in range(1, 25):
        ctl.update(0.1 * step, 1.0)
        assert ctl.slow == 0.0, step
    ctl.update(0.4, 1.0)  # 25th step: sample
    assert ctl.slow == pytest.approx(0.05 * 0.4)
    assert ctl.bonus == pytest.approx(1.0 + 0.05 * 0.4)
    for step in range(26, 50):  # held in between, whatever the error does
        ctl.update(-1.0 if step % 2 else 1.0, 1.0)
        assert ctl.slow == pytest.approx(0.05 * 0.4), step
        assert ctl.bonus == pytest.approx(1.0 + 0.05 * 0.4)
    ctl.update(-0.2, 1.0)  # 50th step: next sample
    assert ctl.slow == pytest.approx(0.05 * -0.2)


def test_both_lanes_add() -> None:
    ctl = DualLaneController(base_bonus=2.0, slow_every=1)
    assert ctl.update(0.3, 0.5) == pytest.approx(2.0 * (1 + 0.25 * 0.3 * 0.5 + 0.05 * 0.3))


def test_reset_clears_lanes_and_step_count() -> None:
    ctl = DualLaneController(base_bonus=1.0, slow_every=3)
    for _ in range(3):
        ctl.update(0.5, 1.0)
    assert ctl.slow != 0.0
    ctl.reset()
    assert (ctl.steps, ctl.fast, ctl.slow, ctl.bonus) == (0, 0.0, 0.0, 1.0)
    ctl.update(0.5, 1.0)
    ctl.update(0.5, 1.0)
    assert ctl.slow == 0.0  # the sample clock restarted too


def test_rejects_negative_base() -> None:
    with pytest.raises(ValueError):
        DualLaneController(base_bonus=-1.0)
