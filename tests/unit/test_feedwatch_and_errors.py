"""Connection events from a venue's feed status, and logged errors as events (no network; a real loop)."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

import pytest
import structlog

from daemon.events import Event, EventHub, LoggedErrors
from daemon.feedwatch import ConnectionWatch
from daemon.logs import configure_logging
from daemon.telegram.alerts import Coalescer


def test_one_disconnected_event_per_outage_and_one_reconnected_after_it() -> None:
    got: list[tuple[str, str, dict[str, Any]]] = []
    watch = ConnectionWatch(lambda *event: got.append(event), "alpaca")
    watch.observe({"connected": True, "reconnects": 0}, 0.0)
    watch.observe({"connected": False, "state": "reconnecting", "reconnects": 0}, 10.0)
    watch.observe({"connected": False, "state": "reconnecting", "reconnects": 2}, 11.0)
    assert watch.down and [kind for kind, _, _ in got] == ["broker_disconnected"]
    assert "alpaca reconnecting" in got[0][1]
    watch.observe({"connected": True, "state": "connected", "reconnects": 3}, 42.5)
    assert not watch.down
    kind, message, data = got[1]
    assert kind == "broker_reconnected" and data == {"venue": "alpaca", "down_seconds": 32.5, "reconnects": 3}
    assert "back after 32 s (3 reconnect attempts)" in message
    watch.observe({"kind": "replay"}, 50.0)  # the simulator says nothing of a connection: it is connected
    assert len(got) == 2


@pytest.mark.usefixtures("restore_logging")
async def test_errors_logged_anywhere_become_redacted_error_events_on_the_loop() -> None:
    configure_logging(stream=io.StringIO(), json=True)
    hub = EventHub()
    got: list[Event] = []
    hub.subscribe(got.append)
    detach = LoggedErrors(hub, asyncio.get_running_loop()).install()
    try:
        structlog.get_logger("daemon.orders.manager").error(
            "submit outcome unknown; asking the broker", client_order_id="c-1", api_token="s3cret")
        structlog.get_logger("daemon.orders.manager").warning("a warning is not an alert")
        bad = (ValueError, ValueError("x"), None)
        logging.getLogger("aiohttp.server").error("Error handling request", exc_info=bad)
        structlog.get_logger("daemon.telegram.outbox").error("alert delivery failed")  # would only feed itself
        await asyncio.to_thread(lambda: structlog.get_logger("brokers.alpaca.rest").error("lookup failed", n=3))
        await asyncio.sleep(0)  # the worker thread's line is handed to the loop
    finally:
        detach()
    structlog.get_logger("daemon.orders.manager").error("after detaching: not an event")
    assert [(e.kind, e.data["reason"], e.data["logger"]) for e in got] == [
        ("error", "submit outcome unknown; asking the broker", "daemon.orders.manager"),
        ("error", "Error handling request", "aiohttp.server"),
        ("error", "lookup failed", "brokers.alpaca.rest"),
    ]
    assert "client_order_id=c-1" in got[0].message and "s3cret" not in got[0].message
    assert got[1].message == "Error handling request: ValueError('x')"


def test_repeated_errors_are_folded_per_reason() -> None:
    c = Coalescer(60)

    def error(reason: str) -> Event:
        return Event("error", f"{reason} (attempt)", {"reason": reason, "logger": "daemon.runners"})

    assert c.offer(error("store flush failed"), 0)
    assert not c.offer(error("store flush failed"), 5) and not c.offer(error("store flush failed"), 10)
    assert c.offer(error("order lookup failed"), 11), "another reason is not folded into the first"
    assert c.due(61) == ["❗ error store flush failed: 2 more errors in 60 s (last: store flush failed (attempt))"]
