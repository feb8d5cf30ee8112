"""``AlpacaBroker``: the ``Broker`` protocol over Alpaca (paper by default), stocks on the IEX or SIP feed or
crypto pairs (``BTC/USD``) on the crypto feed.

* REST (orders, positions, account, clock, look-ups by client id, fill
  activities, historical bars) goes through ``AlpacaRest``: worker threads,
  the venue's rate limit, no retries that could re-send an order.
* The two websockets run as sessions under one ``ConnectionSupervisor``
  each, inside the daemon's loop. The market-data supervisor's ready hook
  backfills, after a reconnect, every bar missed since the last one delivered
  (from the historical API, de-duplicated by timestamp, in order) before a
  live bar is read; the trade-updates supervisor's hook asks the venue for
  every order this process still has open and delivers what the stream
  missed (status and fills, each fill once) before updates resume. The
  daemon's own reconciler then compares positions as usual.
* A submit is sent once (``brokers.live.submit_once``): an ambiguous failure
  is resolved by looking the order up by client id until the in-flight
  deadline, then reported as ``UnknownOrderOutcome`` for the order manager.
* Fill prices and fees are the venue's (see ``convert``); updates only move
  forward (``ForwardOnly``) and each execution is delivered once.
* Live trading (``paper=False``) refuses to connect unless ``live_confirm``
  equals the account's number.
* Crypto (``settings.is_crypto``, from the symbols' spelling) takes the same
  path with the crypto stream and historical endpoint (``settings``,
  ``rest``); the market is always open, an order's time in force must be
  ``gtc`` or ``ioc`` (anything else is rejected before it is sent), and
  positions, which Alpaca names without the slash, are reported in our
  spelling.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any, TypeVar

import structlog

from brokers.base import (
    AccountSnapshot,
    Bar,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderUpdate,
    Position,
    Side,
)
from brokers.errors import BrokerError, OrderRejected
from brokers.live import Backoff, ConnectionState, ConnectionSupervisor, Quarantine, SeenIds, submit_once
from brokers.live.confirm import confirm_live_account
from brokers.live.outlets import BarOutlet, UpdateOutlet

from . import convert
from .rest import AlpacaError, AlpacaRest, classify_submit
from .settings import CRYPTO_TIME_IN_FORCE, AlpacaSettings
from .streams import MarketDataSession, TradeUpdatesSession

__all__ = ["AlpacaBroker"]

log = structlog.get_logger(__name__)
_RECENT_BARS = 512  # delivered bar times remembered per symbol (duplicates from a backfill overlap)
_RECENT_ORDERS = 1024  # orders whose delivered fills are remembered for ``fills_for``
_DIV = Context(prec=28, rounding=ROUND_HALF_EVEN)
_Named = TypeVar("_Named", Position, Fill)


class AlpacaBroker:
    def __init__(self, settings: AlpacaSettings, *, live_confirm: str | None = None,
                 connect_timeout: float = 30.0) -> None:
        self.settings = settings
        self.name = "alpaca-paper" if settings.paper else "alpaca-live"
        self.rest = AlpacaRest(settings)
        self._live_confirm = live_confirm
        self._connect_timeout = connect_timeout
        self.account_number: str | None = None
        self._updates = UpdateOutlet()  # updates only move forward; the client ids still working (``working``)
        self._bars = BarOutlet()  # the queue only: the repeat rule is ``_on_bar``'s
        self._recent: dict[str, deque[int]] = {}
        self._last_ts: dict[str, int] = {}
        self._last_bar: Bar | None = None
        self._now = 0
        self._executions = SeenIds()
        self._fills = SeenIds()
        self._raw: dict[str, dict[str, Any]] = {}  # latest venue order object per client id (duplicate check)
        self._delivered: OrderedDict[str, list[Fill]] = OrderedDict()  # fills handed on, per order (latest orders)
        self.market_open: bool | None = None
        self.clock: dict[str, Any] = {}
        self.counts = {"bars": 0, "duplicate_bars": 0, "backfilled_bars": 0, "updates": 0,
                       "repeated_executions": 0, "recovered_updates": 0}
        self.bars_quarantine = Quarantine("alpaca market data")
        self.updates_quarantine = Quarantine("alpaca trade updates")
        rng = random.Random(settings.seed)
        self.market_data_session = MarketDataSession(settings, self._on_bar, self.bars_quarantine)
        self.trade_updates_session = TradeUpdatesSession(settings, self._on_trade_update, self.updates_quarantine)
        backoff = Backoff(settings.backoff_floor_seconds, settings.backoff_cap_seconds, rng=rng)
        self.market_data = ConnectionSupervisor("alpaca market data", self.market_data_session, backoff=backoff,
                                                on_ready=self._market_data_ready)
        self.trade_updates = ConnectionSupervisor("alpaca trade updates", self.trade_updates_session,
                                                  backoff=backoff, on_ready=self._trade_updates_ready)
        self._clock_task: asyncio.Task[None] | None = None
        self._connected = False

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Check the account (and the live confirmation), read the clock, bring both streams up."""
        if self._connected:
            return
        account = await self.rest.account()
        self.account_number = str(account.get("account_number") or "")
        self._check_live(self.account_number)
        await self._refresh_clock()
        self.trade_updates.start()
        self.market_data.start()
        self._connected = True
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self.trade_updates.wait_connected()
                await self.market_data.wait_connected()
        except (TimeoutError, BrokerError) as exc:
            await self.close()
            why = "; ".join(f"{s.name}: {s.status()['last_error'] or s.reason}"
                            for s in (self.trade_updates, self.market_data) if not s.connected)
            raise BrokerError(f"alpaca: streams not up within {self._connect_timeout:g} s ({why})") from exc
        self._clock_task = asyncio.get_running_loop().create_task(self._poll_clock(), name="alpaca clock")
        log.info("alpaca connected", broker=self.name, account=self.account_number, feed=self.settings.data_feed,
                 symbols=list(self.settings.symbols))

    def _check_live(self, account_number: str) -> None:
        if self.settings.paper:
            return
        confirm_live_account("alpaca", account_number, self._live_confirm)

    async def close(self) -> None:
        self.stop_bars()
        if self._clock_task is not None:
            self._clock_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock_task
            self._clock_task = None
        for supervisor in (self.market_data, self.trade_updates):
            if supervisor.state is not ConnectionState.STOPPED:
                await supervisor.stop("broker closed")
        self.rest.close()
        self._connected = False

    # ------------------------------------------------------------------ market data
    def bars(self) -> AsyncIterator[Bar]:
        return self._bars.bars()

    def stop_bars(self) -> None:
        self._bars.stop()

    def now(self) -> int:
        """The wall clock (UTC epoch seconds), never behind a bar already delivered and never going back."""
        self._now = max(self._now, int(time.time()))
        return self._now

    def _on_bar(self, bar: Bar) -> None:
        """Hand a bar on unless its time was already delivered (a backfill and the live stream overlap)."""
        recent = self._recent.setdefault(bar.symbol, deque(maxlen=_RECENT_BARS))
        if bar.ts in recent:
            self.counts["duplicate_bars"] += 1
            return
        recent.append(bar.ts)
        if bar.ts > self._last_ts.get(bar.symbol, 0):
            self._last_ts[bar.symbol] = bar.ts
        self._now = max(self._now, bar.ts)
        self._last_bar = bar
        self.counts["bars"] += 1
        self._bars.hand_on(bar)

    async def _market_data_ready(self, reconnect: bool) -> None:
        """After a reconnect: every bar missed since the last delivered one, in order, before live bars resume."""
        if not reconnect:
            return
        for symbol, last in list(self._last_ts.items()):
            missed = await self.historical_bars(symbol, last + 1, self.now())
            before = self.counts["bars"]
            for bar in missed:
                self._on_bar(bar)
            filled = self.counts["bars"] - before
            self.counts["backfilled_bars"] += filled
            log.info("market data backfilled after reconnect", symbol=symbol, bars=filled,
                     since=datetime.fromtimestamp(last, UTC).isoformat())

    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]:
        """Bars closing in ``[start_ts, end_ts]``, oldest first, one per timestamp."""
        step = self.settings.bar_seconds
        if end_ts < start_ts:
            return []
        raw = await self.rest.bars(symbol, _rfc3339(start_ts - step), _rfc3339(end_ts - step))
        by_ts: dict[int, Bar] = {}
        for item in raw:
            try:
                bar = convert.rest_bar(symbol, item, step)
            except convert.WireError as exc:
                self.bars_quarantine.put(f"historical bar: {exc}", item)
                continue
            if start_ts <= bar.ts <= end_ts:
                by_ts[bar.ts] = bar
        return [by_ts[ts] for ts in sorted(by_ts)]

    def feed_status(self) -> dict[str, Any]:
        md, tu = self.market_data, self.trade_updates
        states = {md.state, tu.state}
        if ConnectionState.STOPPED in states:
            state = ConnectionState.STOPPED
        elif states == {ConnectionState.CONNECTED}:
            state = ConnectionState.CONNECTED
        elif ConnectionState.RECONNECTING in states:
            state = ConnectionState.RECONNECTING
        else:
            state = ConnectionState.CONNECTING
        last = self._last_bar
        return {
            "kind": "alpaca",
            "state": state.value,
            "connected": md.connected and tu.connected,
            "disconnected_seconds": round(max(md.disconnected_seconds, tu.disconnected_seconds), 3),
            "reconnects": md.reconnects + tu.reconnects,
            "market_open": self.market_open,
            "asset_class": self.settings.asset_class,
            "feed": self.settings.data_feed,
            "symbols": list(self.settings.symbols),
            "subscribed": list(self.market_data_session.subscribed),
            "last_bar_ts": last.time.isoformat() if last is not None else None,
            "market_data": md.status(),
            "trade_updates": tu.status(),
            "counts": dict(self.counts),
            "quarantined": {"market_data": self.bars_quarantine.status(),
                            "trade_updates": self.updates_quarantine.status()},
            "rest": self.rest.offloader.status(),
        }

    async def _refresh_clock(self) -> None:
        self.clock = await self.rest.clock()  # the stock market's clock; crypto trades around it
        self.market_open = True if self.settings.is_crypto else bool(self.clock.get("is_open"))

    async def _poll_clock(self) -> None:
        while True:
            await asyncio.sleep(self.settings.clock_poll_seconds)
            try:
                await self._refresh_clock()
            except BrokerError as exc:  # keep the last known value; the next poll tries again
                log.warning("alpaca clock poll failed", error=str(exc))

    # ------------------------------------------------------------------ order updates
    async def next_update(self) -> OrderUpdate:
        return await self._updates.next()

    def drain_updates(self) -> list[OrderUpdate]:
        return self._updates.drain()

    def _deliver(self, update: OrderUpdate) -> None:
        update = self._updates.put(update)
        self.counts["updates"] += 1
        if update.fill is not None:
            self._delivered.setdefault(update.client_order_id, []).append(update.fill)
            self._delivered.move_to_end(update.client_order_id)
            if len(self._delivered) > _RECENT_ORDERS:
                self._delivered.popitem(last=False)

    def _on_trade_update(self, data: dict[str, Any]) -> None:
        try:
            update, execution_id = convert.trade_update(data)
        except convert.WireError as exc:
            self.updates_quarantine.put(str(exc), data)
            return
        order = data.get("order")
        if isinstance(order, dict):
            self._raw[update.client_order_id] = order
        fill = update.fill
        if fill is not None:
            if execution_id is not None and not self._executions.add(execution_id):
                self.counts["repeated_executions"] += 1
                return
            if not self._fills.add(fill.fill_id):  # already delivered from REST after a reconnect
                update = dataclasses.replace(update, fill=None)
        self._deliver(update)

    async def _trade_updates_ready(self, reconnect: bool) -> None:
        """After a reconnect: what the stream missed for every order still open here, before updates resume."""
        if not reconnect:
            return
        for client_order_id in sorted(self._updates.working):
            report = await self.get_order(client_order_id)
            if report is None:
                continue
            for fill in await self.fills_for(client_order_id):
                if self._fills.add(fill.fill_id):
                    self.counts["recovered_updates"] += 1
                    self._deliver(dataclasses.replace(report, fill=fill, ts=max(report.ts, fill.ts)))
            self._deliver(report)
        log.info("trade updates recovered after reconnect", orders=len(self._updates.working))

    # ------------------------------------------------------------------ orders
    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        tif = request.time_in_force.value
        if self.settings.is_crypto and tif not in CRYPTO_TIME_IN_FORCE:
            raise OrderRejected(f"{client_order_id}: Alpaca takes crypto orders with time in force "
                                f"{' or '.join(sorted(CRYPTO_TIME_IN_FORCE))}, not {tif}; not sent")

        async def send() -> OrderUpdate:
            raw = await self.rest.submit_order(client_order_id, request)
            self._raw[client_order_id] = raw
            return convert.order_update(raw)

        update = await submit_once(
            client_order_id, request, send, lambda: self.get_order(client_order_id), classify_submit,
            deadline=self.settings.in_flight_deadline_seconds, same_order=self._same_order,
        )
        if not update.status.is_terminal:
            self._updates.working.add(client_order_id)
        return update

    def _same_order(self, found: OrderUpdate, request: OrderRequest) -> bool:
        raw = self._raw.get(found.client_order_id) or {}
        try:
            limit = raw.get("limit_price")
            return (raw.get("symbol") == request.symbol and raw.get("side") == request.side.value
                    and convert.decimal(raw.get("qty"), "qty") == request.quantity
                    and raw.get("type", raw.get("order_type")) == request.order_type.value
                    and (None if limit is None else Decimal(limit)) == request.limit_price)
        except (convert.WireError, ArithmeticError):
            return False

    async def cancel(self, client_order_id: str) -> OrderUpdate:
        report = await self.get_order(client_order_id)
        if report is None:
            raise BrokerError(f"cancel: unknown client_order_id {client_order_id!r}")
        if report.status.is_terminal:
            return report
        try:
            await self.rest.cancel_order(report.broker_order_id or "")
        except AlpacaError as exc:
            if exc.status not in (404, 422):  # 422: no longer cancelable (filled meanwhile): the look-up says
                raise
        after = await self.get_order(client_order_id) or report
        if not after.status.is_terminal and after.status is not OrderStatus.CANCEL_PENDING:
            after = dataclasses.replace(after, status=OrderStatus.CANCEL_PENDING, message="cancel requested")
        return after

    async def get_order(self, client_order_id: str) -> OrderUpdate | None:
        raw = await self.rest.order_by_client_id(client_order_id)
        if raw is None:
            return None
        self._raw[client_order_id] = raw
        try:
            return convert.order_update(raw)
        except convert.WireError as exc:
            raise BrokerError(f"order {client_order_id}: unreadable answer: {exc}") from exc

    async def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every execution of one order, oldest first.

        The fills this process already delivered, when they account for the
        order's whole filled quantity; else the account's FILL activities
        (Alpaca's execution report). A venue without that report (404) gets
        one fill for the quantity not yet delivered, at the average price the
        order reports for it, named like the execution that completed that
        quantity (``<order id>:<filled qty>``).
        """
        raw = await self.rest.order_by_client_id(client_order_id)
        if raw is None:
            return []
        filled = convert.decimal(raw.get("filled_qty") or "0", "filled_qty")
        known = list(self._delivered.get(client_order_id, ()))
        have = sum((f.quantity for f in known), Decimal(0))
        if have >= filled:
            return known
        try:
            activities = await self.rest.fill_activities(str(raw.get("id")))
        except AlpacaError as exc:
            if exc.status != 404:
                raise
            return [*known, self._remainder_fill(client_order_id, raw, known, filled)]
        by_id = {f.fill_id: f for f in known}
        by_id.update((f.fill_id, self._ours(f)) for f in (convert.activity_fill(a, client_order_id)
                                                          for a in activities))
        return sorted(by_id.values(), key=lambda f: Decimal(f.fill_id.rpartition(":")[2]))

    @staticmethod
    def _remainder_fill(client_order_id: str, raw: dict[str, Any], known: list[Fill], filled: Decimal) -> Fill:
        average = convert.decimal(raw.get("filled_avg_price"), "filled_avg_price")
        quantity = filled - sum((f.quantity for f in known), Decimal(0))
        notional = average * filled - sum((f.quantity * f.price for f in known), Decimal(0))
        update = convert.order_update(raw)
        return Fill(
            fill_id=convert.fill_id(str(raw.get("id")), filled),
            client_order_id=client_order_id,
            symbol=str(raw.get("symbol")),
            side=Side(raw.get("side")),
            quantity=quantity,
            price=_DIV.divide(notional, quantity),
            fee=Decimal(0),
            ts=update.ts,
        )

    async def open_orders(self) -> list[OrderUpdate]:
        return [convert.order_update(raw) for raw in await self.rest.open_orders()]

    # ------------------------------------------------------------------ account
    async def positions(self) -> list[Position]:
        return [self._ours(convert.position(raw)) for raw in await self.rest.positions()]

    def _ours(self, item: _Named) -> _Named:
        """``item`` with its symbol in our spelling (Alpaca reports crypto positions as ``BTCUSD``)."""
        symbol = self.settings.canonical_symbol(item.symbol)
        return item if symbol == item.symbol else dataclasses.replace(item, symbol=symbol)

    async def account(self) -> AccountSnapshot:
        return convert.account_snapshot(await self.rest.account(), self.now())


def _rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
