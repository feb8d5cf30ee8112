"""The rules of cyclic training by hand: schedule, improvement, early stop, parameter drift, the env's target."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brokers.errors import ConfigError
from brokers.history import load_bundled
from strategies.training.cycles import (
    CycleSettings,
    EarlyStop,
    StopReason,
    hold_schedule,
    improvement,
    parameter_drift,
)
from strategies.training.env import TradingEnv


def _settings(**kw: object) -> CycleSettings:
    base = {"cycles": 8, "steps_per_cycle": 100, "hold_targets": (0.5,) * 8, "min_cycles": 3, "patience": 2,
            "min_improvement": 0.01, "selection": "rolling-sharpe"}  # fmt: skip
    return CycleSettings(**{**base, **kw})  # type: ignore[arg-type]


def test_hold_schedule_linear_and_listed() -> None:
    assert hold_schedule("0.75:0.25", 3) == (0.75, 0.5, 0.25)
    assert hold_schedule("0.6", 1) == (0.6,)
    assert hold_schedule("0.9,0.5", 2) == (0.9, 0.5)
    with pytest.raises(ConfigError, match="START:END"):
        hold_schedule("a:b", 2)
    with pytest.raises(ConfigError, match="2 targets for 3"):
        hold_schedule("0.9,0.5", 3)


def test_improvement_is_relative_to_the_best_magnitude() -> None:
    assert improvement(1.1, 1.0) == pytest.approx(0.1)
    assert improvement(-0.9, -1.0) == pytest.approx(0.1)  # less negative is better
    assert improvement(None, 1.0) is None and improvement(1.0, None) is None


def test_early_stop_waits_for_min_cycles_then_counts_stalls() -> None:
    stop = EarlyStop(_settings())
    stop.observe(1, 1.0)  # baseline
    stop.observe(2, 1.005)  # +0.5 %: not enough
    assert not stop.stopped  # stalled 1, below min_cycles anyway
    stop.observe(3, 1.02)  # +1.5 % over the best (1.005)
    assert stop.stalled == 0 and not stop.stopped
    stop.observe(4, None)  # undefined never improves
    stop.observe(5, 1.0)
    assert stop.stopped and stop.reason is StopReason.NO_IMPROVEMENT
    assert stop.best == 1.02 and stop.best_cycle == 3
    assert "after cycle 5: 2 cycle(s) in a row" in stop.explain()


def test_completes_when_the_schedule_ends() -> None:
    stop = EarlyStop(_settings(cycles=2, min_cycles=5))
    stop.observe(1, None)
    stop.observe(2, None)
    assert stop.reason is StopReason.COMPLETED and stop.best_cycle is None


def test_parameter_drift_is_relative_l2() -> None:
    prev = np.array([3.0, 4.0])
    assert parameter_drift(prev, np.array([3.0, 4.5])) == pytest.approx(0.1)
    assert parameter_drift(prev, prev) == 0.0
    assert math.isinf(parameter_drift(np.zeros(2), np.ones(2)))


def test_env_hold_rate_target_moves_the_regime_base() -> None:
    bars = load_bundled()[:400]
    env = TradingEnv(bars, episode_bars=48, base_bonus=0.005)
    _, info = env.reset(options={"start": 0})
    regime_target = info["target_hold_rate"]
    env.set_hold_rate_target(0.75)
    _, info = env.reset(options={"start": 0})
    assert info["target_hold_rate"] == pytest.approx(min(1.0, regime_target + 0.20))
    env.set_hold_rate_target(None)
    _, info = env.reset(options={"start": 0})
    assert info["target_hold_rate"] == regime_target
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        env.set_hold_rate_target(1.2)
