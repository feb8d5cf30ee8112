"""The connection supervisor: validated states with reasons, backoff with full jitter, the ready hook."""

from __future__ import annotations

import asyncio
import random

import pytest

from brokers.errors import BrokerError
from brokers.live import Backoff, ConnectionState, ConnectionSupervisor, Transition, check_transition

C = ConnectionState


def test_backoff_grows_exponentially_to_the_cap_with_jitter_inside_the_ceiling() -> None:
    backoff = Backoff(1.0, 60.0, rng=random.Random(7))
    assert [backoff.ceiling(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    for attempt in range(1, 12):
        delays = [backoff.delay(attempt) for _ in range(200)]
        assert all(0.5 <= d <= backoff.ceiling(attempt) for d in delays)
    late = [backoff.delay(10) for _ in range(500)]
    assert max(late) > 50 and min(late) < 10, "full jitter spreads over the whole range"
    assert backoff.ceiling(10_000) == 60.0, "a long outage never overflows"


def test_backoff_is_reproducible_with_a_seed_and_refuses_bad_bounds() -> None:
    a = Backoff(1, 60, rng=random.Random(3))
    b = Backoff(1, 60, rng=random.Random(3))
    assert [a.delay(n) for n in range(1, 10)] == [b.delay(n) for n in range(1, 10)]
    with pytest.raises(ValueError, match="floor"):
        Backoff(0, 60)
    with pytest.raises(ValueError, match="floor"):
        Backoff(10, 1)


def test_transitions_are_validated() -> None:
    check_transition(C.STOPPED, C.CONNECTING)
    check_transition(C.RECONNECTING, C.CONNECTED)
    with pytest.raises(BrokerError, match="stopped to connected"):
        check_transition(C.STOPPED, C.CONNECTED)
    with pytest.raises(BrokerError, match="connected to connecting"):
        check_transition(C.CONNECTED, C.CONNECTING)


async def _until(changes: asyncio.Queue[Transition], state: ConnectionState) -> Transition:
    async with asyncio.timeout(2):
        while (t := await changes.get()).state is not state:
            pass
    return t


class _Link:
    """A scripted session: each start either fails, or becomes ready and runs until told to drop."""

    def __init__(self, failures_before_up: int) -> None:
        self.failures_left = failures_before_up
        self.starts = 0
        self.drop = asyncio.Event()

    async def session(self, ready) -> None:  # type: ignore[no-untyped-def]
        self.starts += 1
        if self.failures_left:
            self.failures_left -= 1
            raise ConnectionRefusedError("refused")
        await ready()
        await self.drop.wait()
        self.drop.clear()
        raise ConnectionResetError("peer reset")


async def test_the_supervisor_retries_runs_the_hook_before_connected_and_counts_reconnects() -> None:
    link = _Link(failures_before_up=2)
    hook_calls: list[tuple[bool, ConnectionState]] = []
    sup: ConnectionSupervisor

    async def on_ready(reconnect: bool) -> None:
        hook_calls.append((reconnect, sup.state))  # the hook runs BEFORE the state says connected

    changes: asyncio.Queue[Transition] = asyncio.Queue()
    sup = ConnectionSupervisor("md", link.session, backoff=Backoff(0.001, 0.004, rng=random.Random(1)),
                               on_ready=on_ready, on_change=changes.put_nowait)
    sup.start()
    async with asyncio.timeout(2):
        await sup.wait_connected()
    assert link.starts == 3 and sup.failures == 2 and sup.reconnects == 0
    assert hook_calls == [(False, C.RECONNECTING)]
    assert sup.status()["connected"] is True and sup.disconnected_seconds == 0
    while not changes.empty():  # the transitions so far
        changes.get_nowait()
    link.drop.set()
    lost = await _until(changes, C.RECONNECTING)
    assert "peer reset" in lost.reason
    async with asyncio.timeout(2):
        await sup.wait_connected()
    assert sup.reconnects == 1 and hook_calls[-1] == (True, C.RECONNECTING)
    await sup.stop()
    assert sup.state is C.STOPPED
    path = [(t.previous.value, t.state.value) for t in sup.history]
    assert path == [("stopped", "connecting"), ("connecting", "reconnecting"), ("reconnecting", "connected"),
                    ("connected", "reconnecting"), ("reconnecting", "connected"), ("connected", "stopped")]
    assert all(t.reason for t in sup.history)


async def test_a_failing_hook_keeps_the_connection_down_and_is_retried() -> None:
    link = _Link(failures_before_up=0)
    attempts = 0

    async def on_ready(reconnect: bool) -> None:
        nonlocal attempts
        attempts += 1
        if attempts < 3:
            raise RuntimeError("backfill failed")

    sup = ConnectionSupervisor("md", link.session, backoff=Backoff(0.001, 0.002), on_ready=on_ready)
    sup.start()
    async with asyncio.timeout(2):
        await sup.wait_connected()
    assert attempts == 3 and link.starts == 3
    assert [t.state for t in sup.history].count(C.CONNECTED) == 1, "never connected on a half-done backfill"
    await sup.stop()


async def test_disconnected_seconds_counts_from_the_loss() -> None:
    now = [100.0]
    link = _Link(failures_before_up=0)
    changes: asyncio.Queue[Transition] = asyncio.Queue()
    sup = ConnectionSupervisor("md", link.session, backoff=Backoff(50, 60), clock=lambda: now[0],
                               on_change=changes.put_nowait)
    sup.start()
    async with asyncio.timeout(2):
        await sup.wait_connected()
    now[0] = 130.0
    link.drop.set()
    await _until(changes, C.RECONNECTING)
    now[0] = 142.5
    assert sup.disconnected_seconds == 12.5
    assert sup.status()["state"] == "reconnecting"
    await sup.stop("shutdown")
    assert sup.disconnected_seconds == 0 and sup.reason == "shutdown"


async def test_waiting_on_a_stopped_supervisor_fails_clearly() -> None:
    sup = ConnectionSupervisor("md", _Link(0).session, backoff=Backoff(1, 2))
    with pytest.raises(BrokerError, match="not running"):
        await sup.wait_connected()
