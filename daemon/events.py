"""The daemon's events, fanned out to whoever listens (alerts, the dashboard's live feed, metrics).

The pipeline, the governor's state changes and the runners publish plain
events; listeners subscribe. Publishing never waits on a listener and a
listener that raises is logged and skipped: nothing an operator channel does
can slow or break trading. A listener that needs I/O (Telegram) queues the
event and does the I/O in its own task.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Mapping
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


# Loggers whose errors are not alerted: the alert channel's own trouble would only feed itself.
_QUIET_LOGGERS = ("daemon.telegram", "telegram", "httpx", "httpcore")
_META_KEYS = frozenset(
    {"event", "level", "logger", "timestamp", "exc_info", "stack_info", "_record", "_from_structlog"}
)


class LoggedErrors(logging.Handler):
    """Every error logged anywhere in the process becomes an ``error`` event: the operator hears of it.

    A stdlib handler on the root logger sees structlog's lines (already
    redacted) and the libraries' alike. A line logged on another thread
    (a worker thread, the store's thread) is handed to the loop, because
    listeners run on the loop.
    """

    def __init__(self, hub: EventHub, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(logging.ERROR)
        self._hub = hub
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def install(self) -> Callable[[], None]:
        """Attach to the root logger; returns the function that detaches again."""
        root = logging.getLogger()
        root.addHandler(self)
        return lambda: root.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_QUIET_LOGGERS):
            return
        try:
            reason, message = _describe(record)
            data = {"reason": reason, "logger": record.name, "level": record.levelname.lower()}
            if threading.get_ident() == self._loop_thread:
                self._hub.publish("error", message, data)
            elif not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._hub.publish, "error", message, data)
        except Exception:  # a log line never raises into the code that logged it
            self.handleError(record)


def _describe(record: logging.LogRecord) -> tuple[str, str]:
    """(a stable reason: the log event's name, the line for people: the event and its fields)."""
    if isinstance(record.msg, Mapping):  # a structlog line: its event dict
        fields = dict(record.msg)
        event = str(fields.get("event", ""))
        details = ", ".join(f"{k}={v}" for k, v in fields.items() if k not in _META_KEYS)
        return event, f"{event} ({details})" if details else event
    text = record.getMessage()
    if record.exc_info and record.exc_info[1] is not None:
        text = f"{text}: {record.exc_info[1]!r}"
    return text.split(":")[0][:80], text
