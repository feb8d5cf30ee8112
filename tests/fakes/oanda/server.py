"""``FakeOanda``: OANDA's v20 REST API and pricing stream on one aiohttp server (127.0.0.1, ephemeral port).

The real oandapyV20 client is pointed at it through an entry in its
``TRADING_ENVIRONMENTS`` (``base_url`` serves both the API and the stream
host), so the wire is the contract: each endpoint answers with the success
status oandapyV20 expects (201 for an order create, 200 otherwise), errors
carry v20's ``{"errorMessage", "errorCode"}`` body (with the
``*RejectTransaction`` of a refused order), and every request must carry
``Authorization: Bearer <token>``.

REST: ``/v3/accounts``, ``/v3/accounts/{id}`` and ``/summary``, ``/orders``
(POST), ``/orders/{id|@clientID}`` (GET), ``/orders/{spec}/cancel`` (PUT),
``/pendingOrders``, ``/openPositions``, ``/transactions/sinceid``, and
``/v3/instruments/{instrument}/candles``. Stream:
``/v3/accounts/{id}/pricing/stream``, newline-delimited JSON ``PRICE`` and
``HEARTBEAT`` lines.

The test is the market: ``price`` publishes a tick (working orders fill
against it, then the line goes out), ``heartbeat`` moves the venue clock.
``heartbeat_every`` sends a HEARTBEAT at the venue clock that often (wall seconds).
Faults: ``go_silent`` (connections stay open and say nothing), ``drop_stream``
(connections closed; ``stay_down`` refuses new ones until ``restore_stream``),
``rate_limit_next`` (429), ``fail_next`` (5xx), ``lose_next_submit_response``
(the order is placed, the answer never comes), ``reject_next_order`` (400
with a reject reason, or 201 with an immediate cancel as OANDA does for a
market order without margin), ``max_fill_units`` (partial fills), ``overfill_next`` (a fill larger than
the order). Candles answer ``from``/``count``, ``from``/``to`` (at most 5,000 slots; ``count`` beside both is
refused) and ``to``/``count`` as v20 does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from aiohttp import web

from brokers.live.wire import WireError, epoch_seconds
from tests.fakes.oanda.market import Market, Order, OrderError, Tick, rfc3339

__all__ = ["ACCOUNT_ID", "TOKEN", "FakeOanda"]

TOKEN = "fake-oanda-token-0000000000000000-00000000000000000000"
ACCOUNT_ID = "101-004-1234567-001"
_GRANULARITY = {"S5": 5, "S10": 10, "S15": 15, "S30": 30, "M1": 60, "M2": 120, "M4": 240, "M5": 300,
                "M10": 600, "M15": 900, "M30": 1800, "H1": 3600, "H2": 7200, "H3": 10800, "H4": 14400}
_SINCE_PAGE = 1000


@dataclass
class _Records:
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    client_ids: list[str] = field(default_factory=list)  # every clientExtensions.id POSTed, repeats included
    stream_connections: int = 0
    lines: int = 0
    candle_queries: list[dict[str, str]] = field(default_factory=list)  # each candles request's query, answered
    order_arrivals_ns: list[int] = field(default_factory=list)  # time.monotonic_ns of each order create's arrival
    heartbeats_sent_ns: list[int] = field(default_factory=list)  # time.monotonic_ns of each HEARTBEAT line written

    def duplicate_client_ids(self) -> dict[str, int]:
        return {cid: n for cid, n in Counter(self.client_ids).items() if n > 1}


class FakeOanda:
    """``async with FakeOanda(start_time=T0) as fake:``; ``fake.base_url`` is both the API and the stream host."""

    def __init__(self, *, token: str = TOKEN, account_id: str = ACCOUNT_ID, balance: object = 100_000,
                 start_time: int = 0, instruments: tuple[str, ...] = ("EUR_USD",), commission: object = 0,
                 max_fill_units: object | None = None, heartbeat_every: float | None = None) -> None:
        self.token = token
        self.heartbeat_every = heartbeat_every  # wall seconds between HEARTBEATs (at the venue clock), as OANDA's 5 s
        self.market = Market(account_id=account_id, balance=Decimal(str(balance)), start_time=start_time,
                             commission=Decimal(str(commission)), instruments=instruments)
        if max_fill_units is not None:
            self.market.max_fill_units = Decimal(str(max_fill_units))
        self.records = _Records()
        self._streams: list[asyncio.Queue[bytes | None]] = []
        self._silent: list[asyncio.Queue[bytes | None]] = []
        self._stream_down = False
        self._http_faults: deque[tuple[str, int]] = deque()
        self._lose_submits = 0
        self._rejects: deque[tuple[str, bool]] = deque()
        self._runner: web.AppRunner | None = None
        self._beat: asyncio.Task[None] | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        acct = "/v3/accounts/{account}"
        r.add_get("/v3/accounts", self._accounts)
        r.add_get(acct, self._account)
        r.add_get(acct + "/summary", self._account)
        r.add_post(acct + "/orders", self._create)
        r.add_get(acct + "/orders/{spec}", self._order)
        r.add_put(acct + "/orders/{spec}/cancel", self._cancel)
        r.add_get(acct + "/pendingOrders", self._pending)
        r.add_get(acct + "/openPositions", self._positions)
        r.add_get(acct + "/transactions/sinceid", self._since)
        r.add_get(acct + "/pricing/stream", self._stream)
        r.add_get("/v3/instruments/{instrument}/candles", self._candles)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        if self.heartbeat_every:
            self._beat = asyncio.get_running_loop().create_task(self._beat_forever(self.heartbeat_every))

    async def _beat_forever(self, every: float) -> None:
        while True:
            await asyncio.sleep(every)
            self.heartbeat()

    async def close(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        for queue in self._streams + self._silent:
            queue.put_nowait(None)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOanda:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ------------------------------------------------------------------ the market
    def price(self, instrument: str, ts: int, bid: object, ask: object) -> list[dict[str, Any]]:
        """Publish a tick at venue time ``ts``: fills first, then the PRICE line to every stream."""
        tick = Tick(instrument, ts, Decimal(str(bid)), Decimal(str(ask)))
        fills = self.market.tick(tick)
        self._broadcast({"type": "PRICE", "instrument": instrument, "time": rfc3339(ts), "tradeable": True,
                         "status": "tradeable", "bids": [{"price": str(tick.bid), "liquidity": 10_000_000}],
                         "asks": [{"price": str(tick.ask), "liquidity": 10_000_000}],
                         "closeoutBid": str(tick.bid), "closeoutAsk": str(tick.ask)})
        return fills

    def heartbeat(self, ts: int | None = None) -> None:
        """Move the venue clock to ``ts`` (default: where it is) and send a HEARTBEAT line."""
        if ts is not None:
            self.market.advance(ts)
        self._broadcast({"type": "HEARTBEAT", "time": rfc3339(self.market.clock)})

    def _broadcast(self, message: dict[str, Any]) -> None:
        line = (json.dumps(message) + "\n").encode()
        for queue in self._streams:
            queue.put_nowait(line)

    @property
    def orders(self) -> list[Order]:
        return self.market.orders

    def order(self, client_id: str) -> Order | None:
        return self.market.find(f"@{client_id}")

    def net_positions(self) -> dict[str, Decimal]:
        """Net units per OANDA instrument (flat ones left out)."""
        held = {i: sum((t[0] for t in trades), Decimal(0)) for i, trades in self.market.trades.items()}
        return {i: units for i, units in held.items() if units}

    @property
    def fills(self) -> list[dict[str, Any]]:
        return self.market.fills

    async def wait_until(self, check: Callable[[], bool], seconds: float = 5.0, what: str = "") -> None:
        deadline = time.monotonic() + seconds
        while not check():
            if time.monotonic() > deadline:
                raise AssertionError(f"fake OANDA: timed out after {seconds} s waiting for {what or check}")
            await asyncio.sleep(0.01)

    async def wait_streaming(self, connections: int = 1, seconds: float = 5.0) -> None:
        await self.wait_until(lambda: len(self._streams) >= connections, seconds,
                              f"{connections} pricing stream connection(s)")

    # ------------------------------------------------------------------ faults
    def go_silent(self) -> None:
        """Open streams say nothing more (no price, no heartbeat) but stay open: a dead stream."""
        self._silent += self._streams
        self._streams = []

    async def drop_stream(self, *, stay_down: bool = False) -> int:
        """Close every pricing-stream connection; ``stay_down`` refuses new ones until ``restore_stream``."""
        dropped = len(self._streams)
        for queue in self._streams:
            queue.put_nowait(None)
        self._streams = []
        self._stream_down = stay_down
        await asyncio.sleep(0)
        return dropped

    def restore_stream(self) -> None:
        self._stream_down = False

    def rate_limit_next(self, n: int = 1, *, path_prefix: str = "/v3") -> None:
        self._http_faults.extend([(path_prefix, 429)] * n)

    def fail_next(self, n: int = 1, status: int = 500, *, path_prefix: str = "/v3") -> None:
        self._http_faults.extend([(path_prefix, status)] * n)

    def overfill_next(self, units: object) -> None:
        """The next fill executes ``units`` more than the order had left (OANDA's "position size escalation")."""
        self.market.overfill_units = Decimal(str(units))

    def lose_next_submit_response(self, n: int = 1) -> None:
        self._lose_submits += n

    def reject_next_order(self, reason: str = "INSUFFICIENT_MARGIN", *, cancel_after_create: bool = False) -> None:
        """The next order create is refused: 400 with ``reason``, or (``cancel_after_create``) 201 with the
        order created and cancelled at once for ``reason`` (OANDA's answer to a market order without margin)."""
        self._rejects.append((reason, cancel_after_create))

    # ------------------------------------------------------------------ plumbing
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.method == "POST" and request.path.endswith("/orders"):
            self.records.order_arrivals_ns.append(time.monotonic_ns())
        self.records.requests.append((request.method, request.path))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _error(401, "Insufficient authorization to perform request.")
        account = request.match_info.get("account")
        if account is not None and account != self.market.account_id:
            return _error(403, "The provided request was forbidden.")
        for i, (prefix, status) in enumerate(self._http_faults):
            if request.path.startswith(prefix) and not request.path.endswith("/pricing/stream"):
                del self._http_faults[i]
                if status == 429:
                    return _error(429, "Rate limit violation. Allowed rate: 100 requests per second", "RATE_LIMIT")
                return _error(status, "Internal server error")
        return await handler(request)

    def _answer(self, body: dict[str, Any], status: int = 200) -> web.Response:
        return web.json_response({**body, "lastTransactionID": self.market.last_id}, status=status)

    async def _accounts(self, request: web.Request) -> web.Response:
        return web.json_response({"accounts": [{"id": self.market.account_id, "tags": []}]})

    async def _account(self, request: web.Request) -> web.Response:
        return self._answer({"account": self.market.summary()})

    async def _create(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "Invalid JSON", "INVALID_JSON")
        cid = ((body.get("order") or {}).get("clientExtensions") or {}).get("id") if isinstance(body, dict) else None
        if cid:
            self.records.client_ids.append(cid)
        try:
            if self._rejects and not self._rejects[0][1]:
                reason, _ = self._rejects.popleft()
                self.market.reject(str((body.get("order") or {}).get("type") or "MARKET"), body["order"], reason)
            order, created = self.market.create(body)
        except OrderError as exc:
            return web.json_response(exc.body, status=exc.status)
        answer: dict[str, Any] = {"orderCreateTransaction": created, "relatedTransactionIDs": [created["id"]]}
        if self._rejects:
            reason, _ = self._rejects.popleft()
            cancel = self.market.cancel(order, reason)
            answer.update(orderCancelTransaction=cancel, relatedTransactionIDs=[created["id"], cancel["id"]])
        if self._lose_submits:
            self._lose_submits -= 1
            assert request.transport is not None
            request.transport.close()  # placed, and the answer is lost on the way
            raise ConnectionResetError("fake: submit answer lost")
        return self._answer(answer, 201)

    def _find(self, request: web.Request) -> Order | None:
        return self.market.find(request.match_info["spec"])

    async def _order(self, request: web.Request) -> web.Response:
        order = self._find(request)
        if order is None:
            return _error(404, "The Order specified does not exist", "ORDER_DOESNT_EXIST")
        return self._answer({"order": order.as_json()})

    async def _cancel(self, request: web.Request) -> web.Response:
        order = self._find(request)
        if order is None or order.state != "PENDING":
            reason = "ORDER_DOESNT_EXIST" if order is None else "ORDER_NOT_CANCELABLE"
            tx = self.market._tx("ORDER_CANCEL_REJECT", orderID=order.id if order else "",
                                 rejectReason=reason)
            return web.json_response({"orderCancelRejectTransaction": tx, "relatedTransactionIDs": [tx["id"]],
                                      "lastTransactionID": tx["id"], "errorCode": reason,
                                      "errorMessage": "The Order cannot be cancelled"}, status=404)
        tx = self.market.cancel(order)
        return self._answer({"orderCancelTransaction": tx, "relatedTransactionIDs": [tx["id"]]})

    async def _pending(self, request: web.Request) -> web.Response:
        return self._answer({"orders": [o.as_json() for o in self.market.orders if o.state == "PENDING"]})

    async def _positions(self, request: web.Request) -> web.Response:
        found = [self.market.position(i) for i in self.market.instruments]
        return self._answer({"positions": [p for p in found if p is not None]})

    async def _since(self, request: web.Request) -> web.Response:
        after = request.query.get("id")
        if after is None or not after.isdigit():
            return _error(400, "Invalid value specified for 'id'", "INVALID_PARAMETER")
        return self._answer({"transactions": self.market.since(after, _SINCE_PAGE)})

    async def _candles(self, request: web.Request) -> web.Response:
        instrument = request.match_info["instrument"]
        if instrument not in self.market.instruments:
            return _error(400, f"Invalid value specified for 'instrument': {instrument}", "INVALID_INSTRUMENT")
        q = request.query
        granularity = q.get("granularity", "S5")
        if granularity not in _GRANULARITY:
            return _error(400, f"Invalid value specified for 'granularity': {granularity}")
        step = _GRANULARITY[granularity]
        from_text, to_text = q.get("from"), q.get("to")
        if from_text and to_text and "count" in q:  # v20: the range alone decides how many
            return _error(400, "'count' cannot be specified when 'to' and 'from' parameters are also set",
                          "INVALID_PARAMETER")
        try:
            from_ts = _parse_time(from_text) if from_text else None
            to_ts = _parse_time(to_text) if to_text else None
            count = int(q.get("count", "500"))
        except ValueError:
            return _error(400, "Invalid value specified for 'from', 'to' or 'count'")
        if from_ts is not None and to_ts is not None:
            if to_ts <= from_ts:
                return _error(400, "Invalid value specified for 'to': not after 'from'")
            count = -(-(to_ts - from_ts) // step)  # the range's candle slots
        if not 1 <= count <= 5000:
            return _error(400, "Maximum value for 'count' exceeded")
        self.records.candle_queries.append(dict(q))
        candles = self.market.candles(instrument, step, from_ts, count, q.get("price", "M"), to_ts=to_ts)
        return web.json_response({"instrument": instrument, "granularity": granularity, "candles": candles})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        if self._stream_down:
            return _error(503, "Service unavailable")
        wanted = set((request.query.get("instruments") or "").split(","))
        unknown = wanted - set(self.market.instruments)
        if unknown or not wanted:
            return _error(400, f"Invalid value specified for 'instruments': {sorted(unknown)}", "INVALID_INSTRUMENT")
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        queue.put_nowait((json.dumps({"type": "HEARTBEAT", "time": rfc3339(self.market.clock)}) + "\n").encode())
        self._streams.append(queue)
        self.records.stream_connections += 1
        try:
            while (line := await queue.get()) is not None:
                if line.startswith(b'{"type": "HEARTBEAT"'):
                    self.records.heartbeats_sent_ns.append(time.monotonic_ns())
                await response.write(line)
                self.records.lines += 1
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            for group in (self._streams, self._silent):
                if queue in group:
                    group.remove(queue)
        return response


def _parse_time(text: str) -> int:
    """RFC 3339 (OANDA's default) or UNIX seconds (``Accept-Datetime-Format: UNIX``)."""
    if text.replace(".", "", 1).isdigit():
        return int(float(text))
    try:
        return epoch_seconds(text, "from")
    except WireError as exc:
        raise ValueError(str(exc)) from None


def _error(status: int, message: str, code: str | None = None) -> web.Response:
    body: dict[str, Any] = {"errorMessage": message}
    if code:
        body["errorCode"] = code
    return web.json_response(body, status=status)
