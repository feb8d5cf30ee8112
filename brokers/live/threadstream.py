"""A blocking stream (a synchronous client's generator) read in its own thread, delivered on the loop.

Why: oandapyV20's streams are generators over ``requests``: every ``next``
blocks in a socket read, so they cannot run on the event loop. ``ThreadedStream``
is a session for ``ConnectionSupervisor``: it opens the stream in a fresh
thread (a fresh client there too: sessions are not thread-safe), hands every
message to the loop with ``call_soon_threadsafe``, and handles them on the
loop in arrival order.

A dead stream is one that says nothing: when no message has arrived for
``idle_limit`` seconds the session raises ``StreamSilent`` and the supervisor
reconnects (venues send heartbeats well inside that limit). The abandoned
thread stays blocked in its read until the client's own read timeout or the
server closes; whatever it still receives is discarded (the generation
check), so a reconnected stream is never fed twice.

``ready`` (the supervisor's hook: backfill, reconcile) runs after the first
message proves the stream open; messages arriving meanwhile wait in the queue
and are handled after it, in order.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Generic, TypeVar

import structlog

from brokers.errors import BrokerError

__all__ = ["StreamEnded", "StreamSilent", "ThreadedStream"]

log = structlog.get_logger(__name__)
T = TypeVar("T")
Ready = Callable[[], Awaitable[None]]
_ITEM, _ERROR, _END = 0, 1, 2


class StreamSilent(BrokerError):
    """No message (not even a heartbeat) within the idle limit: the stream is dead."""


class StreamEnded(BrokerError):
    """The venue closed the stream."""


class ThreadedStream(Generic[T]):
    """``await stream(ready)`` runs one connection; it returns or raises when the connection is over.

    ``open_stream(stop)`` runs in the reader thread and returns the blocking
    iterator of messages (it should stop soon after ``stop`` is set);
    ``handle(message)`` runs on the loop and must not raise for a bad message
    (quarantine it); an exception it raises ends the connection.
    """

    def __init__(self, name: str, open_stream: Callable[[threading.Event], Iterator[T]],
                 handle: Callable[[T], None], *, idle_limit: float) -> None:
        if not idle_limit > 0:
            raise ValueError(f"idle_limit must be > 0, got {idle_limit}")
        self.name = name
        self._open = open_stream
        self._handle = handle
        self.idle_limit = idle_limit
        self.generation = 0
        self.messages = 0
        self.silent_disconnects = 0

    async def __call__(self, ready: Ready) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()
        stop = threading.Event()
        self.generation += 1
        generation = self.generation

        def post(kind: int, value: Any) -> None:
            if stop.is_set():
                return  # this connection was abandoned: its late messages are not ours any more
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, value))
            except RuntimeError:  # the loop is closed: the daemon has stopped
                stop.set()

        def read() -> None:
            try:
                for message in self._open(stop):
                    if stop.is_set():
                        return
                    post(_ITEM, message)
            except BaseException as exc:  # handed to the loop, where the supervisor logs it
                post(_ERROR, exc)
            else:
                post(_END, None)

        thread = threading.Thread(target=read, name=f"{self.name}-{generation}", daemon=True)
        thread.start()
        try:
            first = await self._next(queue)
            await ready()
            self._deliver(first)
            while True:
                self._deliver(await self._next(queue))
        finally:
            stop.set()

    async def _next(self, queue: asyncio.Queue[tuple[int, Any]]) -> Any:
        try:
            async with asyncio.timeout(self.idle_limit):
                kind, value = await queue.get()
        except TimeoutError:
            self.silent_disconnects += 1
            raise StreamSilent(f"{self.name}: no message for {self.idle_limit:g} s (dead stream)") from None
        if kind == _ERROR:
            raise value
        if kind == _END:
            raise StreamEnded(f"{self.name}: the venue closed the stream")
        return value

    def _deliver(self, message: Any) -> None:
        self.messages += 1
        self._handle(message)
