"""What "healthy" means for a running daemon: one rule for /healthz, the systemd watchdog and the unhealthy exit.

Three checks, each with a reason code and a limit from ``config.health``:

* ``loop_lag`` — an event-loop wake-up in the recent window came later than
  the limit. A blocked loop cannot answer a bar, a fill or a stop in time,
  and while it is blocked nothing (not even the watchdog ping) runs at all.
* ``market_data`` — no bar for longer than one expected bar interval plus a
  grace; a paced replay also fails when it falls that far behind its schedule.
  A replay that has reached its end is done, not stale. A venue that says it
  is reconnecting is healthy within ``reconnect_budget_seconds``; one that
  says its market is closed (a weekend) is not expected to deliver bars.
* ``store`` — a small committed write (``Store.set_state``) is tried every
  ``store_probe_seconds`` by a task of its own, off the bar path; the check
  reads that task's last result, and fails when the last success is too old
  (a write hanging on the disk never reports an error).

``HealthMonitor.evaluate`` is synchronous and cheap, and takes every input
through its constructor (clock, lag source, feed status, probe), so the rules
are tested without an event loop. The monitor also remembers since when the
daemon has been unhealthy: with ``exit_after_unhealthy_seconds`` set, the
daemon stops and ``tradectl run`` exits with code 4 (``EXIT_UNHEALTHY``) so that a restart
policy (Fly.io's: failing checks there restart nothing) brings it back. That
stop runs on the event loop; a loop blocked for good would never run it, so a
thread watches the exit task's heartbeat and ends the process at once
(``os._exit(4)``, like a kill: the store's commits are durable and the next
start recovers) when the loop has not run for longer than the same limit.

Feed status keys read (``Broker.feed_status``): ``kind`` ("replay" for the
simulator), ``done``, ``lag_seconds`` (a paced replay's lag behind schedule),
and, for a live venue, ``connected`` (False while reconnecting),
``disconnected_seconds`` and ``market_open`` (False when no bars are due).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog

from daemon.config import HealthConfig

log = structlog.get_logger(__name__)

EXIT_UNHEALTHY = 4  # `tradectl run`'s exit code after staying unhealthy for exit_after_unhealthy_seconds


LOOP_LAG = "loop_lag"
MARKET_DATA = "market_data"
BROKER_DISCONNECTED = "broker_disconnected"
STORE = "store"


class LagSource(Protocol):
    def recent_max(self, seconds: float) -> float:
        """The worst event-loop lag (seconds) over about the last ``seconds``."""
        ...

    def overdue(self) -> float:
        """How late the lag monitor's pending wake-up already is: a stall not yet sampled."""
        ...


@dataclass(frozen=True, slots=True)
class Check:
    """One rule's verdict: ``code`` names the rule (stable, for alerts and metrics), ``detail`` says why."""

    code: str
    ok: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Health:
    checks: tuple[Check, ...]

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    @property
    def reason(self) -> str:
        """"ok", or every failing check as ``code: detail`` joined by "; "."""
        failing = [f"{c.code}: {c.detail}" for c in self.checks if not c.ok]
        return "; ".join(failing) if failing else "ok"

    def as_tuple(self) -> tuple[bool, str]:
        return self.ok, self.reason


def expected_bar_interval(feed_status: Mapping[str, Any], pace: float | None, bar_seconds: float) -> float:
    """Seconds between bars the venue should deliver: 1/pace for a paced replay (0 unpaced), else the bar length."""
    if feed_status.get("kind") == "replay":
        return 1.0 / pace if pace else 0.0
    return float(bar_seconds)


class HealthMonitor:
    """Evaluates the checks on demand and probes the store in the background (``start``/``stop``)."""

    def __init__(
        self,
        settings: HealthConfig,
        *,
        lag: LagSource,
        feed_status: Callable[[], Mapping[str, Any]],
        bar_interval: float,
        probe: Callable[[], Awaitable[object]],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self._lag = lag
        self._feed_status = feed_status
        self.bar_interval = bar_interval
        self._probe = probe
        self._clock = clock
        now = clock()
        self._last_bar = now  # watching starts now: the first bar is due within one interval plus the grace
        self._store_ok_at = now  # the store was written just before (the run's start-up)
        self._store_error: str | None = None
        self._unhealthy_since: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._beat = time.monotonic()  # the exit task's last run (real time: a thread reads it)
        self._guard_stop = threading.Event()
        self._guard: threading.Thread | None = None

    # ------------------------------------------------------------------ inputs
    def bar_arrived(self) -> None:
        """Called for every bar the venue delivers (one clock read)."""
        self._last_bar = self._clock()

    async def probe_store(self) -> None:
        """One write attempt; its outcome is what the ``store`` check reads until the next one."""
        try:
            await self._probe()
        except Exception as exc:  # whatever stops a write is the answer: record it, never raise it
            if self._store_error is None:
                log.error("store write probe failed", error=str(exc))
            self._store_error = f"{type(exc).__name__}: {exc}"
        else:
            if self._store_error is not None:
                log.warning("store writable again")
            self._store_error = None
            self._store_ok_at = self._clock()

    # ------------------------------------------------------------------ the rules
    def evaluate(self) -> Health:
        now = self._clock()
        health = Health((self._loop_lag(), self._market_data(now), self._store(now)))
        if health.ok:
            if self._unhealthy_since is not None:
                log.warning("healthy again", after_seconds=round(now - self._unhealthy_since, 1))
            self._unhealthy_since = None
        elif self._unhealthy_since is None:
            self._unhealthy_since = now
            log.warning("unhealthy", reason=health.reason)
        return health

    def unhealthy_for(self) -> float:
        """Seconds since the evaluation that first found the daemon unhealthy (0 while healthy)."""
        return 0.0 if self._unhealthy_since is None else self._clock() - self._unhealthy_since

    def _loop_lag(self) -> Check:
        s = self.settings
        worst_ms = max(self._lag.recent_max(s.loop_lag_window_seconds), self._lag.overdue()) * 1000
        ok = worst_ms <= s.loop_lag_limit_ms
        detail = f"worst wake-up {worst_ms:.0f} ms late in the last {s.loop_lag_window_seconds:g} s"
        return Check(LOOP_LAG, ok, detail if ok else f"{detail} (limit {s.loop_lag_limit_ms:g} ms)")

    def _market_data(self, now: float) -> Check:
        s = self.settings
        feed = self._feed_status()
        if feed.get("done"):
            return Check(MARKET_DATA, True, "replay finished")
        if feed.get("connected") is False:
            down = float(feed.get("disconnected_seconds") or 0.0)
            budget = s.reconnect_budget_seconds
            if down > budget:
                return Check(BROKER_DISCONNECTED, False, f"reconnecting for {down:.0f} s (budget {budget:g} s)")
            return Check(MARKET_DATA, True, f"reconnecting for {down:.0f} s (budget {budget:g} s)")
        if feed.get("market_open") is False:
            return Check(MARKET_DATA, True, "market closed")
        age = now - self._last_bar
        limit = self.bar_interval + s.market_data_grace_seconds
        if age > limit:
            return Check(MARKET_DATA, False, f"no bar for {age:.1f} s (expected every {self.bar_interval:g} s,"
                         f" grace {s.market_data_grace_seconds:g} s)")
        behind = float(feed.get("lag_seconds") or 0.0)
        if behind > s.market_data_grace_seconds:
            return Check(MARKET_DATA, False, f"replay {behind:.1f} s behind its schedule"
                         f" (grace {s.market_data_grace_seconds:g} s)")
        return Check(MARKET_DATA, True, f"last bar {age:.1f} s ago")

    def _store(self, now: float) -> Check:
        s = self.settings
        if self._store_error is not None:
            return Check(STORE, False, f"write failed: {self._store_error}")
        age = now - self._store_ok_at
        if age > s.store_probe_max_age_seconds:
            limit = s.store_probe_max_age_seconds
            return Check(STORE, False, f"no successful write for {age:.1f} s (limit {limit:g} s)")
        return Check(STORE, True, f"written {age:.1f} s ago")

    # ------------------------------------------------------------------ background work
    def start(
        self, on_unhealthy_too_long: Callable[[str], None], *, hard_exit: Callable[[str], None] | None = None
    ) -> None:
        """Probe the store periodically and, if configured, call ``on_unhealthy_too_long`` once with the reason.

        ``hard_exit`` (default: log and ``os._exit(4)``) is what the stalled-loop guard calls from its thread.
        """
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._probe_periodically(), name="health-store-probe"))
        limit = self.settings.exit_after_unhealthy_seconds
        if limit > 0:
            self._beat = time.monotonic()
            self._tasks.append(loop.create_task(self._exit_when_unhealthy(on_unhealthy_too_long), name="health-exit"))
            self._guard_stop.clear()
            self._guard = threading.Thread(target=self._guard_the_loop, args=(limit, hard_exit or _hard_exit),
                                           name="health-stalled-loop-guard", daemon=True)
            self._guard.start()

    async def stop(self) -> None:
        self._guard_stop.set()
        if self._guard is not None:
            self._guard.join()
            self._guard = None
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def _probe_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.settings.store_probe_seconds)
            await self.probe_store()

    async def _exit_when_unhealthy(self, on_unhealthy_too_long: Callable[[str], None]) -> None:
        """Evaluate every ``min(1 s, limit / 4)``; after the call, keep beating while the daemon stops."""
        limit = self.settings.exit_after_unhealthy_seconds
        called = False
        while True:
            await asyncio.sleep(_period(limit))
            self._beat = time.monotonic()
            if called:
                continue
            health = self.evaluate()
            if not health.ok and self.unhealthy_for() >= limit:
                log.error("unhealthy for too long; stopping so that the restart policy restarts the daemon",
                          seconds=round(self.unhealthy_for(), 1), reason=health.reason)
                on_unhealthy_too_long(health.reason)
                called = True

    def _guard_the_loop(self, limit: float, hard_exit: Callable[[str], None]) -> None:
        """Thread: the exit task missed its beats for longer than ``limit``: the loop is stuck, end the process."""
        period = _period(limit)
        while not self._guard_stop.wait(period):
            stalled = time.monotonic() - self._beat
            if stalled > limit + period:
                hard_exit(f"event loop blocked for {stalled:.1f} s")
                return


def _period(limit: float) -> float:
    return min(1.0, limit / 4)


def _hard_exit(reason: str) -> None:
    """No clean stop is possible: the loop that would run it is stuck. Exit as a kill would, with code 4."""
    log.critical("event loop stuck; exiting at once so that the restart policy restarts the daemon", reason=reason)
    os._exit(EXIT_UNHEALTHY)
