"""The live dashboard: a read-only page at ``/`` and the server-sent events that keep it current.

The page (``daemon/static``) is plain HTML, JS and SVG shipped in the
package, so it works on a host without internet access. It reads one
document, the *snapshot* (status, risk figures, equity series, recent trades
and decisions), first from ``GET /dashboard.json`` and then from
``GET /events``: a snapshot about once a second (sooner after a state change)
plus every event the daemon publishes.

Nothing here may slow trading. Publishing an event only appends to each
browser's bounded queue (the oldest frame is dropped when a browser falls
behind); only the browser's own handler task waits on its socket, and a write
that stalls for ``write_timeout`` closes that stream. One ticker task builds
a snapshot per interval for all browsers, and only while someone watches.
``close()`` ends every stream at once so the API's shutdown never waits on a
browser that keeps its connection open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from daemon.api import _jsonable
from daemon.events import Event, EventHub
from daemon.store.reads import recent_decisions, recent_equity, recent_trades

if TYPE_CHECKING:
    from daemon.app import Daemon

__all__ = ["STATIC_FILES", "Dashboard", "SseQueue", "daemon_snapshot", "sse_frame"]

log = structlog.get_logger(__name__)

Snapshot = Callable[[], Awaitable[dict[str, Any]]]

STATIC_DIR = Path(__file__).with_name("static")
# the only files served: a request can never name a path outside the package's page
STATIC_FILES = {"index.html": "text/html", "app.js": "text/javascript", "style.css": "text/css"}

EQUITY_POINTS = 600
RECENT_TRADES = 20
RECENT_DECISIONS = 20


def sse_frame(kind: str, data: Any) -> bytes:
    """One server-sent event: ``event:`` names the listener in the page, ``data:`` is strict JSON on one line."""
    body = json.dumps(_jsonable(data), allow_nan=False, separators=(",", ":"))
    return f"event: {kind}\ndata: {body}\n\n".encode()


class SseQueue:
    """One browser's pending frames: bounded, dropping the oldest, so a stalled reader costs fixed memory.

    ``put`` never waits (it runs inside event publishing, on the trading path).
    """

    def __init__(self, maxsize: int) -> None:
        self._frames: deque[bytes] = deque(maxlen=maxsize)
        self._wake = asyncio.Event()
        self.closed = False
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._frames)

    def put(self, frame: bytes) -> None:
        if self.closed:
            return
        if len(self._frames) == self._frames.maxlen:
            self.dropped += 1
        self._frames.append(frame)
        self._wake.set()

    def close(self) -> None:
        self.closed = True
        self._wake.set()

    async def get(self) -> bytes | None:
        """The next frame, or None once closed (pending frames are abandoned: the server is going away)."""
        while not self.closed:
            if self._frames:
                return self._frames.popleft()
            self._wake.clear()
            await self._wake.wait()
        return None


class Dashboard:
    """The page's routes and its live feed; mount ``routes()`` on the ``ControlApi``, ``close()`` before stopping it."""

    def __init__(
        self,
        snapshot: Snapshot,
        events: EventHub | None = None,
        *,
        interval: float = 1.0,
        queue_size: int = 64,
        write_timeout: float = 5.0,
    ) -> None:
        self._snapshot = snapshot
        self._interval = interval
        self._queue_size = queue_size
        self._write_timeout = write_timeout
        self._clients: set[SseQueue] = set()
        self._kick = asyncio.Event()
        self._ticker: asyncio.Task[None] | None = None
        self._closed = False
        # read once: a page request never touches the disk on the event loop
        self._files = {name: (STATIC_DIR / name).read_bytes() for name in STATIC_FILES}
        self._unsubscribe = events.subscribe(self._on_event) if events is not None else None

    @property
    def clients(self) -> int:
        """Browsers connected to ``/events``."""
        return len(self._clients)

    @property
    def backlog(self) -> int:
        """The most frames any one browser has waiting (never above ``queue_size``)."""
        return max((len(client) for client in self._clients), default=0)

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/", self._index),
            web.get("/static/{name}", self._static),
            web.get("/dashboard.json", self._document),
            web.get("/events", self._events),
        ]

    async def close(self) -> None:
        """End every stream and the ticker; idempotent."""
        self._closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        for client in list(self._clients):
            client.close()
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker

    # -- feeding ----------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        """EventHub listener: queue the event for every browser and ask for a fresh snapshot soon."""
        if not self._clients:
            return
        frame = sse_frame("event", {"kind": event.kind, "message": event.message, "data": event.data,
                                    "wall_ts": event.wall_ts})
        for client in self._clients:
            client.put(frame)
        self._kick.set()

    def _broadcast(self, frame: bytes) -> None:
        for client in self._clients:
            client.put(frame)

    async def _tick(self) -> None:
        while self._clients and not self._closed:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._kick.wait(), self._interval)
            self._kick.clear()
            if not self._clients:
                break
            try:
                self._broadcast(sse_frame("snapshot", await self._snapshot()))
            except Exception:  # a failing read skips one update; the stream stays open
                log.exception("dashboard snapshot failed")

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick())

    # -- handlers ---------------------------------------------------------

    async def _index(self, request: web.Request) -> web.StreamResponse:
        return self._file("index.html")

    async def _static(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name not in STATIC_FILES:
            raise web.HTTPNotFound(reason=f"no static file {name!r}")
        return self._file(name)

    def _file(self, name: str) -> web.Response:
        return web.Response(body=self._files[name], content_type=STATIC_FILES[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _document(self, _request: web.Request) -> web.Response:
        body = json.dumps(_jsonable(await self._snapshot()), allow_nan=False)
        return web.Response(text=body, content_type="application/json")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        if self._closed:
            raise web.HTTPServiceUnavailable(reason="the daemon is stopping")
        response = web.StreamResponse(headers={
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",  # a reverse proxy must not buffer the stream
        })
        await response.prepare(request)
        client = SseQueue(self._queue_size)
        client.put(b"retry: 2000\n\n")
        client.put(sse_frame("snapshot", await self._snapshot()))
        self._clients.add(client)
        self._ensure_ticker()
        try:
            while (frame := await client.get()) is not None:
                await asyncio.wait_for(response.write(frame), self._write_timeout)
        except (ConnectionError, TimeoutError) as exc:  # the browser left or stopped reading
            log.debug("dashboard stream ended", peer=request.remote, error=type(exc).__name__)
        finally:
            self._clients.discard(client)
            client.close()
        return response


async def daemon_snapshot(daemon: Daemon) -> dict[str, Any]:
    """Everything the page shows, in one document.

    Equity comes from the store (written with a lag of up to
    ``store.flush_seconds``) plus the live mark of the last bar, so the chart's
    last point is never behind the headline figure.
    """
    status = daemon.status()
    healthy, reason = daemon.health()
    equity = await recent_equity(daemon.store, EQUITY_POINTS)
    last_bar = daemon.pipeline.last_bar
    if last_bar is not None and (not equity or equity[-1][0] < last_bar.ts):
        equity.append((last_bar.ts, float(status["equity"])))
    portfolio = daemon.portfolio
    return {
        "status": status,
        "health": {"ok": healthy, "reason": reason},
        "drawdown": portfolio.drawdown(),
        "peak_equity": float(portfolio.peak_equity),
        "risk": daemon.risk_report(),
        "equity": equity,
        "trades": await recent_trades(daemon.store, RECENT_TRADES),
        "decisions": await recent_decisions(daemon.store, RECENT_DECISIONS),
    }
