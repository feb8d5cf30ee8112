"""The daemon's events, fanned out to whoever listens (alerts, the dashboard's live feed, metrics).

The pipeline, the governor's state changes and the runners publish plain
events; listeners subscribe. Publishing never waits on a listener and a
listener that raises is logged and skipped: nothing an operator channel does
can slow or break trading. A listener that needs I/O (Telegram) queues the
event and does the I/O in its own task.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened: ``kind`` is a stable code (e.g. "exit", "halt", "state"), ``message`` is
    for people, ``data`` holds plain JSON values."""

    kind: str
    message: str
    data: dict[str, Any] = field(default_factory=dict)
    wall_ts: float = field(default_factory=time.time)


Listener = Callable[[Event], None]


class EventHub:
    def __init__(self) -> None:
        self._listeners: list[Listener] = []
        self.published = 0

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener; returns the function that removes it again."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def publish(self, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        event = Event(kind, message, dict(data or {}))
        self.published += 1
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception as exc:  # a listener never breaks trading
                log.warning("event listener failed", kind=kind, listener=repr(listener), error=repr(exc))
