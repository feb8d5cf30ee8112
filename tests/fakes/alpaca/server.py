"""``FakeAlpaca``: Alpaca's trading and market-data APIs on one aiohttp server (127.0.0.1, ephemeral port).

The real alpaca-py clients are pointed at it with ``url_override`` (see ``base_url`` and the ``*_stream_url``
properties), so the wire protocol of the real API is the contract: every body the fake sends validates in
alpaca-py's models, errors carry Alpaca's ``{"code", "message"}`` body, and each request is checked for the
``APCA-API-KEY-ID`` / ``APCA-API-SECRET-KEY`` headers. REST routes: ``/v2/account``, ``/v2/orders`` (POST,
GET, DELETE), ``/v2/orders/{id}`` (GET, DELETE), ``/v2/orders:by_client_order_id``, ``/v2/positions``,
``/v2/positions/{symbol}`` (GET, DELETE = close), ``/v2/assets/{symbol}``, ``/v2/clock``, ``/v2/calendar``,
``/v2/stocks/bars`` and ``/v1beta3/crypto/{loc}/bars``. Websockets: ``/v2/{iex|sip|delayed_sip|test}``,
``/v1beta3/crypto/{loc}`` and ``/stream`` (see ``streams``).

The test is the market: ``publish_bar`` trades a bar (fills first, at the instant the bar opened, then the bar
frame goes out, as on the venue where a minute bar is only published after its minute ended) and
``add_history`` stores bars for the historical API only. Faults are queued through the methods below and
consumed in request order; ``records`` keeps every request, client order id, bar frame and trade update.

The REST clients are synchronous (requests): call them off the loop the fake runs on
(``asyncio.to_thread``), or the loop blocks on a request only it could answer.
"""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pandas as pd
from aiohttp import web

from tests.fakes.alpaca import wire
from tests.fakes.alpaca.faults import Delay, FaultPlan, HttpFault, Records, Rejection, RequestRecord
from tests.fakes.alpaca.market import Bar, Execution, Market, Order, OrderError, Position, TradeEvent, to_decimal
from tests.fakes.alpaca.streams import MarketDataHub, TradeUpdatesHub

KEY_ID = "PKFAKEKEY0000000000"
SECRET_KEY = "fake-secret-0000000000000000000000000000"
_MAX_BARS_PAGE = 10_000  # Alpaca's cap on ``limit`` for market data
_WS_FEEDS = "iex|sip|delayed_sip|test|otc|boats|overnight"


class FakeAlpaca:
    """A wire-level Alpaca for tests. ``async with FakeAlpaca() as fake:`` or ``await start()``/``close()``.

    Args:
        key_id, secret_key: the only credentials accepted (REST headers and both websockets).
        cash: the account's starting cash.
        start_time: market time before the first bar is published (default: now, UTC).
        bad_key_status: the HTTP status for wrong REST credentials (Alpaca answers 401; some gateways 403).
        trade_updates_binary: send trade updates in binary frames as Alpaca's paper endpoint does.
        max_fill_qty_per_bar: a global cap on the quantity one bar fills per order (partial fills).
        rate_limit_per_minute: when set, a real fixed-window limit: the request past it in a minute gets 429.
        bars_page_size: the most bars one historical page returns (below Alpaca's 10,000 to test paging).
        market_open: what /v2/clock's ``is_open`` says; None computes it from the NYSE calendar at market time.
        check_buying_power: refuse buys that cost more than the buying power (403, as Alpaca does).
    """

    def __init__(self, *, key_id: str = KEY_ID, secret_key: str = SECRET_KEY, cash: object = 100_000,
                 account_number: str = "PA3FAKE00001", start_time: datetime | None = None,
                 bad_key_status: int = 401, trade_updates_binary: bool = True,
                 max_fill_qty_per_bar: object | None = None, rate_limit_per_minute: int | None = None,
                 bars_page_size: int = _MAX_BARS_PAGE, market_open: bool | None = True,
                 check_buying_power: bool = True) -> None:
        self.key_id = key_id
        self.secret_key = secret_key
        self.account_number = account_number
        self.bad_key_status = bad_key_status
        self.rate_limit_per_minute = rate_limit_per_minute
        self.bars_page_size = bars_page_size
        self.market_open = market_open
        self.market = Market(
            cash=to_decimal(cash), start_time=(start_time or datetime.now(UTC)).astimezone(UTC),
            max_fill_qty_per_bar=None if max_fill_qty_per_bar is None else to_decimal(max_fill_qty_per_bar),
            check_buying_power=check_buying_power)
        self.faults = FaultPlan()
        self.records = Records()
        self.market_data = MarketDataHub(self._check_key, self.faults, self.records)
        self.trade_updates = TradeUpdatesHub(self._check_key, self.faults, self.records,
                                             binary_frames=trade_updates_binary)
        self._window: deque[float] = deque()  # monotonic arrival times of the last minute's served requests
        self._runner: web.AppRunner | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle and URLs
    async def start(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        r = app.router
        r.add_get("/v2/account", self._account)
        r.add_post("/v2/orders", self._submit)
        r.add_get("/v2/orders", self._list_orders)
        r.add_delete("/v2/orders", self._cancel_all)
        r.add_get("/v2/orders:by_client_order_id", self._order_by_client_id)
        r.add_get("/v2/orders/{order_id}", self._get_order)
        r.add_delete("/v2/orders/{order_id}", self._cancel)
        r.add_get("/v2/positions", self._positions)
        r.add_get("/v2/positions/{symbol:.+}", self._position)
        r.add_delete("/v2/positions/{symbol:.+}", self._close_position)
        r.add_get("/v2/assets/{symbol:.+}", self._asset)
        r.add_get("/v2/clock", self._clock)
        r.add_get("/v2/calendar", self._calendar)
        r.add_get("/v2/stocks/bars", self._bars)
        r.add_get("/v1beta3/crypto/{loc}/bars", self._bars)
        r.add_get("/stream", self.trade_updates.handle)
        r.add_get(f"/v2/{{feed:{_WS_FEEDS}}}", self.market_data.handle)
        r.add_get("/v1beta3/crypto/{loc:[a-z-]+}", self.market_data.handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)  # its log line holds keys
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        if not self.port:
            server = site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def close(self) -> None:
        if self._runner is not None:
            await self.market_data.close()
            await self.trade_updates.close()
            await self._runner.cleanup()
            self._runner = None

    async def go_away(self) -> None:
        """Stop listening and close every connection: connections are refused until ``come_back``.
        The venue's state (orders, positions, history) is kept, as a real outage keeps it."""
        await self.close()

    async def come_back(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def __aenter__(self) -> FakeAlpaca:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def base_url(self) -> str:
        """``url_override`` for TradingClient and the historical data clients (they append ``/v2/...``)."""
        return f"http://127.0.0.1:{self.port}"

    def stock_stream_url(self, feed: str = "iex") -> str:
        """``url_override`` for StockDataStream (it replaces the whole websocket URL)."""
        return f"ws://127.0.0.1:{self.port}/v2/{feed}"

    @property
    def crypto_stream_url(self) -> str:
        """``url_override`` for CryptoDataStream."""
        return f"ws://127.0.0.1:{self.port}/v1beta3/crypto/us"

    @property
    def trading_stream_url(self) -> str:
        """``url_override`` for TradingStream."""
        return f"ws://127.0.0.1:{self.port}/stream"

    # ------------------------------------------------------------------ the market (test side)
    async def publish_bar(self, symbol: str, ts_open: datetime, o: object, h: object, low: object, c: object,
                          v: object = 100, *, trade_count: int | None = None, vwap: object | None = None) -> Bar:
        """Trade one bar (``ts_open`` = its OPEN time): fill what it crosses, send fills, then the bar frame."""
        bar = Bar.make(symbol, ts_open, o, h, low, c, v, trade_count=trade_count, vwap=vwap)
        await self.publish_bars([bar])
        return bar

    async def publish_bars(self, bars: Sequence[Bar]) -> None:
        """Trade several bars (e.g. one minute across symbols) and send them in ONE market-data frame."""
        events: list[TradeEvent] = []
        for bar in bars:
            events += self.market.on_bar(bar)
        await self.trade_updates.emit(events)
        await self.market_data.broadcast(bars)

    def add_history(self, bars: Iterable[Bar]) -> None:
        """Bars for the historical API only: no fills, no frames, market time unchanged."""
        self.market.add_history(bars)

    def set_max_fill_qty(self, client_order_id: str, qty: object) -> None:
        """Partial fills for one order (before or after it arrives): at most ``qty`` per bar."""
        self.market.per_order_fill_cap[client_order_id] = to_decimal(qty)

    async def expire_day_orders(self) -> None:
        """The session closes: open day orders expire (``expired`` trade updates)."""
        await self.trade_updates.emit(self.market.expire_day_orders())

    async def cancel_by_venue(self, client_order_id: str) -> None:
        """The venue cancels an open order on its own (e.g. a halt): a ``canceled`` trade update."""
        await self.trade_updates.emit(self.market.cancel(self.market.by_client_id[client_order_id].id))

    def set_time(self, when: datetime) -> None:
        self.market.set_time(when)

    # ------------------------------------------------------------------ state (test side)
    @property
    def cash(self) -> Decimal:
        return self.market.cash

    @property
    def orders(self) -> list[Order]:
        return list(self.market.orders.values())

    def order(self, client_order_id: str) -> Order | None:
        return self.market.by_client_id.get(client_order_id)

    def positions(self) -> dict[str, Position]:
        return dict(self.market.positions)

    @property
    def executions(self) -> list[Execution]:
        return list(self.market.executions)

    @property
    def received_client_order_ids(self) -> list[str]:
        """Every client_order_id POSTed to /v2/orders, in arrival order, duplicates and refused ones included."""
        return list(self.records.client_order_ids)

    async def wait_until(self, check: Callable[[], bool], seconds: float = 5.0, what: str = "") -> None:
        """Poll until ``check()``; AssertionError after ``seconds``."""
        deadline = asyncio.get_running_loop().time() + seconds
        while not check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"fake Alpaca: not within {seconds} s: {what}")
            await asyncio.sleep(0.005)

    async def wait_subscribed(self, symbol: str, connections: int = 1, seconds: float = 5.0) -> None:
        """Until ``connections`` authenticated market-data sockets receive ``symbol``'s bars."""
        await self.wait_until(lambda: self.market_data.subscribed(symbol) >= connections, seconds,
                              f"{connections} market-data subscription(s) to {symbol}")

    async def wait_listening(self, listeners: int = 1, seconds: float = 5.0) -> None:
        """Until ``listeners`` trade-update sockets have sent ``listen``."""
        await self.wait_until(lambda: self.trade_updates.listeners >= listeners, seconds,
                              f"{listeners} trade-update listener(s)")

    # ------------------------------------------------------------------ faults (test side)
    def fail_next(self, n: int = 1, status: int = 500, *, path_prefix: str = "/",
                  reset_in_seconds: float = 1.0) -> None:
        """Answer the next ``n`` REST requests under ``path_prefix`` with ``status`` instead of serving them.
        429 carries X-RateLimit-Limit/Remaining/Reset (Reset = epoch seconds, now + ``reset_in_seconds``)."""
        self.faults.http.extend(HttpFault(status, path_prefix, reset_in_seconds) for _ in range(n))

    def rate_limit_next(self, n: int = 1, *, reset_in_seconds: float = 1.0, path_prefix: str = "/") -> None:
        self.fail_next(n, 429, path_prefix=path_prefix, reset_in_seconds=reset_in_seconds)

    def delay_next(self, seconds: float, n: int | None = 1, *, path_prefix: str = "/") -> None:
        """Answer the next ``n`` REST requests (all of them while ``n`` is None) ``seconds`` late."""
        self.faults.delays.append(Delay(seconds, n, path_prefix))

    def clear_delays(self) -> None:
        self.faults.delays.clear()

    def lose_next_submit_response(self, n: int = 1) -> None:
        """The next ``n`` order submissions are carried out, then the connection is cut without a response."""
        self.faults.lose_submit_responses += n

    def reject_next_order(self, reason: str = "insufficient buying power", *, asynchronous: bool = False,
                          status: int = 403, code: int = 40310000) -> None:
        """Refuse the next order: HTTP ``status`` with ``{"code", "message": reason}``, or when
        ``asynchronous`` accept it and then send a ``rejected`` trade update (its status becomes rejected)."""
        self.faults.rejections.append(Rejection(reason, asynchronous, status, code))

    def duplicate_next_trade_updates(self, n: int = 1) -> None:
        """Each of the next ``n`` trade updates is sent twice (same execution id)."""
        self.faults.duplicate_trade_updates += n

    def reorder_next_trade_updates(self, n: int = 2) -> None:
        """Hold the next ``n`` trade updates and send them in reverse order once the n-th arrives."""
        self.faults.reorder_trade_updates = n

    async def flush_trade_updates(self) -> None:
        """Release trade updates still held by ``reorder_next_trade_updates``."""
        await self.trade_updates.flush_held()

    async def drop_market_data(self, *, stay_down: bool = False) -> int:
        """Cut every market-data socket now (TCP abort); with ``stay_down`` refuse reconnects until restored."""
        self.faults.market_data_down = stay_down
        return await self.market_data.drop()

    async def drop_trade_updates(self, *, stay_down: bool = False) -> int:
        """Cut every trade-updates socket now; with ``stay_down`` refuse reconnects until restored."""
        self.faults.trade_updates_down = stay_down
        return await self.trade_updates.drop()

    def restore_streams(self) -> None:
        self.faults.market_data_down = self.faults.trade_updates_down = False

    # ------------------------------------------------------------------ plumbing
    def _check_key(self, key: str, secret: str) -> bool:
        return key == self.key_id and secret == self.secret_key

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await handler(request)  # streams authenticate in-band and have their own faults
        arrived_ns = time.monotonic_ns()
        cid = await _client_order_id(request) if request.method == "POST" and request.path == "/v2/orders" else None
        self.records.requests.append(RequestRecord(request.method, request.path, dict(request.query), arrived_ns,
                                                   cid))
        if cid is not None:
            self.records.client_order_ids.append(cid)  # counted on arrival, whatever the answer
        response = await self._serve(request, handler)
        status = 0 if request.get("response_lost") else response.status  # 0: the client got no answer
        self.records.responses.append((request.method, request.path, status))
        return response

    async def _serve(self, request: web.Request, handler: Callable[..., Any]) -> web.StreamResponse:
        if not self._check_key(request.headers.get("APCA-API-KEY-ID", ""),
                               request.headers.get("APCA-API-SECRET-KEY", "")):
            if self.bad_key_status == 403:
                return _error(403, 40310000, "forbidden")
            return _error(self.bad_key_status, 40110000, "request is not authorized")
        delay = self.faults.take_delay(request.path)
        if delay:
            await asyncio.sleep(delay)
        fault = self.faults.take_http(request.path)
        if fault is None and self._over_rate_limit():
            fault = HttpFault(429, reset_in_seconds=self._window[0] + 60 - time.monotonic())
        if fault is not None:
            if fault.status == 429:
                return _error(429, 42910000, "rate limit exceeded", headers=self._rate_headers(
                    remaining=0, reset=math.ceil(time.time() + fault.reset_in_seconds)))
            return _error(fault.status, fault.status * 100_000 + 10_000,
                          "internal server error" if fault.status == 500 else f"HTTP {fault.status}")
        try:
            response = await handler(request)
        except OrderError as e:
            response = _error(e.status, e.code, e.message)
        except web.HTTPException as e:  # an unknown path or method: Alpaca's JSON body, not aiohttp's text
            response = _error(e.status, e.status * 100_000 + 10_000, e.reason.lower())
        if isinstance(response, web.Response):
            limit = self.rate_limit_per_minute or 200
            oldest = self._window[0] if self._window else time.monotonic()
            reset = math.ceil(time.time() + oldest + 60 - time.monotonic())  # when the oldest leaves the window
            response.headers.update(self._rate_headers(remaining=max(0, limit - len(self._window)), reset=reset))
        return response

    def _over_rate_limit(self) -> bool:
        """A sliding 60 s window of served requests (refused ones do not count), Alpaca's 200/min by default."""
        now = time.monotonic()
        while self._window and self._window[0] <= now - 60:
            self._window.popleft()
        if self.rate_limit_per_minute is not None and len(self._window) >= self.rate_limit_per_minute:
            return True
        self._window.append(now)
        return False

    def _rate_headers(self, *, remaining: int, reset: int) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.rate_limit_per_minute or 200),
                "X-RateLimit-Remaining": str(remaining), "X-RateLimit-Reset": str(reset)}

    # ------------------------------------------------------------------ trading REST
    async def _account(self, request: web.Request) -> web.Response:
        return web.json_response(wire.account_json(self.market, self.account_number))

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise OrderError(400, 40010000, "request body format is invalid") from None
        if not isinstance(body, dict):
            raise OrderError(400, 40010000, "request body format is invalid")
        cid = None if body.get("client_order_id") is None else str(body["client_order_id"])
        if body.get("notional") is not None:
            raise OrderError(422, 40010000, "notional orders are not supported by the fake")
        rejection = self.faults.rejections.pop(0) if self.faults.rejections else None
        if rejection is not None and not rejection.asynchronous:
            raise OrderError(rejection.status, rejection.code, rejection.reason)
        accepted, events = self.market.submit(
            symbol=str(body.get("symbol", "")), qty=body.get("qty"), side=str(body.get("side", "")),
            type=str(body.get("type", body.get("order_type", ""))), time_in_force=str(body.get("time_in_force", "")),
            client_order_id=cid, limit_price=body.get("limit_price"),
            extended_hours=bool(body.get("extended_hours", False)))
        if rejection is not None:
            events += self.market.reject(self.market.orders[accepted.id])
        await self.trade_updates.emit(events)
        if self.faults.lose_submit_responses > 0:
            self.faults.lose_submit_responses -= 1
            request["response_lost"] = True
            if request.transport is not None:
                request.transport.abort()  # the order exists; its submitter hears nothing
            return web.Response(status=204)
        return web.json_response(wire.order_json(accepted))

    async def _list_orders(self, request: web.Request) -> web.Response:
        q = request.query
        status = q.get("status", "open")
        orders = list(self.market.orders.values())
        if status == "open":
            orders = [o for o in orders if o.is_open]
        elif status == "closed":
            orders = [o for o in orders if not o.is_open]
        elif status != "all":
            raise OrderError(422, 40010000, f"invalid status: {status}")
        if "symbols" in q:
            wanted = set(q["symbols"].split(","))
            orders = [o for o in orders if o.symbol in wanted]
        if "side" in q:
            orders = [o for o in orders if o.side == q["side"]]
        if "after" in q:
            after = _parse_time(q["after"])
            orders = [o for o in orders if o.submitted_at and o.submitted_at > after]
        if "until" in q:
            until = _parse_time(q["until"])
            orders = [o for o in orders if o.submitted_at and o.submitted_at < until]
        orders.sort(key=lambda o: o.submitted_at or o.created_at, reverse=q.get("direction", "desc") == "desc")
        limit = min(int(q.get("limit", 50)), 500)
        return web.json_response([wire.order_json(o) for o in orders[:limit]])

    async def _cancel_all(self, request: web.Request) -> web.Response:
        answers = []
        for order in [o for o in self.market.orders.values() if o.is_open]:
            events = self.market.cancel(order.id)
            await self.trade_updates.emit(events)
            answers.append({"id": order.id, "status": 200, "body": wire.order_json(events[-1].order)})
        return web.json_response(answers, status=207)

    async def _order_by_client_id(self, request: web.Request) -> web.Response:
        order = self.market.by_client_id.get(request.query.get("client_order_id", ""))
        if order is None:
            raise OrderError(404, 40410000, "order not found")
        return web.json_response(wire.order_json(order))

    async def _get_order(self, request: web.Request) -> web.Response:
        order = self.market.orders.get(request.match_info["order_id"])
        if order is None:
            raise OrderError(404, 40410000, "order not found")
        return web.json_response(wire.order_json(order))

    async def _cancel(self, request: web.Request) -> web.Response:
        await self.trade_updates.emit(self.market.cancel(request.match_info["order_id"]))
        return web.Response(status=204)

    async def _positions(self, request: web.Request) -> web.Response:
        return web.json_response([wire.position_json(p, self.market.last_price.get(p.symbol))
                                  for p in sorted(self.market.positions.values(), key=lambda p: p.symbol)])

    def _find_position(self, request: web.Request) -> Position:
        key = request.match_info["symbol"]
        pos = self.market.positions.get(key) or next(
            (p for p in self.market.positions.values()
             if key in (wire.asset_id(p.symbol), p.symbol.replace("/", ""))), None)
        if pos is None:
            raise OrderError(404, 40410000, "position does not exist")
        return pos

    async def _position(self, request: web.Request) -> web.Response:
        pos = self._find_position(request)
        return web.json_response(wire.position_json(pos, self.market.last_price.get(pos.symbol)))

    async def _close_position(self, request: web.Request) -> web.Response:
        """Liquidate with a market order for the whole position (or ``qty`` / ``percentage`` of it), as Alpaca does."""
        pos = self._find_position(request)
        qty = abs(pos.qty)
        if "qty" in request.query:
            qty = to_decimal(request.query["qty"])
        elif "percentage" in request.query:
            qty = qty * to_decimal(request.query["percentage"]) / 100
        accepted, events = self.market.submit(symbol=pos.symbol, qty=qty, side="sell" if pos.qty > 0 else "buy",
                                              type="market", time_in_force="day", client_order_id=None)
        await self.trade_updates.emit(events)
        return web.json_response(wire.order_json(accepted))

    async def _asset(self, request: web.Request) -> web.Response:
        return web.json_response(wire.asset_json(request.match_info["symbol"]))

    async def _clock(self, request: web.Request) -> web.Response:
        now = self.market.now()
        cal = _nyse()
        minute = pd.Timestamp(now).floor("min")
        is_open = self.market_open if self.market_open is not None else bool(cal.is_open_on_minute(minute))
        return web.json_response({
            "timestamp": now.astimezone(wire.EASTERN).isoformat(), "is_open": is_open,
            "next_open": cal.next_open(minute).to_pydatetime().astimezone(wire.EASTERN).isoformat(),
            "next_close": cal.next_close(minute).to_pydatetime().astimezone(wire.EASTERN).isoformat(),
        })

    async def _calendar(self, request: web.Request) -> web.Response:
        """NYSE sessions (exchange_calendars) in Alpaca's shape: ET ``HH:MM`` open/close, T+1 settlement."""
        cal = _nyse()
        start = max(date.fromisoformat(request.query["start"][:10]) if "start" in request.query
                    else cal.first_session.date(), cal.first_session.date())
        end = min(date.fromisoformat(request.query["end"][:10]) if "end" in request.query
                  else cal.last_session.date(), cal.last_session.date())
        sessions = cal.sessions_in_range(str(start), str(end)) if start <= end else []
        days = []
        for session in sessions:
            opens = cal.session_open(session).to_pydatetime().astimezone(wire.EASTERN)
            closes = cal.session_close(session).to_pydatetime().astimezone(wire.EASTERN)
            settle = cal.next_session(session) if session < cal.last_session else session
            days.append({"date": session.date().isoformat(), "open": opens.strftime("%H:%M"),
                         "close": closes.strftime("%H:%M"), "session_open": "0400", "session_close": "2000",
                         "settlement_date": settle.date().isoformat()})
        return web.json_response(days)

    # ------------------------------------------------------------------ market-data REST
    async def _bars(self, request: web.Request) -> web.Response:
        """Historical bars, sorted by symbol then time; ``limit`` counts across symbols; an opaque page token."""
        q = request.query
        symbols = [s for s in q.get("symbols", "").split(",") if s]
        if not symbols:
            raise OrderError(400, 40010001, "symbols is required")
        timeframe = q.get("timeframe", "")
        if timeframe not in ("1Min", "1T"):
            raise OrderError(400, 40010001, f"the fake serves 1Min bars only, not {timeframe!r}")
        start = _parse_time(q["start"]) if "start" in q else None
        end = _parse_time(q["end"]) if "end" in q else self.market.now()
        limit = int(q.get("limit") or 1000)
        if not 1 <= limit <= _MAX_BARS_PAGE:
            raise OrderError(422, 42210000, f"invalid limit: must be between 1 and {_MAX_BARS_PAGE}")
        limit = min(limit, self.bars_page_size)
        desc = q.get("sort", "asc") == "desc"
        rows: list[Bar] = []
        for symbol in sorted(set(symbols)):
            series = [b for b in self.market.history.get(symbol, [])
                      if (start is None or b.ts_open >= start) and b.ts_open <= end]
            rows += series[::-1] if desc else series
        offset = _page_offset(q.get("page_token"), rows)
        page = rows[offset:offset + limit]
        out: dict[str, list[dict[str, Any]]] = {}
        for bar in page:
            out.setdefault(bar.symbol, []).append(wire.bar_rest_json(bar))
        more = offset + limit < len(rows)
        token = _page_token(rows[offset + limit]) if more else None
        return web.json_response({"bars": out, "next_page_token": token})


async def _client_order_id(request: web.Request) -> str | None:
    """The client order id of an order submission, read on arrival (aiohttp keeps the body for the handler)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    cid = body.get("client_order_id") if isinstance(body, dict) else None
    return None if cid is None else str(cid)


def _page_token(bar: Bar) -> str:
    return base64.urlsafe_b64encode(f"{bar.symbol}|{wire.epoch_ns(bar.ts_open)}".encode()).decode()


def _page_offset(token: str | None, rows: list[Bar]) -> int:
    if not token:
        return 0
    try:
        symbol, ns = base64.urlsafe_b64decode(token.encode()).decode().split("|")
    except ValueError:
        raise OrderError(400, 40010001, "invalid page_token") from None
    for i, bar in enumerate(rows):
        if bar.symbol == symbol and wire.epoch_ns(bar.ts_open) == int(ns):
            return i
    raise OrderError(400, 40010001, "invalid page_token")


def _parse_time(text: str) -> datetime:
    """RFC 3339 (``Z`` or an offset) or a bare date; a naive time is UTC, as Alpaca reads it."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_CALENDAR: Any = None


def _nyse() -> Any:
    """The NYSE calendar, loaded once on first use (about 0.2 s)."""
    global _CALENDAR
    if _CALENDAR is None:
        import exchange_calendars

        _CALENDAR = exchange_calendars.get_calendar("XNYS")
    return _CALENDAR


def _error(status: int, code: int, message: str, *, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(wire.error_body(code, message), status=status, headers=headers)

