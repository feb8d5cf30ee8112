"""Alpaca's two websockets as sessions our ``ConnectionSupervisor`` runs inside the daemon's event loop.

Why not alpaca-py's ``StockDataStream`` / ``TradingStream``: their ``run()``
calls ``asyncio.run`` (not in a running loop), and driving their internal
``_run_forever`` from our loop still leaves four problems: (1) a handler that
raises is logged by the library and its message is gone; (2) they reconnect
on their own schedule, invisible to us, with no place to backfill and
reconcile before the stream counts as up again; (3) subscribing from the loop
thread while they run blocks on a future of their loop; (4) ``TradeUpdate``
parses prices and quantities into floats. The wire protocol is six small
messages (integrations.md), so each session here speaks it with the
``websockets`` library alpaca-py already depends on, and hands every message
to the adapter, whose handlers do not fail (they enqueue); a message that
cannot be read is quarantined (logged at error level, counted, kept), never
dropped silently.

A session returns or raises when its connection ends; the supervisor decides
what happens next. It calls ``ready()`` after authenticating and subscribing
and before reading the stream, so the backfill/reconciliation hook runs
before any live message is handed on (live messages wait in the socket).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import structlog
from websockets.asyncio.client import ClientConnection, connect

from brokers.base import Bar
from brokers.errors import BrokerError
from brokers.live import Quarantine

from .convert import WireError, stream_bar
from .settings import AlpacaSettings

__all__ = ["MarketDataSession", "StreamError", "TradeUpdatesSession"]

log = structlog.get_logger(__name__)
Ready = Callable[[], Awaitable[None]]
_OPEN_TIMEOUT = 10.0
_HANDSHAKE_TIMEOUT = 10.0


class StreamError(BrokerError):
    """The stream refused us (authentication, subscription, a connection limit) or spoke out of protocol."""


def _connect(url: str, headers: dict[str, str]) -> connect:
    return connect(url, additional_headers=headers, open_timeout=_OPEN_TIMEOUT, ping_interval=10,
                   ping_timeout=20, close_timeout=2, max_size=2**24, user_agent_header="tradectl")


class MarketDataSession:
    """The market-data stream (msgpack): minute bars of ``settings.symbols``, each handed to ``on_bar``."""

    def __init__(self, settings: AlpacaSettings, on_bar: Callable[[Bar], None], quarantine: Quarantine) -> None:
        self._settings = settings
        self._on_bar = on_bar
        self.quarantine = quarantine
        self.subscribed: list[str] = []
        self.frames = 0

    async def __call__(self, ready: Ready) -> None:
        s = self._settings
        async with _connect(s.bars_stream, {"Content-Type": "application/msgpack"}) as ws:
            await self._expect(ws, "connected")
            await ws.send(msgpack.packb({"action": "auth", "key": s.key_id, "secret": s.secret_key}))
            await self._expect(ws, "authenticated")
            await ws.send(msgpack.packb({"action": "subscribe", "bars": list(s.symbols)}))
            early = await self._until_subscribed(ws)
            await ready()
            for msg in early:
                self._handle(msg)
            async for frame in ws:
                for msg in self._decode(frame):
                    self._handle(msg)

    def _decode(self, frame: bytes | str) -> list[Any]:
        self.frames += 1
        try:
            doc = json.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
            self.quarantine.put(f"undecodable frame: {exc!r}", frame)
            return []
        return doc if isinstance(doc, list) else [doc]

    async def _recv(self, ws: ClientConnection) -> list[Any]:
        async with _deadline():
            return self._decode(await ws.recv())

    async def _expect(self, ws: ClientConnection, what: str) -> None:
        for msg in await self._recv(ws):
            if isinstance(msg, dict) and msg.get("T") == "success" and msg.get("msg") == what:
                return
            if isinstance(msg, dict) and msg.get("T") == "error":
                raise StreamError(f"market data: error {msg.get('code')}: {msg.get('msg')}")
        raise StreamError(f"market data: expected {what!r}, got something else")

    async def _until_subscribed(self, ws: ClientConnection) -> list[Any]:
        early: list[Any] = []
        while True:
            for msg in await self._recv(ws):
                if not isinstance(msg, dict):
                    early.append(msg)
                elif msg.get("T") == "subscription":
                    self.subscribed = list(msg.get("bars") or [])
                    missing = set(self._settings.symbols) - set(self.subscribed)
                    if missing:
                        raise StreamError(f"market data: not subscribed to {sorted(missing)}")
                    return early
                elif msg.get("T") == "error":
                    raise StreamError(f"market data: subscribe refused: error {msg.get('code')}: {msg.get('msg')}")
                else:
                    early.append(msg)

    def _handle(self, msg: Any) -> None:
        if not isinstance(msg, dict):
            self.quarantine.put("not a message object", msg)
            return
        kind = msg.get("T")
        if kind == "b":
            try:
                bar = stream_bar(msg, self._settings.bar_seconds)
            except WireError as exc:
                self.quarantine.put(str(exc), msg)
                return
            self._on_bar(bar)
        elif kind == "error":
            raise StreamError(f"market data: error {msg.get('code')}: {msg.get('msg')}")
        elif kind in ("subscription", "success"):
            return
        else:
            self.quarantine.put(f"unexpected message type {kind!r}", msg)


class TradeUpdatesSession:
    """The trade-updates stream (JSON, text or binary frames): each update's ``data`` handed to ``on_update``."""

    def __init__(self, settings: AlpacaSettings, on_update: Callable[[dict[str, Any]], None],
                 quarantine: Quarantine) -> None:
        self._settings = settings
        self._on_update = on_update
        self.quarantine = quarantine
        self.messages = 0

    async def __call__(self, ready: Ready) -> None:
        s = self._settings
        async with _connect(s.updates_stream, {}) as ws:
            await ws.send(json.dumps({"action": "authenticate",
                                      "data": {"key_id": s.key_id, "secret_key": s.secret_key}}))
            async with _deadline():
                answer = self._decode(await ws.recv())
            data = (answer or {}).get("data") or {}
            if answer is None or answer.get("stream") != "authorization" or data.get("status") != "authorized":
                raise StreamError(f"trade updates: not authorized ({data.get('status') or 'no answer'}"
                                  f"{': ' + str(data['error']) if data.get('error') else ''})")
            await ws.send(json.dumps({"action": "listen", "data": {"streams": ["trade_updates"]}}))
            await ready()
            async for frame in ws:
                msg = self._decode(frame)
                if msg is None:
                    continue
                stream = msg.get("stream")
                if stream == "trade_updates":
                    self.messages += 1
                    data = msg.get("data")
                    if isinstance(data, dict):
                        self._on_update(data)
                    else:
                        self.quarantine.put("trade update without data", msg)
                elif stream not in ("listening", "authorization"):
                    self.quarantine.put(f"unexpected stream {stream!r}", msg)

    def _decode(self, frame: bytes | str) -> dict[str, Any] | None:
        try:
            doc = json.loads(frame)
        except ValueError as exc:
            self.quarantine.put(f"undecodable frame: {exc!r}", frame)
            return None
        if not isinstance(doc, dict):
            self.quarantine.put("not a message object", doc)
            return None
        return doc


def _deadline() -> asyncio.Timeout:
    return asyncio.timeout(_HANDSHAKE_TIMEOUT)
