"""``OandaBroker``: the ``Broker`` protocol over OANDA's v20 API (practice by default), FX on oandapyV20.

* REST (orders, positions, account, look-ups by client id, transactions,
  candles) goes through ``OandaRest``: worker threads, one client per thread,
  the rate limit, nothing re-sent.
* The pricing stream runs in its own thread (``brokers.live.ThreadedStream``)
  under a ``ConnectionSupervisor``; ticks become close-stamped bars
  (``BarBuilder``: mid by default, bid or ask configurable). No message for
  ``heartbeat_limit_seconds`` is a dead stream: the supervisor reconnects, and
  its ready hook backfills every complete candle since the last bar handed on
  and seeds the interval in progress from its incomplete candle before a live
  tick counts; each bar time is handed on once.
* Fills, cancels and financing come from the account's transactions, read
  from a cursor (``transactions/sinceid``) every ``transactions_poll_seconds``
  (one path for live updates and for what a restart or outage missed: nothing
  is lost between a stream's reconnects because there is no stream). Each
  transaction is applied once (``SeenIds``), updates only move forward.
* A submit is sent once (``submit_once``): a clear refusal is rejected with
  our reason code first (``insufficient_margin: OANDA INSUFFICIENT_MARGIN``),
  a duplicate client id means "already sent" (looked up by ``@<client id>``),
  anything ambiguous is looked up until the in-flight deadline, then UNKNOWN.
* Money is ``Decimal`` from the wire strings. The snapshot's ``cash`` is the
  balance less the open positions' cost (units * average price), the books'
  own definition, so cash moves by notional and fee exactly as the portfolio
  books a fill; ``equity`` is the NAV. This holds for instruments quoted in the
  account currency (EUR_USD in a USD account); daily financing is counted in
  ``feed_status`` (it belongs to no order).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import oandapyV20.endpoints.pricing as pricing
import structlog

from brokers.base import (
    ZERO,
    AccountSnapshot,
    Bar,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
)
from brokers.errors import BrokerError, OrderRejected
from brokers.live import Backoff, ConnectionState, ConnectionSupervisor, Quarantine, SeenIds, submit_once
from brokers.live.outlets import BarOutlet, UpdateOutlet
from brokers.live.threadstream import ThreadedStream
from brokers.live.wire import WireError, decimal, epoch_seconds

from . import convert
from .bars import BarBuilder
from .rest import OandaError, OandaRest, classify_submit, make_api, rfc3339
from .settings import PRICE_COMPONENTS, OandaSettings

__all__ = ["OandaBroker"]

log = structlog.get_logger(__name__)
_RECENT_ORDERS = 2048  # orders whose facts (id, units, delivered fills) are remembered
_DIV = Context(prec=28, rounding=ROUND_HALF_EVEN)
_STREAM_READ_MARGIN = 5.0  # the reader thread's socket timeout beyond the heartbeat limit (ends abandoned threads)


class _Orders:
    """What this process knows of each of its orders: venue id, signed units, instrument, fills delivered."""

    def __init__(self) -> None:
        self.cid_of: OrderedDict[str, str] = OrderedDict()  # venue order id -> client id
        self.units: dict[str, Decimal] = {}
        self.symbol: dict[str, str] = {}
        self.raw: dict[str, dict[str, Any]] = {}
        self.fills: dict[str, list[Fill]] = {}

    def know(self, client_order_id: str, order_id: str, units: Decimal | None, symbol: str | None) -> None:
        self.cid_of[order_id] = client_order_id
        self.cid_of.move_to_end(order_id)
        if units is not None:
            self.units[client_order_id] = abs(units)
        if symbol is not None:
            self.symbol[client_order_id] = symbol
        while len(self.cid_of) > _RECENT_ORDERS:
            _, old = self.cid_of.popitem(last=False)
            for table in (self.units, self.symbol, self.raw, self.fills):
                table.pop(old, None)

    def filled(self, client_order_id: str) -> tuple[Decimal, Decimal | None]:
        """Quantity the delivered fills add up to, and their average price."""
        fills = self.fills.get(client_order_id, [])
        quantity = sum((f.quantity for f in fills), ZERO)
        if quantity == 0:
            return ZERO, None
        return quantity, _DIV.divide(sum((f.quantity * f.price for f in fills), ZERO), quantity)


class OandaBroker:
    def __init__(self, settings: OandaSettings, *, connect_timeout: float = 30.0) -> None:
        self.settings = settings
        self.name = "oanda-practice" if settings.practice else "oanda-live"
        self.rest = OandaRest(settings)
        self._connect_timeout = connect_timeout
        self._component_key = PRICE_COMPONENTS[settings.price][1]
        self._updates = UpdateOutlet()
        self._bars = BarOutlet()
        self._builders = {i: BarBuilder(settings.symbol(i), settings.bar_seconds, self._on_bar, settings.session_open)
                          for i in settings.instruments}
        self._now = 0
        self._venue_now = 0
        self._last_message = 0.0  # monotonic time of the pricing stream's last message
        self._orders = _Orders()
        self._refused: set[str] = set()  # refused at create: their transactions are not news
        self._transactions = SeenIds()
        self._cursor: str | None = None
        self._poll_lock = asyncio.Lock()
        self._poll_task: asyncio.Task[None] | None = None
        self.currency = "USD"
        self.financing = ZERO  # DAILY_FINANCING booked by the venue since connect (not a fill)
        self.counts = {"bars": 0, "duplicate_bars": 0, "backfilled_bars": 0, "ticks": 0, "heartbeats": 0,
                       "updates": 0, "transactions": 0, "foreign_transactions": 0, "poll_failures": 0,
                       "seeded_bars": 0}
        self.prices_quarantine = Quarantine("oanda pricing")
        self.transactions_quarantine = Quarantine("oanda transactions")
        self.stream = ThreadedStream("oanda pricing", self._open_stream, self._on_message,
                                     idle_limit=settings.heartbeat_limit_seconds)
        backoff = Backoff(settings.backoff_floor_seconds, settings.backoff_cap_seconds,
                          rng=random.Random(settings.seed))
        self.pricing = ConnectionSupervisor("oanda pricing", self.stream, backoff=backoff,
                                            on_ready=self._pricing_ready)
        self._connected = False

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Read the account (token and account id checked), set the transaction cursor, bring the stream up."""
        if self._connected:
            return
        summary = await self.rest.account_summary()
        self.currency = str(summary.get("currency") or self.currency)
        self._cursor = str(summary.get("lastTransactionID") or "0")
        self.pricing.start()
        self._connected = True
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self.pricing.wait_connected()
        except (TimeoutError, BrokerError) as exc:
            await self.close()
            why = self.pricing.status()["last_error"] or self.pricing.reason
            raise BrokerError(f"oanda: pricing stream not up within {self._connect_timeout:g} s ({why})") from exc
        self._poll_task = asyncio.get_running_loop().create_task(self._poll_forever(), name="oanda transactions")
        log.info("oanda connected", broker=self.name, account=self.settings.account_id,
                 instruments=list(self.settings.instruments), price=self.settings.price,
                 granularity=self.settings.granularity)

    async def close(self) -> None:
        self.stop_bars()
        if self._poll_task is not None:
            self._poll_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll_task
            self._poll_task = None
        if self.pricing.state is not ConnectionState.STOPPED:
            await self.pricing.stop("broker closed")
        self.rest.close()
        self._connected = False

    def now(self) -> int:
        """The wall clock (UTC epoch seconds), never behind a bar already delivered and never going back."""
        self._now = max(self._now, int(time.time()))
        return self._now

    # ------------------------------------------------------------------ market data
    def bars(self) -> AsyncIterator[Bar]:
        return self._bars.bars()

    def stop_bars(self) -> None:
        self._bars.stop()

    def _open_stream(self, stop: threading.Event) -> Iterator[dict[str, Any]]:
        """In the reader thread: its own client, a socket timeout past the heartbeat limit."""
        api = make_api(self.settings, self.settings.heartbeat_limit_seconds + _STREAM_READ_MARGIN)
        request = pricing.PricingStream(self.settings.account_id,
                                        params={"instruments": ",".join(self.settings.instruments)})
        try:
            yield from api.request(request)
        finally:
            api.close()

    def _on_message(self, msg: Any) -> None:
        """On the loop: one pricing-stream message (ticks make bars; heartbeats move the venue clock)."""
        self._last_message = time.monotonic()
        if not isinstance(msg, dict):
            self.prices_quarantine.put("not a message object", msg)
            return
        kind = msg.get("type")
        try:
            if kind == "HEARTBEAT":
                self.counts["heartbeats"] += 1
                ts = epoch_seconds(msg.get("time"), "time")
                self._venue_now = max(self._venue_now, ts)
                for builder in self._builders.values():
                    builder.advance(ts)
            elif kind == "PRICE":
                instrument, ts, value = convert.price_tick(msg, self.settings.price)
                builder = self._builders.get(instrument)
                if builder is None:
                    self.prices_quarantine.put(f"price of an instrument not subscribed: {instrument}", msg)
                    return
                self.counts["ticks"] += 1
                self._venue_now = max(self._venue_now, ts)
                for other in self._builders.values():  # the venue's clock moved for every instrument
                    if other is not builder:
                        other.advance(ts)
                builder.tick(ts, value)
            else:
                self.prices_quarantine.put(f"unexpected message type {kind!r}", msg)
        except WireError as exc:
            self.prices_quarantine.put(str(exc), msg)

    def _on_bar(self, bar: Bar) -> None:
        """Hand a bar on unless its time was already handed on (a backfill and the live stream overlap)."""
        if self._bars.put(bar):
            self._now = max(self._now, bar.ts)
            self.counts["bars"] += 1
        else:
            self.counts["duplicate_bars"] += 1

    async def _pricing_ready(self, reconnect: bool) -> None:
        """Before live ticks count: the complete candles missed since the last bar, then the interval in progress."""
        step = self.settings.bar_seconds
        for instrument, builder in self._builders.items():
            builder.discard()
            since = self._bars.last_ts.get(builder.symbol)
            if since is None:
                since = self.now() - self.now() % step  # first connect: only the interval in progress
            candles = await self.rest.candles(instrument, since)
            before = self.counts["bars"]
            for raw in candles:
                try:
                    bar = convert.candle_bar(builder.symbol, raw, self._component_key, step)
                except WireError as exc:
                    self.prices_quarantine.put(f"candle: {exc}", raw)
                    continue
                if raw.get("complete", True):
                    self._on_bar(bar)
                    builder.delivered(bar.ts)
                else:
                    builder.seed(bar.ts - step, bar.open, bar.high, bar.low, bar.close, bar.volume)
                    self.counts["seeded_bars"] += 1
            filled = self.counts["bars"] - before
            self.counts["backfilled_bars"] += filled
            if reconnect:
                log.info("pricing backfilled after reconnect", instrument=instrument, bars=filled,
                         since=rfc3339(since))

    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]:
        """Complete bars closing in ``[start_ts, end_ts]``, oldest first, one per timestamp."""
        instrument = self.settings.instrument(symbol)
        if instrument is None or end_ts < start_ts:
            return []
        step = self.settings.bar_seconds
        by_ts: dict[int, Bar] = {}
        cursor = start_ts - step
        while cursor <= end_ts - step:
            page = await self.rest.candles(instrument, cursor)
            bars = []
            for raw in page:
                try:
                    bars.append((convert.candle_bar(symbol, raw, self._component_key, step),
                                 bool(raw.get("complete", True))))
                except WireError as exc:
                    self.prices_quarantine.put(f"historical candle: {exc}", raw)
            for bar, complete in bars:
                if complete and start_ts <= bar.ts <= end_ts:
                    by_ts[bar.ts] = bar
            if not bars or len(page) < 5000:
                break
            cursor = bars[-1][0].ts  # the next candle opens where the last one closed
        return [by_ts[ts] for ts in sorted(by_ts)]

    def feed_status(self) -> dict[str, Any]:
        p = self.pricing
        last = self._bars.last_bar
        since = time.monotonic() - self._last_message if self._last_message else None
        return {
            "kind": "oanda",
            "state": p.state.value,
            "connected": p.connected,
            "disconnected_seconds": round(p.disconnected_seconds, 3),
            "reconnects": p.reconnects,
            "account": self.settings.account_id,
            "instruments": list(self.settings.instruments),
            "price": self.settings.price,
            "granularity": self.settings.granularity,
            "heartbeat_limit_seconds": self.settings.heartbeat_limit_seconds,
            "seconds_since_message": None if since is None else round(since, 3),
            "silent_disconnects": self.stream.silent_disconnects,
            "last_bar_ts": last.time.isoformat() if last is not None else None,
            "pricing": p.status(),
            "transaction_cursor": self._cursor,
            "financing": str(self.financing),
            "session_closed_ticks": sum(b.closed_ticks for b in self._builders.values()),
            "late_ticks": sum(b.late_ticks for b in self._builders.values()),
            "counts": dict(self.counts),
            "quarantined": {"pricing": self.prices_quarantine.status(),
                            "transactions": self.transactions_quarantine.status()},
            "rest": self.rest.offloader.status(),
        }

    # ------------------------------------------------------------------ order updates
    async def next_update(self) -> OrderUpdate:
        return await self._updates.next()

    def drain_updates(self) -> list[OrderUpdate]:
        return self._updates.drain()

    def _deliver(self, update: OrderUpdate) -> None:
        self.counts["updates"] += 1
        self._updates.put(update)

    async def _poll_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.transactions_poll_seconds)
            try:
                await self.poll_transactions()
            except BrokerError as exc:  # the cursor stays: the next poll reads the same transactions again
                self.counts["poll_failures"] += 1
                log.warning("oanda transactions poll failed", error=str(exc))

    async def poll_transactions(self) -> int:
        """Read and apply every transaction since the cursor; how many were new."""
        async with self._poll_lock:
            if self._cursor is None:
                raise BrokerError("oanda: not connected (no transaction cursor)")
            rows, last = await self.rest.transactions_since(self._cursor)
            new = sum(self._apply(tx) for tx in rows)
            self._cursor = last
            return new

    def _apply(self, tx: Any) -> bool:
        """One transaction, once: fills and cancels of our orders become updates; financing is counted."""
        if not isinstance(tx, dict) or not tx.get("id"):
            self.transactions_quarantine.put("transaction without an id", tx)
            return False
        if not self._transactions.add(str(tx["id"])):
            return False
        self.counts["transactions"] += 1
        kind = tx.get("type")
        try:
            if kind == "ORDER_FILL":
                self._apply_fill(tx)
            elif kind == "ORDER_CANCEL":
                self._apply_cancel(tx)
            elif kind in ("MARKET_ORDER", "LIMIT_ORDER"):
                self._apply_create(tx)
            elif kind == "DAILY_FINANCING":
                self.financing += decimal(tx.get("financing") or "0", "financing")
        except WireError as exc:
            self.transactions_quarantine.put(f"{kind}: {exc}", tx)
        return True

    def _ours(self, tx: dict[str, Any]) -> str | None:
        cid = self._orders.cid_of.get(str(tx.get("orderID") or ""))
        if cid is None:
            cid = tx.get("clientOrderID") or (tx.get("clientExtensions") or {}).get("id")
        if not cid:
            self.counts["foreign_transactions"] += 1
            log.warning("oanda transaction of an order without our client id", type=tx.get("type"), id=tx.get("id"),
                        order=tx.get("orderID"))
            return None
        return None if cid in self._refused else str(cid)

    def _symbol(self, tx: dict[str, Any], cid: str) -> str:
        instrument = tx.get("instrument")
        return self.settings.symbol(instrument) if instrument else self._orders.symbol.get(cid, "")

    def _apply_create(self, tx: dict[str, Any]) -> None:
        cid = (tx.get("clientExtensions") or {}).get("id")
        if not cid or cid in self._refused:
            return
        units = decimal(tx.get("units"), "units")
        symbol = self._symbol(tx, cid)
        self._orders.know(cid, str(tx["id"]), units, symbol)
        self._deliver(OrderUpdate(cid, OrderStatus.ACCEPTED, epoch_seconds(tx.get("time"), "time"), str(tx["id"]),
                                  symbol, self._orders.filled(cid)[0]))

    def _apply_fill(self, tx: dict[str, Any]) -> None:
        cid = self._ours(tx)
        if cid is None:
            return
        order_id = str(tx.get("orderID") or "")
        symbol = self._symbol(tx, cid)
        fill = convert.transaction_fill(tx, cid, symbol)
        self._orders.fills.setdefault(cid, []).append(fill)
        filled, average = self._orders.filled(cid)
        units = self._orders.units.get(cid)
        status = OrderStatus.FILLED if units is None or filled >= units else OrderStatus.PARTIALLY_FILLED
        self._deliver(OrderUpdate(cid, status, fill.ts, order_id or None, symbol, filled, average, fill=fill))

    def _apply_cancel(self, tx: dict[str, Any]) -> None:
        cid = self._ours(tx)
        if cid is None:
            return
        reason = str(tx.get("reason") or "")
        filled, average = self._orders.filled(cid)
        self._deliver(OrderUpdate(cid, OrderStatus.CANCELLED, epoch_seconds(tx.get("time"), "time"),
                                  str(tx.get("orderID") or "") or None, self._orders.symbol.get(cid), filled,
                                  average, message=f"{convert.reason_code(reason)}: OANDA {reason}"))

    # ------------------------------------------------------------------ orders
    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        instrument = self.settings.instrument(request.symbol)
        if instrument is None:
            raise OrderRejected(f"{client_order_id}: invalid_order: {request.symbol} is not among "
                                f"broker.oanda.instruments {list(self.settings.instruments)}")

        async def send() -> OrderUpdate:
            answer = await self.rest.create_order(client_order_id, instrument, request)
            return self._created(client_order_id, request, answer)

        update = await submit_once(
            client_order_id, request, send, lambda: self.get_order(client_order_id), classify_submit,
            deadline=self.settings.in_flight_deadline_seconds, same_order=self._same_order,
        )
        return update

    def _created(self, client_order_id: str, request: OrderRequest, answer: dict[str, Any]) -> OrderUpdate:
        """The 201 answer: the create transaction, and a fill or a cancel when the venue acted at once."""
        created = answer.get("orderCreateTransaction") or {}
        order_id = str(created.get("id") or "")
        if not order_id:
            raise OandaError(f"submit {client_order_id}: the answer has no orderCreateTransaction")
        self._orders.know(client_order_id, order_id, request.quantity, request.symbol)
        self._orders.raw[client_order_id] = {"instrument": created.get("instrument"), "units": created.get("units"),
                                             "type": created.get("type"), "price": created.get("price")}
        self._transactions.add(order_id)
        cancel = answer.get("orderCancelTransaction")
        if isinstance(cancel, dict) and not answer.get("orderFillTransaction"):
            # refused by the venue in the same breath (a market order without margin or price): nothing works,
            # and its cancel is not news for the poller (the order manager books the order as rejected)
            self._refused.add(client_order_id)
            self._transactions.add(str(cancel.get("id") or ""))
            reason = str(cancel.get("reason") or "")
            raise OandaError(f"submit {client_order_id}: cancelled at once: {reason}", status=201, code=reason,
                             venue_message=f"order cancelled at once ({reason})")
        fill = answer.get("orderFillTransaction")
        if isinstance(fill, dict):
            self._apply(fill)  # a venue that fills at once: the poller will see it again and skip it
        filled, average = self._orders.filled(client_order_id)
        return OrderUpdate(client_order_id, OrderStatus.ACCEPTED, epoch_seconds(created.get("time"), "time"),
                           order_id, request.symbol, filled, average, message="oanda accepted")

    def _same_order(self, found: OrderUpdate, request: OrderRequest) -> bool:
        raw = self._orders.raw.get(found.client_order_id) or {}
        try:
            price = raw.get("price")
            limit = request.limit_price if request.order_type is OrderType.LIMIT else None
            return (raw.get("instrument") == self.settings.instrument(request.symbol)
                    and decimal(raw.get("units"), "units") == request.signed_quantity
                    and raw.get("type") == request.order_type.value.upper()
                    and (None if price is None or limit is None else Decimal(price)) == limit)
        except (WireError, ArithmeticError):
            return False

    async def cancel(self, client_order_id: str) -> OrderUpdate:
        report = await self.get_order(client_order_id)
        if report is None:
            raise BrokerError(f"cancel: unknown client_order_id {client_order_id!r}")
        if report.status.is_terminal:
            return report
        try:
            await self.rest.cancel_order(f"@{client_order_id}")
        except OandaError as exc:
            if exc.status != 404:  # 404 ORDER_DOESNT_EXIST / not cancellable: filled meanwhile; the look-up says
                raise
        after = await self.get_order(client_order_id) or report
        if not after.status.is_terminal and after.status is not OrderStatus.CANCEL_PENDING:
            after = OrderUpdate(after.client_order_id, OrderStatus.CANCEL_PENDING, after.ts, after.broker_order_id,
                                after.symbol, after.filled_quantity, after.average_price, message="cancel requested")
        return after

    async def get_order(self, client_order_id: str) -> OrderUpdate | None:
        raw = await self.rest.order_by_client_id(client_order_id)
        if raw is None:
            return None
        symbol = self.settings.symbol(str(raw.get("instrument") or ""))
        try:
            units = decimal(raw.get("units"), "units")
            self._orders.know(client_order_id, str(raw.get("id")), units, symbol)
            self._orders.raw[client_order_id] = {k: raw.get(k) for k in ("instrument", "units", "type", "price")}
            filled, average = self._orders.filled(client_order_id)
            return convert.order_update(raw, symbol, filled=filled, average_price=average)
        except WireError as exc:
            raise BrokerError(f"order {client_order_id}: unreadable answer: {exc}") from exc

    async def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every execution of one order, oldest first: the fills delivered, else the ORDER_FILLs in its history."""
        report = await self.get_order(client_order_id)
        if report is None:
            return []
        known = list(self._orders.fills.get(client_order_id, ()))
        have = sum((f.quantity for f in known), ZERO)
        if report.status is OrderStatus.FILLED and have >= report.filled_quantity:
            return known
        order_id = report.broker_order_id or ""
        rows, _ = await self.rest.transactions_since(str(int(order_id) - 1) if order_id.isdigit() else "0")
        by_id = {f.fill_id: f for f in known}
        for tx in rows:
            if tx.get("type") == "ORDER_FILL" and str(tx.get("orderID")) == order_id:
                fill = convert.transaction_fill(tx, client_order_id, report.symbol or "")
                by_id.setdefault(fill.fill_id, fill)
        return sorted(by_id.values(), key=lambda f: int(f.fill_id) if f.fill_id.isdigit() else 0)

    async def open_orders(self) -> list[OrderUpdate]:
        found = []
        for raw in await self.rest.pending_orders():
            cid = (raw.get("clientExtensions") or {}).get("id")
            if not cid:  # a take-profit or stop attached to a trade, or an order placed by hand: not ours
                continue
            symbol = self.settings.symbol(str(raw.get("instrument") or ""))
            filled, average = self._orders.filled(cid)
            found.append(convert.order_update(raw, symbol, filled=filled, average_price=average))
        return found

    # ------------------------------------------------------------------ account
    async def positions(self) -> list[Position]:
        found = []
        for raw in await self.rest.open_positions():
            position = convert.position(raw, self.settings.symbol(str(raw.get("instrument") or "")))
            if position is not None:
                found.append(position)
        return found

    async def account(self) -> AccountSnapshot:
        summary = await self.rest.account_summary()
        held = sum((p.quantity * p.average_price for p in await self.positions()), ZERO)
        balance = decimal(summary.get("balance"), "balance")
        return AccountSnapshot(cash=balance - held, equity=decimal(summary.get("NAV"), "NAV"),
                               currency=str(summary.get("currency") or self.currency), ts=self.now())

