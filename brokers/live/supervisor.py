"""One connection's supervisor: explicit states, backoff with full jitter, and a hook before "connected".

A live adapter has one supervisor per long-lived connection (a market-data
socket, an order-update socket). The supervisor runs a *session* coroutine:
the session opens the connection, authenticates and subscribes, then calls
the ``ready`` callback it is given, and then reads until the connection ends
(by raising, or by returning). ``ready`` runs the adapter's ``on_ready`` hook
(backfill missed bars, reconcile orders) *before* the state becomes
CONNECTED, so nothing downstream sees "connected" while the books are still
catching up. When the session ends for any reason other than ``stop``, the
state becomes RECONNECTING and the session is started again after a delay of
exponential backoff with full jitter: ``uniform(0, min(cap, floor * 2**n))``
(never below ``floor`` / 2 so a reconnect storm cannot spin), reset once a
connection has reached CONNECTED.

States and transitions are validated (``check_transition``); each transition
carries a reason and is kept in a short history for ``/status``.
``disconnected_seconds`` counts from the moment the connection was last lost
(or from ``start`` if it never came up), which is what the health check and
the ``broker_disconnected`` reason read.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import structlog

from brokers.errors import BrokerError

__all__ = [
    "Backoff",
    "ConnectionState",
    "ConnectionSupervisor",
    "Session",
    "Transition",
    "check_transition",
]

log = structlog.get_logger(__name__)


class ConnectionState(enum.StrEnum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    STOPPED = "stopped"


C = ConnectionState
_TRANSITIONS: dict[ConnectionState, frozenset[ConnectionState]] = {
    C.STOPPED: frozenset({C.CONNECTING}),
    C.CONNECTING: frozenset({C.CONNECTED, C.RECONNECTING, C.STOPPED}),
    C.CONNECTED: frozenset({C.RECONNECTING, C.STOPPED}),
    C.RECONNECTING: frozenset({C.CONNECTED, C.STOPPED}),
}


def check_transition(current: ConnectionState, new: ConnectionState) -> None:
    """Raise ``BrokerError`` unless ``current -> new`` is a legal connection transition."""
    if new not in _TRANSITIONS[current]:
        raise BrokerError(f"connection cannot go from {current} to {new}")


@dataclass(frozen=True, slots=True)
class Transition:
    ts: float  # wall clock, epoch seconds (for display)
    previous: ConnectionState
    state: ConnectionState
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"ts": round(self.ts, 3), "from": self.previous.value, "to": self.state.value, "reason": self.reason}


class Backoff:
    """Exponential backoff with full jitter (AWS architecture blog's "full jitter").

    ``delay(attempt)`` for attempt 1, 2, ... is uniform in ``[floor/2, min(cap, floor * 2**(attempt-1))]``.
    A seeded ``rng`` makes the sequence reproducible in tests.
    """

    def __init__(self, floor: float = 1.0, cap: float = 60.0, *, rng: random.Random | None = None) -> None:
        if not 0 < floor <= cap:
            raise ValueError(f"backoff needs 0 < floor <= cap, got floor={floor} cap={cap}")
        self.floor = floor
        self.cap = cap
        self._rng = rng or random.Random()

    def ceiling(self, attempt: int) -> float:
        """The largest delay the ``attempt``-th retry may wait (1-based)."""
        if attempt < 1:
            raise ValueError(f"attempt is 1-based, got {attempt}")
        # 2**64 is plenty; the min keeps a long outage from overflowing a float
        return min(self.cap, self.floor * 2.0 ** min(attempt - 1, 64))

    def delay(self, attempt: int) -> float:
        return self._rng.uniform(self.floor / 2, self.ceiling(attempt))


Ready = Callable[[], Awaitable[None]]
Session = Callable[[Ready], Awaitable[None]]
Hook = Callable[[bool], Awaitable[None]]  # called with ``reconnect`` (False the first time)


class ConnectionSupervisor:
    """Runs a session coroutine for as long as it is wanted, reconnecting with backoff.

    ``on_ready(reconnect)`` runs inside the session's ``ready`` call; if it
    raises, the session is torn down and retried like any failed connection
    (trading never resumes on a half-done backfill or reconciliation).
    """

    def __init__(
        self,
        name: str,
        session: Session,
        *,
        backoff: Backoff,
        on_ready: Hook | None = None,
        on_change: Callable[[Transition], None] | None = None,
        history: int = 20,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self._session = session
        self._backoff = backoff
        self._on_ready = on_ready
        self._on_change = on_change
        self._clock = clock
        self._wall = wall
        self.state = ConnectionState.STOPPED
        self.reason = "not started"
        self.reconnects = 0  # times the connection came back after having been up
        self.failures = 0  # sessions that ended other than by stop
        self.attempt = 0  # consecutive failed attempts since the last CONNECTED
        self.history: deque[Transition] = deque(maxlen=history)
        self._down_since: float | None = None
        self._ever_connected = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._connected = asyncio.Event()
        self._last_error: str | None = None

    # ---------------------------------------------------------------- observation
    @property
    def connected(self) -> bool:
        return self.state is ConnectionState.CONNECTED

    @property
    def disconnected_seconds(self) -> float:
        """Seconds since the connection was lost (0 while connected or stopped)."""
        if self._down_since is None or self.state in (ConnectionState.CONNECTED, ConnectionState.STOPPED):
            return 0.0
        return max(0.0, self._clock() - self._down_since)

    def status(self) -> dict[str, Any]:
        """Plain JSON values for ``feed_status`` and ``/status``."""
        return {
            "state": self.state.value,
            "reason": self.reason,
            "connected": self.connected,
            "disconnected_seconds": round(self.disconnected_seconds, 3),
            "reconnects": self.reconnects,
            "failures": self.failures,
            "last_error": self._last_error,
        }

    async def wait_connected(self) -> None:
        """Wait until CONNECTED (wrap in ``asyncio.timeout``); ``BrokerError`` if the supervisor ends meanwhile."""
        while not self._connected.is_set():
            task = self._task
            if task is None or task.done():
                raise BrokerError(f"{self.name}: supervisor not running: {self.reason}")
            waiter = asyncio.ensure_future(self._connected.wait())
            try:
                await asyncio.wait({waiter, task}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waiter.cancel()

    # ---------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._task is not None:
            raise BrokerError(f"{self.name}: supervisor already started")
        self._stopping = False
        self._down_since = self._clock()
        self._move(ConnectionState.CONNECTING, "start")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"supervisor:{self.name}")

    async def stop(self, reason: str = "stop requested") -> None:
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.state is not ConnectionState.STOPPED:
            self._move(ConnectionState.STOPPED, reason)

    # ---------------------------------------------------------------- internals
    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._session(self._ready)
                why = "connection closed"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is a reason to reconnect, logged with its cause
                why = f"{type(exc).__name__}: {exc}"
                self._last_error = why
            if self._stopping:
                return
            self.failures += 1
            self._connected.clear()
            if self.state is ConnectionState.CONNECTED:
                self._down_since = self._clock()
                self.attempt = 0
            self.attempt += 1
            delay = self._backoff.delay(self.attempt)
            if self.state is not ConnectionState.RECONNECTING:
                self._move(ConnectionState.RECONNECTING, why)
            else:
                self.reason = why
            log.warning("connection lost; reconnecting", connection=self.name, reason=why,
                        attempt=self.attempt, delay=round(delay, 3))
            await asyncio.sleep(delay)

    async def _ready(self) -> None:
        """Called by the session once its link is up and subscribed: run the hook, then CONNECTED."""
        reconnect = self._ever_connected
        if self._on_ready is not None:
            await self._on_ready(reconnect)
        self._ever_connected = True
        if reconnect:
            self.reconnects += 1
        self.attempt = 0
        self._down_since = None
        self._move(ConnectionState.CONNECTED, "reconnected" if reconnect else "connected")
        self._connected.set()

    def _move(self, to: ConnectionState, reason: str) -> None:
        previous = self.state
        check_transition(previous, to)
        self.state = to
        self.reason = reason
        transition = Transition(self._wall(), previous, to, reason)
        self.history.append(transition)
        if self._on_change is not None:
            try:
                self._on_change(transition)
            except Exception as exc:  # an observer must never break the connection
                log.error("connection observer failed", connection=self.name, error=repr(exc))
