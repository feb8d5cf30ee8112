"""A venue's own link, which can fail while our socket to it stays up.

Some venues put a gateway between us and themselves (TWS / IB Gateway):
the socket to the gateway is fine while the gateway has lost the venue
(IB's error 1100) and later regained it with or without its data (1101,
1102). ``ConnectionSupervisor`` only sees the socket; ``LinkState`` holds the
gateway's report, so an adapter can say "disconnected for trading purposes"
(``feed_status`` ``connected`` false, ``disconnected_seconds`` counting)
while nothing is being reconnected. Reason codes name why it went down or
came back; the latest transitions are kept for ``/status``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

__all__ = ["LinkState"]


class LinkState:
    def __init__(self, name: str, *, clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time, history: int = 20) -> None:
        self.name = name
        self._clock = clock
        self._wall = wall
        self.up = True
        self.reason = "up"
        self.losses = 0
        self._down_since: float | None = None
        self.history: deque[dict[str, Any]] = deque(maxlen=history)

    def lost(self, reason: str) -> bool:
        """The venue reports its link down; True when this is news (it was up)."""
        if not self.up:
            self.reason = reason
            return False
        self.up, self.reason = False, reason
        self.losses += 1
        self._down_since = self._clock()
        self.history.append({"ts": round(self._wall(), 3), "up": False, "reason": reason})
        return True

    def restored(self, reason: str) -> bool:
        """The venue reports its link back; True when it was down."""
        was_down = not self.up
        self.up, self.reason = True, reason
        self._down_since = None
        if was_down:
            self.history.append({"ts": round(self._wall(), 3), "up": True, "reason": reason})
        return was_down

    def reset(self) -> None:
        """A new socket: whatever the old one reported no longer applies."""
        self.up, self.reason, self._down_since = True, "new connection", None

    @property
    def down_seconds(self) -> float:
        return 0.0 if self._down_since is None else max(0.0, self._clock() - self._down_since)

    def status(self) -> dict[str, Any]:
        return {"up": self.up, "reason": self.reason, "down_seconds": round(self.down_seconds, 3),
                "losses": self.losses}
