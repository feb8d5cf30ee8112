"""The venue's connection as events: one ``broker_disconnected`` per outage and one ``broker_reconnected`` after it.

Every venue reports its connection in ``feed_status()`` (``connected``,
``state``, ``reconnects``; the simulator reports none and is always
connected). The daemon reads it once a second rather than asking each
adapter to know about the daemon's events: ``brokers`` stays the leaf of the
dependency graph, and a new venue gets its alerts by reporting its status.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

Publish = Callable[[str, str, dict[str, Any]], None]


class ConnectionWatch:
    """Turns a stream of ``feed_status()`` readings into connection events (tested without a loop)."""

    def __init__(self, publish: Publish, venue: str) -> None:
        self._publish = publish
        self._venue = venue
        self._down_since: float | None = None
        self._reconnects_at_drop = 0

    @property
    def down(self) -> bool:
        return self._down_since is not None

    def observe(self, status: Mapping[str, Any], now: float) -> None:
        connected = status.get("connected", True) is not False
        reconnects = int(status.get("reconnects") or 0)
        state = str(status.get("state") or ("connected" if connected else "disconnected"))
        if not connected and self._down_since is None:
            self._down_since = now
            self._reconnects_at_drop = reconnects
            self._publish("broker_disconnected", f"{self._venue} {state}; no new entries until it is back",
                          {"venue": self._venue, "state": state})
        elif connected and self._down_since is not None:
            down = now - self._down_since
            self._down_since = None
            self._publish("broker_reconnected", f"{self._venue} back after {down:.0f} s"
                          f" ({reconnects - self._reconnects_at_drop} reconnect attempts)",
                          {"venue": self._venue, "down_seconds": round(down, 3), "reconnects": reconnects})

    async def run(self, feed_status: Callable[[], Mapping[str, Any]], every: float = 1.0) -> None:
        """Read the status every ``every`` seconds until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            self.observe(feed_status(), loop.time())
            await asyncio.sleep(every)
