"""The health rules without an event loop: a hand-moved clock, a lag source, a feed status and a store probe."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest

from daemon.config import HealthConfig, TradectlConfig
from daemon.health import HealthMonitor, expected_bar_interval


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Lag:
    def __init__(self) -> None:
        self.worst = 0.0
        self.late = 0.0
        self.asked: list[float] = []

    def recent_max(self, seconds: float) -> float:
        self.asked.append(seconds)
        return self.worst

    def overdue(self) -> float:
        return self.late


class Probe:
    def __init__(self) -> None:
        self.error: Exception | None = None
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if self.error is not None:
            raise self.error


def _monitor(feed: dict[str, Any] | None = None, *, interval: float = 0.05, **settings: Any) -> tuple[
        HealthMonitor, Clock, Lag, Probe, dict[str, Any]]:
    clock, lag, probe = Clock(), Lag(), Probe()
    status: dict[str, Any] = {"kind": "replay", "done": False, "lag_seconds": 0.0} if feed is None else feed
    config = HealthConfig(**{"market_data_grace_seconds": 5.0, **settings})
    monitor = HealthMonitor(config, lag=lag, feed_status=lambda: status, bar_interval=interval, probe=probe,
                            clock=clock)
    return monitor, clock, lag, probe, status


def test_a_fresh_daemon_is_healthy() -> None:
    monitor, *_ = _monitor()
    health = monitor.evaluate()
    assert health.as_tuple() == (True, "ok")
    assert [c.code for c in health.checks] == ["loop_lag", "market_data", "store"]


def test_loop_lag_over_the_limit_in_the_window_is_unhealthy() -> None:
    monitor, _, lag, _, _ = _monitor(loop_lag_limit_ms=500, loop_lag_window_seconds=20)
    lag.worst = 0.499
    assert monitor.evaluate().ok
    lag.worst = 0.750
    ok, reason = monitor.evaluate().as_tuple()
    assert not ok
    assert reason.startswith("loop_lag: worst wake-up 750 ms late in the last 20 s (limit 500 ms)")
    assert lag.asked[-1] == 20


def test_a_stall_not_yet_sampled_counts_already() -> None:
    """Right after a blocked loop runs again, the watchdog may run before the lag monitor has sampled it."""
    monitor, _, lag, _, _ = _monitor(loop_lag_limit_ms=500)
    lag.late = 1.5
    ok, reason = monitor.evaluate().as_tuple()
    assert not ok and reason.startswith("loop_lag: worst wake-up 1500 ms late")


def test_market_data_stale_after_one_interval_plus_grace_and_fresh_with_the_next_bar() -> None:
    monitor, clock, *_ = _monitor(interval=2.0)
    clock.now += 6.9  # 2 s interval + 5 s grace not yet passed
    assert monitor.evaluate().ok
    clock.now += 0.2
    ok, reason = monitor.evaluate().as_tuple()
    assert not ok and reason.startswith("market_data: no bar for 7.1 s")
    monitor.bar_arrived()
    assert monitor.evaluate().ok


def test_a_paced_replay_behind_its_schedule_is_stale_even_while_bars_arrive() -> None:
    monitor, _, _, _, feed = _monitor()
    feed["lag_seconds"] = 5.5
    monitor.bar_arrived()
    ok, reason = monitor.evaluate().as_tuple()
    assert not ok and "replay 5.5 s behind its schedule" in reason


def test_a_finished_replay_is_done_not_stale() -> None:
    monitor, clock, _, _, feed = _monitor()
    feed["done"] = True
    clock.now += 3600  # an hour with no bar
    health = monitor.evaluate()
    assert not health.checks[2].ok  # (the store was not probed meanwhile)
    assert health.checks[1].ok and health.checks[1].detail == "replay finished"


def test_reconnecting_is_healthy_within_its_budget_only() -> None:
    feed: dict[str, Any] = {"kind": "live", "connected": False, "disconnected_seconds": 100.0}
    monitor, clock, *_ = _monitor(feed, interval=60.0, reconnect_budget_seconds=120, store_probe_max_age_seconds=1e6)
    clock.now += 500  # no bar for long: reconnecting explains it
    assert monitor.evaluate().ok
    feed["disconnected_seconds"] = 121.0
    ok, reason = monitor.evaluate().as_tuple()
    assert not ok and reason == "broker_disconnected: reconnecting for 121 s (budget 120 s)"


def test_a_closed_market_expects_no_bars() -> None:
    feed: dict[str, Any] = {"kind": "live", "connected": True, "market_open": False}
    monitor, clock, *_ = _monitor(feed, interval=60.0, store_probe_max_age_seconds=1e6)
    clock.now += 2 * 86_400
    assert monitor.evaluate().ok
    feed["market_open"] = True
    assert not monitor.evaluate().ok


async def test_store_unhealthy_while_writes_fail_and_healthy_after_the_next_success() -> None:
    monitor, clock, _, probe, _ = _monitor()
    probe.error = sqlite3.OperationalError("database is locked")
    await monitor.probe_store()
    ok, reason = monitor.evaluate().as_tuple()
    assert not ok and reason == "store: write failed: OperationalError: database is locked"
    probe.error = None
    clock.now += 1
    await monitor.probe_store()
    assert monitor.evaluate().ok


def test_store_unhealthy_when_no_write_succeeded_for_too_long() -> None:
    """A write hanging on the disk reports nothing: the age of the last success is what fails."""
    monitor, clock, *_ = _monitor(store_probe_max_age_seconds=30)
    monitor.bar_arrived()
    clock.now += 29
    monitor.bar_arrived()
    assert monitor.evaluate().ok
    clock.now += 2
    monitor.bar_arrived()
    ok, reason = monitor.evaluate().as_tuple()
    assert not ok and reason == "store: no successful write for 31.0 s (limit 30 s)"


def test_several_failures_are_all_named() -> None:
    monitor, clock, lag, *_ = _monitor(store_probe_max_age_seconds=10)
    lag.worst = 5.0
    clock.now += 60
    reason = monitor.evaluate().reason
    assert [part.split(":")[0] for part in reason.split("; ")] == ["loop_lag", "market_data", "store"]


def test_unhealthy_for_counts_from_the_first_unhealthy_evaluation_and_resets() -> None:
    monitor, clock, lag, *_ = _monitor()
    assert monitor.unhealthy_for() == 0.0
    lag.worst = 5.0
    monitor.evaluate()
    clock.now += 3
    monitor.evaluate()
    assert monitor.unhealthy_for() == pytest.approx(3.0)
    lag.worst = 0.0
    monitor.evaluate()
    assert monitor.unhealthy_for() == 0.0


async def test_the_exit_is_called_once_after_staying_unhealthy_long_enough() -> None:
    """Real time here (the exit task sleeps on the loop): 0.2 s configured, checked every 0.05 s."""
    lag = Lag()
    lag.worst = 5.0
    reasons: list[str] = []
    called = asyncio.Event()
    at: list[float] = []

    def on_exit(reason: str) -> None:
        reasons.append(reason)
        at.append(asyncio.get_running_loop().time())
        called.set()

    monitor = HealthMonitor(HealthConfig(exit_after_unhealthy_seconds=0.2), lag=lag,
                            feed_status=lambda: {"kind": "replay"}, bar_interval=0.05, probe=Probe())
    loop = asyncio.get_running_loop()
    started = loop.time()
    monitor.start(on_exit)
    await asyncio.wait_for(called.wait(), 2)
    await asyncio.sleep(0.2)  # no second call
    await monitor.stop()
    assert len(reasons) == 1 and reasons[0].startswith("loop_lag:")
    assert 0.2 <= at[0] - started < 1.0


async def test_no_exit_task_when_the_exit_is_off() -> None:
    reasons: list[str] = []
    lag = Lag()
    lag.worst = 5.0
    monitor = HealthMonitor(HealthConfig(), lag=lag, feed_status=dict, bar_interval=0.0, probe=Probe())
    assert monitor.settings.exit_after_unhealthy_seconds == 0  # the default: off
    monitor.start(reasons.append)
    await asyncio.sleep(0.3)
    await monitor.stop()
    assert reasons == [] and not monitor.evaluate().ok


async def test_the_store_is_probed_periodically_in_the_background() -> None:
    probe = Probe()
    monitor = HealthMonitor(HealthConfig(store_probe_seconds=0.02), lag=Lag(), feed_status=dict,
                            bar_interval=0.0, probe=probe)
    monitor.start(lambda _reason: None)
    await asyncio.sleep(0.15)
    await monitor.stop()
    assert probe.calls >= 3
    calls = probe.calls
    await asyncio.sleep(0.05)
    assert probe.calls == calls  # stopped means stopped


def test_expected_bar_interval() -> None:
    assert expected_bar_interval({"kind": "replay"}, 20.0, 3600) == 0.05
    assert expected_bar_interval({"kind": "replay"}, None, 3600) == 0.0
    assert expected_bar_interval({"kind": "replay"}, 0.0, 3600) == 0.0
    assert expected_bar_interval({"kind": "live"}, 20.0, 3600) == 3600.0


def test_fly_toml_turns_the_unhealthy_exit_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fly restarts nothing for failing checks: its environment must switch the exit on, and load as config."""
    fly = tomllib.loads((Path(__file__).resolve().parents[2] / "fly.toml").read_text())
    for key, value in fly["env"].items():
        monkeypatch.setenv(key, value)
    config = TradectlConfig()
    assert config.health.exit_after_unhealthy_seconds > 0
    assert fly["restart"][0]["policy"] in ("always", "on-failure")


async def test_a_loop_blocked_for_longer_than_the_limit_is_ended_from_a_thread() -> None:
    """The clean exit runs on the loop; a stuck loop never runs it, so a thread ends the process instead."""
    calls: list[str] = []
    monitor = HealthMonitor(HealthConfig(exit_after_unhealthy_seconds=0.3), lag=Lag(), feed_status=dict,
                            bar_interval=0.0, probe=Probe())
    monitor.start(lambda _reason: None, hard_exit=calls.append)
    try:
        await asyncio.sleep(0.6)
        assert calls == [], "a running loop keeps the guard quiet"
        time.sleep(0.3)  # noqa: ASYNC251 -- blocked, but for less than the limit plus one beat
        await asyncio.sleep(0.1)
        assert calls == []
        time.sleep(1.0)  # noqa: ASYNC251 -- the point: the loop is stuck
        assert len(calls) == 1 and calls[0].startswith("event loop blocked for")
    finally:
        await monitor.stop()


async def test_the_guard_ends_with_the_monitor() -> None:
    calls: list[str] = []
    monitor = HealthMonitor(HealthConfig(exit_after_unhealthy_seconds=0.2), lag=Lag(), feed_status=dict,
                            bar_interval=0.0, probe=Probe())
    monitor.start(lambda _reason: None, hard_exit=calls.append)
    await monitor.stop()
    time.sleep(0.6)  # noqa: ASYNC251 -- a stopped monitor: nothing beats, and nothing may fire
    assert calls == []
    assert not any(t.name == "health-stalled-loop-guard" for t in threading.enumerate())
