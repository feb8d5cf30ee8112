"""The fake's two websockets: market data (``/v2/{feed}``, ``/v1beta3/crypto/{loc}``) and trade updates (``/stream``).

Market data follows Alpaca's stream protocol: greeting ``[{"T":"success","msg":"connected"}]``, an ``auth``
action, then ``subscribe``/``unsubscribe`` actions answered with the full current subscription. A client that
sends ``Content-Type: application/msgpack`` on the upgrade (alpaca-py does) gets msgpack binary frames with
``t`` as a msgpack Timestamp; any other client gets JSON text frames. Client messages may be either codec.

Trade updates follow the trading stream: ``authenticate`` → ``authorization`` reply, ``listen`` →
``listening`` reply, then ``{"stream":"trade_updates","data":{...}}``. Alpaca's paper endpoint sends these
JSON documents in BINARY frames (documented; alpaca-py's ``json.loads`` accepts bytes); the fake does the
same by default, text frames on request.

Nothing is replayed: a bar or trade update published while no socket listens is gone, as on Alpaca, and
must be recovered over REST. ``drop`` aborts the TCP connections without a close frame (what a network
failure looks like to the client); ``down`` additionally refuses new upgrades with 503 until cleared.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack
from aiohttp import WSMsgType, web

from tests.fakes.alpaca import wire
from tests.fakes.alpaca.faults import BarFrameRecord, FaultPlan, Records, TradeUpdateRecord
from tests.fakes.alpaca.market import Bar, TradeEvent

# the channels a subscription answer lists, in Alpaca's order
CHANNELS = ("trades", "quotes", "bars", "updatedBars", "dailyBars", "statuses", "lulds", "corrections",
            "cancelErrors")


def _decode(msg: Any) -> Any:
    if msg.type == WSMsgType.BINARY:
        try:
            return msgpack.unpackb(msg.data)
        except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError):
            return json.loads(msg.data)
    return json.loads(msg.data)


@dataclass(eq=False)
class _DataConn:
    ws: web.WebSocketResponse
    request: web.Request
    msgpack_codec: bool
    authenticated: bool = False
    subs: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in CHANNELS})

    def wants_bar(self, symbol: str) -> bool:
        bars = self.subs["bars"]
        return self.authenticated and (symbol in bars or "*" in bars)

    def encode(self, payload: list[dict[str, Any]]) -> tuple[bytes | str, bool]:
        if self.msgpack_codec:
            return msgpack.packb(payload, datetime=False), True
        return json.dumps(payload), False


class MarketDataHub:
    """Market-data websocket connections and the bar frames broadcast to them."""

    def __init__(self, check_key: Callable[[str, str], bool], faults: FaultPlan, records: Records) -> None:
        self._check_key = check_key
        self._faults = faults
        self._records = records
        self.conns: set[_DataConn] = set()
        self.connections_total = 0

    def subscribed(self, symbol: str) -> int:
        """How many live connections currently receive ``symbol``'s bars."""
        return sum(1 for c in self.conns if c.wants_bar(symbol))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._faults.market_data_down:
            return web.json_response(wire.error_body(50300000, "service unavailable"), status=503)
        ws = web.WebSocketResponse(autoping=True, max_msg_size=0)
        await ws.prepare(request)
        conn = _DataConn(ws, request, "msgpack" in request.headers.get("Content-Type", ""))
        self.connections_total += 1
        self.conns.add(conn)
        try:
            await self._send(conn, [{"T": "success", "msg": "connected"}])
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    body = _decode(msg)
                except ValueError:
                    await self._send(conn, [{"T": "error", "code": 400, "msg": "invalid syntax"}])
                    continue
                if not isinstance(body, dict):
                    await self._send(conn, [{"T": "error", "code": 400, "msg": "invalid syntax"}])
                    continue
                if not await self._on_action(conn, body):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(conn)
        return ws

    async def _on_action(self, conn: _DataConn, body: dict[str, Any]) -> bool:
        action = body.get("action")
        if action == "auth":
            if conn.authenticated:
                await self._send(conn, [{"T": "error", "code": 403, "msg": "already authenticated"}])
            elif self._check_key(str(body.get("key", "")), str(body.get("secret", ""))):
                conn.authenticated = True
                await self._send(conn, [{"T": "success", "msg": "authenticated"}])
            else:
                await self._send(conn, [{"T": "error", "code": 402, "msg": "auth failed"}])
                await conn.ws.close()
                return False
        elif action in ("subscribe", "unsubscribe"):
            if not conn.authenticated:
                await self._send(conn, [{"T": "error", "code": 401, "msg": "not authenticated"}])
                return True
            for channel in CHANNELS:
                symbols = body.get(channel) or []
                if action == "subscribe":
                    conn.subs[channel].update(symbols)
                else:
                    conn.subs[channel].difference_update(symbols)
            answer: dict[str, Any] = {"T": "subscription"}
            answer.update({c: sorted(conn.subs[c]) for c in CHANNELS})
            await self._send(conn, [answer])
        else:
            await self._send(conn, [{"T": "error", "code": 400, "msg": "invalid syntax"}])
        return True

    async def broadcast(self, bars: Sequence[Bar]) -> BarFrameRecord:
        """Send ``bars`` as one frame to every connection subscribed to any of them (each gets its own)."""
        targets = [(c, [b for b in bars if c.wants_bar(b.symbol)]) for c in list(self.conns)]
        targets = [(c, bs) for c, bs in targets if bs]
        encoded = [(c, c.encode([wire.bar_stream_msg(b, msgpack_codec=c.msgpack_codec) for b in bs]))
                   for c, bs in targets]
        sent_ns = time.monotonic_ns()
        for conn, (data, binary) in encoded:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await (conn.ws.send_bytes(data) if binary else conn.ws.send_str(data))  # type: ignore[arg-type]
        record = BarFrameRecord(tuple(b.symbol for b in bars), tuple(b.ts_open for b in bars), sent_ns,
                                len(encoded))
        self._records.bar_frames.append(record)
        return record

    async def drop(self) -> int:
        """Abort every market-data connection (no close frame); returns how many there were."""
        conns = list(self.conns)
        for conn in conns:
            if conn.request.transport is not None:
                conn.request.transport.abort()
        self.conns.clear()
        return len(conns)

    async def close(self) -> None:
        for conn in list(self.conns):
            with contextlib.suppress(Exception):
                await conn.ws.close()

    async def _send(self, conn: _DataConn, payload: list[dict[str, Any]]) -> None:
        data, binary = conn.encode(payload)
        await (conn.ws.send_bytes(data) if binary else conn.ws.send_str(data))  # type: ignore[arg-type]


@dataclass(eq=False)
class _TradeConn:
    ws: web.WebSocketResponse
    request: web.Request
    msgpack_codec: bool = False  # chosen by the codec of the client's authenticate message
    authorized: bool = False
    listening: bool = False


class TradeUpdatesHub:
    """Trade-update websocket connections; applies the duplicate / out-of-order faults on the way out."""

    def __init__(self, check_key: Callable[[str, str], bool], faults: FaultPlan, records: Records,
                 *, binary_frames: bool = True) -> None:
        self._check_key = check_key
        self._faults = faults
        self._records = records
        self._binary = binary_frames
        self.conns: set[_TradeConn] = set()
        self.connections_total = 0
        self._held: list[TradeEvent] = []
        self._lock = asyncio.Lock()

    @property
    def listeners(self) -> int:
        return sum(1 for c in self.conns if c.listening)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if self._faults.trade_updates_down:
            return web.json_response(wire.error_body(50300000, "service unavailable"), status=503)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        conn = _TradeConn(ws, request)
        self.connections_total += 1
        self.conns.add(conn)
        try:
            async for msg in ws:
                if msg.type not in (WSMsgType.TEXT, WSMsgType.BINARY):
                    continue
                try:
                    body = _decode(msg)
                except ValueError:
                    body = None
                if msg.type == WSMsgType.BINARY and not _is_json(msg.data):
                    conn.msgpack_codec = True
                if not isinstance(body, dict):
                    await self._send(conn, {"stream": "error", "data": {"error_message": "invalid syntax"}})
                    continue
                if not await self._on_action(conn, body):
                    break
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.conns.discard(conn)
        return ws

    async def _on_action(self, conn: _TradeConn, body: dict[str, Any]) -> bool:
        action = body.get("action")
        data = body.get("data") or {}
        if action in ("authenticate", "auth"):
            key = str(data.get("key_id", body.get("key", "")))
            secret = str(data.get("secret_key", body.get("secret", "")))
            ok = self._check_key(key, secret)
            await self._send(conn, {"stream": "authorization", "data": {
                "action": "authenticate", "status": "authorized" if ok else "unauthorized"}})
            if not ok:
                await conn.ws.close()
                return False
            conn.authorized = True
        elif action == "listen":
            if not conn.authorized:
                await self._send(conn, {"stream": "authorization", "data": {
                    "action": "listen", "status": "unauthorized"}})
                return True
            streams = [s for s in data.get("streams", []) if s == "trade_updates"]
            conn.listening = bool(streams)
            await self._send(conn, {"stream": "listening", "data": {"streams": streams}})
        else:
            await self._send(conn, {"stream": "error", "data": {"error_message": "invalid action"}})
        return True

    async def emit(self, events: Sequence[TradeEvent]) -> None:
        """Send ``events`` in order to every listener, through the duplicate/out-of-order faults."""
        async with self._lock:  # one sender at a time keeps the stream's order the venue's order
            for event in events:
                if self._faults.reorder_trade_updates > 0:
                    self._held.append(event)
                    self._faults.reorder_trade_updates -= 1
                    if self._faults.reorder_trade_updates == 0:
                        await self._release_held()
                    continue
                await self._send_event(event)

    async def flush_held(self) -> None:
        """Send whatever the reorder fault still holds (reversed), e.g. when fewer events came than asked."""
        async with self._lock:
            self._faults.reorder_trade_updates = 0
            await self._release_held()

    async def _release_held(self) -> None:
        held, self._held = self._held[::-1], []
        for event in held:
            await self._send_event(event)

    async def _send_event(self, event: TradeEvent) -> None:
        copies = 1
        if self._faults.duplicate_trade_updates > 0:
            self._faults.duplicate_trade_updates -= 1
            copies = 2
        payload = wire.trade_update_json(event)
        for _ in range(copies):
            targets = [c for c in self.conns if c.listening]
            sent_ns = time.monotonic_ns()
            for conn in targets:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await self._send(conn, payload)
            ex = event.execution
            self._records.trade_updates.append(TradeUpdateRecord(
                event.event, event.order.client_order_id, ex.execution_id if ex else None, sent_ns, len(targets)))

    async def drop(self) -> int:
        conns = list(self.conns)
        for conn in conns:
            if conn.request.transport is not None:
                conn.request.transport.abort()
        self.conns.clear()
        return len(conns)

    async def close(self) -> None:
        for conn in list(self.conns):
            with contextlib.suppress(Exception):
                await conn.ws.close()

    async def _send(self, conn: _TradeConn, payload: dict[str, Any]) -> None:
        if conn.msgpack_codec:
            await conn.ws.send_bytes(msgpack.packb(payload))
        elif self._binary:
            await conn.ws.send_bytes(json.dumps(payload).encode())
        else:
            await conn.ws.send_str(json.dumps(payload))


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True
