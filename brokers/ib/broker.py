"""``IbBroker``: the ``Broker`` protocol over TWS / IB Gateway with ib_async 2.1, inside the daemon's loop.

* One ``IB`` object for the adapter's life, run in our loop (never ``ib.run()``
  or ``util.startLoop``; only its ``*Async`` calls). Its socket is a session
  under ``ConnectionSupervisor``: a closed socket is reconnected with backoff
  on the same object, and the ready hook (re-fetch open orders, deliver the
  executions and final states missed meanwhile, resubscribe real-time bars,
  backfill the missed bars) runs before the connection counts as connected.
* TWS's own link to IB (errors 1100/1101/1102, the socket staying up) is a
  ``LinkState``: while 1100 holds, ``feed_status`` says disconnected and no
  order is sent; 1101 renews every market-data subscription and backfills,
  1102 backfills (the subscriptions were kept).
* Start-up refuses, each with one clear line: a refused connection, a client
  id already in use (326), a read-only API session (321, unless allowed), a
  contract that does not qualify (the venue's message), and a live account
  (IB's paper accounts start with D) unless ``settings.live`` and
  ``live_confirm`` (TRADECTL_LIVE_CONFIRM) equals its id; a look (``look_only``:
  broker check, data fetch) places nothing and skips that check.
* Bars: real-time 5-second bars aggregated to ``bar_seconds`` and stamped at
  the close (``bars.Aggregator``); warm-up, backfill and a bucket joined
  mid-way come from historical bars within IB's pacing (``history_limiter``),
  delivered in order, each once.
* Orders carry our client order id in ``orderRef``; the venue's ``permId``
  is the ``broker_order_id`` the store keeps with it. A submit is sent once
  (``submit_once``): no acknowledgement within ``ack_timeout_seconds`` is
  resolved by finding the order by its orderRef among TWS's open and
  completed orders. Every request passes the message-rate bucket (50/s).
* Fills are executions (execId), with the commission report's fee. A report
  that arrives in the same read as its execution is booked with it; a later
  one completes the fee: the fill is delivered again under the same id with
  the full fee, and the order manager books the difference, never a second
  fill.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

import structlog
from ib_async import IB, Contract, Forex, Future, LimitOrder, MarketOrder, Stock
from ib_async.ib import StartupFetchNONE
from ib_async.wrapper import RequestError

from brokers.base import ZERO, AccountSnapshot, Bar, Fill, OrderRequest, OrderStatus, OrderType, OrderUpdate, Position
from brokers.errors import BrokerError, OrderRejected, UnknownOrderOutcome
from brokers.live import (
    Backoff,
    ConnectionState,
    ConnectionSupervisor,
    Quarantine,
    RateLimiter,
    SeenIds,
    SubmitFailure,
    submit_once,
)
from brokers.live.confirm import confirm_live_account
from brokers.live.linkstate import LinkState
from brokers.live.outlets import BarOutlet, UpdateOutlet

from . import convert
from .bars import Aggregator, Finished, history_bar
from .settings import ContractSpec, IbSettings

__all__ = ["IbBroker"]

log = structlog.get_logger(__name__)
# ib_async logs every TWS error event and a failed or lost socket at ERROR itself; the daemon turns any ERROR
# record into an operator alert, and a CLI command must fail in one line. Each of those is ours to report once
# (``_on_error`` logs every error event with its code; a refused or lost socket is the supervisor's BrokerError),
# so the library's own records below CRITICAL are dropped, as the OANDA adapter does with oandapyV20's.
for _name in ("ib_async.client", "ib_async.wrapper"):
    logging.getLogger(_name).setLevel(logging.CRITICAL)
_DIV = Context(prec=28, rounding=ROUND_HALF_EVEN)
_TIF = {"gtc": "GTC", "day": "DAY", "ioc": "IOC"}


@dataclass
class _Order:
    """What this process knows about one of its orders at IB."""

    client_order_id: str
    symbol: str
    quantity: Decimal
    order_id: int = 0
    perm_id: int = 0
    refusal: str = ""  # the venue's reason when it refused the order
    fills: list[Fill] = field(default_factory=list)  # delivered, oldest first
    ack: asyncio.Future[None] | None = None

    @property
    def filled(self) -> Decimal:
        return sum((f.quantity for f in self.fills), ZERO)

    @property
    def average(self) -> Decimal | None:
        filled = self.filled
        if not filled:
            return None
        return _DIV.divide(sum((f.quantity * f.price for f in self.fills), ZERO), filled)


class IbBroker:
    def __init__(self, settings: IbSettings, *, live_confirm: str | None = None, look_only: bool = False) -> None:
        self.settings = settings
        self._live_confirm = live_confirm
        self._look_only = look_only
        self.name = "ib"
        self.ib = IB()
        self.ib.RaiseRequestErrors = True  # a request TWS refuses raises with its code and message
        s = settings
        self.limiter = RateLimiter(s.messages_per_second, per=1.0, burst=s.messages_per_second, name="ib messages")
        self.history_limiter = RateLimiter(s.historical_per_10_minutes, per=600.0, burst=s.historical_burst,
                                           name="ib historical data")
        self.link = LinkState("ib: TWS to IB")
        backoff = Backoff(s.backoff_floor_seconds, s.backoff_cap_seconds, rng=random.Random(s.seed))
        self.supervisor = ConnectionSupervisor("ib tws", self._session, backoff=backoff, on_ready=self._ready)
        self.account_id = ""
        self.read_only = False
        self.contracts: dict[str, Contract] = {}
        self._by_con_id: dict[int, str] = {}
        self._aggregators = {c.symbol: Aggregator(c.symbol, s.bar_seconds) for c in s.contracts}
        self._rt_requests: dict[int, str] = {}  # real-time bar request id -> symbol
        self.outlet = BarOutlet()  # each bar time once, forward only
        self._last_ts = self.outlet.last_ts
        self._held: dict[str, list[Bar]] = {}  # live bars waiting for a catch-up from history
        self._catching_up: dict[str, asyncio.Task[None]] = {}
        self._now = 0
        self.updates = UpdateOutlet()  # updates only move forward
        self._executions = SeenIds()
        self._orders: dict[str, _Order] = {}
        self._by_order_id: dict[int, str] = {}
        self._unpriced: dict[str, tuple[_Order, Fill]] = {}  # executions waiting one loop turn for their fee
        self._flush_scheduled = False
        self._fees_due: dict[str, tuple[_Order, Fill]] = {}  # delivered without a commission report yet
        # ib_async keys open-order, completed-order and position requests by name: one of each kind at a time
        self._named_request = asyncio.Lock()
        self._history_lock = asyncio.Lock()
        self._closed: asyncio.Future[None] | None = None
        self._refusal: asyncio.Future[str] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._connected = False
        self.counts = {"bars": 0, "duplicate_bars": 0, "backfilled_bars": 0, "realtime_bars": 0, "updates": 0,
                       "repeated_executions": 0, "fee_completions": 0, "recovered_fills": 0, "link_lost": 0,
                       "resubscribed": 0, "foreign_orders": 0}
        self.quarantine = Quarantine("ib messages")
        ib = self.ib
        ib.errorEvent += self._on_error
        ib.orderStatusEvent += self._on_status
        ib.execDetailsEvent += self._on_execution
        ib.commissionReportEvent += self._on_commission
        ib.barUpdateEvent += self._on_realtime_bar
        ib.disconnectedEvent += self._on_disconnected

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> None:
        """Connect, refuse what cannot trade (one line each), qualify the contracts, subscribe, then supervise."""
        if self._connected:
            return
        await self._open_link()
        self._connected = True
        self.supervisor.start()
        try:
            async with asyncio.timeout(self.settings.connect_timeout_seconds):
                await self.supervisor.wait_connected()
        except (TimeoutError, BrokerError) as exc:
            why = self.supervisor.status()["last_error"] or self.supervisor.reason
            await self.close()
            raise BrokerError(f"ib: not ready within {self.settings.connect_timeout_seconds:g} s ({why})") from exc
        log.info("ib connected", account=self.account_id, client_id=self.settings.client_id,
                 contracts={k: c.conId for k, c in self.contracts.items()}, read_only=self.read_only)

    async def close(self) -> None:
        self.stop_bars()
        if self.supervisor.state is not ConnectionState.STOPPED:
            await self.supervisor.stop("broker closed")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self.ib.isConnected() or self.ib.client.isConnected():
            self.ib.disconnect()
        self._connected = False

    async def _open_link(self) -> None:
        """The socket, the API handshake, the read-only check, the contracts and the bar subscriptions."""
        s = self.settings
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        self._refusal = loop.create_future()
        self.link.reset()
        await self.limiter.acquire()
        connecting = asyncio.ensure_future(self.ib.connectAsync(
            s.host, s.port, s.client_id, timeout=s.connect_timeout_seconds, account=s.account,
            fetchFields=StartupFetchNONE))
        await asyncio.wait({connecting, self._refusal}, return_when=asyncio.FIRST_COMPLETED)
        if self._refusal.done():
            connecting.cancel()
            with contextlib.suppress(BaseException):
                await connecting
            raise BrokerError(self._refusal.result())
        try:
            connecting.result()
        except ConnectionRefusedError:
            raise BrokerError(
                f"ib: connection refused at {s.host}:{s.port}: is TWS or IB Gateway running with the API enabled "
                "(Configure > API > Settings: 'Enable ActiveX and Socket Clients') on this port?") from None
        except TimeoutError:
            raise BrokerError(f"ib: no API handshake from {s.host}:{s.port} within {s.connect_timeout_seconds:g} s "
                              "(is it TWS/Gateway, and is this host among its trusted IPs?)") from None
        except OSError as exc:
            raise BrokerError(f"ib: cannot reach {s.host}:{s.port}: {exc.strerror or exc}") from None
        try:
            accounts = self.ib.managedAccounts()
            self.account_id = s.account or (accounts[0] if accounts else "")
            if s.account and s.account not in accounts:
                raise BrokerError(f"ib: account {s.account!r} is not managed by this login (it has {accounts})")
            if not self._look_only:
                self._check_live()
            await self._check_read_only()
            if not self.contracts:
                await self._qualify()
            await self._subscribe_bars()
        except BaseException:
            self.ib.disconnect()
            raise

    def _check_live(self) -> None:
        """Paper accounts (DU...) trade unless the config says live; anything else needs both keys."""
        if self.account_id.startswith("D") and not self.settings.live:
            return
        if not self.settings.live:
            raise BrokerError(f"ib: account {self.account_id} is a live account: trading it needs broker.ib.live: true "
                              "and TRADECTL_LIVE_CONFIRM set to its id; refusing to start")
        confirm_live_account("ib", self.account_id, self._live_confirm, noun="id")

    async def _check_read_only(self) -> None:
        """TWS answers an open-orders request in a read-only API session with error 321 ("Read-Only mode")."""
        self.read_only = False
        assert self._refusal is not None
        await self.limiter.acquire()
        asking = asyncio.ensure_future(self._open_trades())
        await asyncio.wait({asking, self._refusal}, return_when=asyncio.FIRST_COMPLETED)
        if self._refusal.done():
            asking.cancel()
            with contextlib.suppress(BaseException):
                await asking
            if not self.settings.allow_read_only:
                raise BrokerError(self._refusal.result())
            self.read_only = True
            log.warning("ib: read-only API session; orders will be refused", reason=self._refusal.result())
            return
        asking.result()

    async def _qualify(self) -> None:
        timeout = self.settings.request_timeout_seconds
        for spec in self.settings.contracts:
            contract = _contract(spec)
            await self.limiter.acquire()
            try:
                async with asyncio.timeout(timeout):
                    (qualified,) = await self.ib.qualifyContractsAsync(contract)
            except RequestError as exc:
                raise BrokerError(f"ib: contract {spec.symbol} ({_describe(spec)}) does not qualify: "
                                  f"{exc.message} (IB error {exc.code})") from None
            except TimeoutError:
                raise BrokerError(f"ib: contract {spec.symbol} ({_describe(spec)}): no answer within "
                                  f"{timeout:g} s") from None
            if not isinstance(qualified, Contract) or not qualified.conId:
                raise BrokerError(f"ib: contract {spec.symbol} ({_describe(spec)}) does not qualify: IB lists no "
                                  "single contract for it (unknown or ambiguous)")
            self.contracts[spec.symbol] = qualified
            self._by_con_id[qualified.conId] = spec.symbol

    async def _subscribe_bars(self) -> None:
        self._rt_requests.clear()
        if not self.settings.realtime_bars:
            return  # a history-only connection (a data fetch) takes no market-data line
        for spec in self.settings.contracts:
            await self.limiter.acquire()
            bars = self.ib.reqRealTimeBars(self.contracts[spec.symbol], 5, spec.show, self.settings.use_rth)
            self._rt_requests[bars.reqId] = spec.symbol
            self._aggregators[spec.symbol].reset()

    async def _session(self, ready: Any) -> None:
        """One connection's life for the supervisor: (re)open the link, run the ready hook, wait for the close."""
        if not self.ib.isConnected():
            await self._open_link()
        assert self._closed is not None
        closed = self._closed
        await ready()
        await closed

    def _on_disconnected(self) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def _ready(self, reconnect: bool) -> None:
        """Before the connection counts: the orders' missed news, then the bars' (both in order, each once)."""
        await self._recover_orders(reconnect)
        if reconnect:
            for symbol in list(self._last_ts):
                await self._schedule_catch_up(symbol, self._last_ts[symbol] + 1)

    # ------------------------------------------------------------------ errors and TWS's link
    def _on_error(self, req_id: int, code: int, message: str, contract: Any) -> None:
        s = self.settings
        if code == 326 or (code == 321 and convert.read_only_error(code, message) and req_id == -1):
            text = (f"ib: client id {s.client_id} is already in use at {s.host}:{s.port} (another program or a "
                    "stale session holds it): set broker.ib.client_id to a free id" if code == 326 else
                    "ib: the TWS/Gateway API session is read-only (IB error 321): untick 'Read-Only API' in "
                    "Configure > API > Settings to trade, or set broker.ib.allow_read_only for a look only")
            if self._refusal is not None and not self._refusal.done():
                self._refusal.set_result(text)
            if code == 321:
                self.read_only = True
            log.error(text)
            return
        kind = convert.CONNECTIVITY.get(code)
        if kind is not None:
            self._on_connectivity(code, kind, message)
            return
        cid = self._by_order_id.get(req_id)
        if cid is not None:
            self._on_order_error(cid, code, message)
            return
        if code == 162 and "pacing" in message.lower():
            self.history_limiter.pause_until(15.0, reason=message)
        if 2100 <= code < 2200 or code in (2104, 2106, 2158):
            log.info("ib notice", code=code, message=message)
        elif req_id > 0 and req_id not in self._rt_requests:
            # the answer to a request being awaited: it raises there with this code and message
            # (RaiseRequestErrors) and its caller reports it, once
            log.info("ib request refused", req_id=req_id, code=code, message=message)
        else:
            log.warning("ib error", req_id=req_id, code=code, message=message)

    def _on_connectivity(self, code: int, kind: str, message: str) -> None:
        if kind == "lost":
            for aggregator in self._aggregators.values():
                aggregator.reset()  # the bucket in progress misses bars now: it comes from history later
            if self.link.lost(f"{code}: {message}"):
                self.counts["link_lost"] += 1
                log.error("ib: TWS lost its connection to IB; no orders until it is back", code=code)
            return
        self.link.restored(f"{code}: {message}")
        log.warning("ib: TWS connection to IB restored", code=code, data_lost=kind == "restored_data_lost")
        self._spawn(self._after_restore(resubscribe=kind == "restored_data_lost"))

    async def _after_restore(self, *, resubscribe: bool) -> None:
        """1101: market data subscriptions are gone (renew them); either way the bars missed meanwhile are fetched."""
        if resubscribe:
            for req_id in list(self._rt_requests):
                with contextlib.suppress(ConnectionError):
                    self.ib.client.cancelRealTimeBars(req_id)
            await self._subscribe_bars()
            self.counts["resubscribed"] += 1
        for symbol in list(self._last_ts):
            self._schedule_catch_up(symbol, self._last_ts[symbol] + 1)

    # ------------------------------------------------------------------ market data
    def bars(self) -> AsyncIterator[Bar]:
        return self.outlet.bars()

    def stop_bars(self) -> None:
        self.outlet.stop()

    def now(self) -> int:
        self._now = max(self._now, int(time.time()))
        return self._now

    def _on_realtime_bar(self, bars: Any, has_new_bar: bool) -> None:
        symbol = self._rt_requests.get(getattr(bars, "reqId", -1))
        if symbol is None or not bars:
            return
        rt = bars[-1]
        del bars[:]  # ib_async keeps every bar it hands on; memory stays flat
        try:
            ts_open = convert.epoch(rt.time)
            values = [float(x) for x in (rt.open_, rt.high, rt.low, rt.close, rt.volume)]
            if not all(math.isfinite(v) for v in values[:4]):
                raise convert.WireError(f"non-finite price in {values}")
        except (convert.WireError, TypeError, ValueError) as exc:
            self.quarantine.put(f"real-time bar: {exc}", rt)
            return
        self.counts["realtime_bars"] += 1
        for finished in self._aggregators[symbol].add(ts_open, *values):
            self._on_finished(finished)

    def _on_finished(self, finished: Finished) -> None:
        bar = finished.bar
        if bar.symbol in self._catching_up:
            self._held.setdefault(bar.symbol, []).append(bar)
            return
        if finished.partial:
            self._held.setdefault(bar.symbol, []).append(bar)
            last = self._last_ts.get(bar.symbol)
            self._schedule_catch_up(bar.symbol, last + 1 if last is not None else bar.ts)
            return
        self._deliver_bar(bar)

    def _deliver_bar(self, bar: Bar) -> bool:
        if not self.outlet.put(bar):
            self.counts["duplicate_bars"] += 1
            return False
        self._now = max(self._now, bar.ts)
        self.counts["bars"] += 1
        return True

    def _schedule_catch_up(self, symbol: str, since: int) -> asyncio.Task[None]:
        """The symbol's catch-up from history (the one running, or a new one from ``since``)."""
        task = self._catching_up.get(symbol)
        if task is None or task.done():
            task = self._catching_up[symbol] = self._spawn(self._catch_up(symbol, since))
        return task

    async def _catch_up(self, symbol: str, since: int) -> None:
        """Bars from ``since`` to now from history, in order and once; live bars held meanwhile follow them."""
        task = asyncio.current_task()
        try:
            held = self._held.get(symbol, [])
            end = max([b.ts for b in held] + [self.now()])
            missed = await self.historical_bars(symbol, since, end)
            delivered = sum(self._deliver_bar(bar) for bar in missed)
            self.counts["backfilled_bars"] += delivered
            log.info("ib bars caught up from history", symbol=symbol, bars=delivered,
                     since=datetime.fromtimestamp(since, UTC).isoformat())
        except (BrokerError, ConnectionError) as exc:
            log.error("ib backfill failed; live bars resume without the missed ones", symbol=symbol, error=str(exc))
        finally:
            if self._catching_up.get(symbol) is task:
                del self._catching_up[symbol]
            for bar in sorted(self._held.pop(symbol, []), key=lambda b: b.ts):
                self._deliver_bar(bar)

    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]:
        """Bars closing in ``[start_ts, end_ts]``, oldest first, one per time; chunked and paced as IB requires."""
        contract = self.contracts.get(symbol)
        if contract is None:
            raise BrokerError(f"ib: {symbol!r} is not a configured contract")
        step = self.settings.bar_seconds
        end_ts = min(end_ts, self.now())  # nothing closes in the future: no request for it
        if end_ts < start_ts:
            return []
        first_open = start_ts - step
        chunk = step * self.settings.max_bars_per_request
        by_ts: dict[int, Bar] = {}
        until = end_ts
        while until > first_open:
            span = min(chunk, until - first_open)
            for item in await self._history(symbol, contract, until, span):
                try:
                    bar = history_bar(symbol, item, step)
                except (ValueError, TypeError) as exc:
                    self.quarantine.put(f"historical bar: {exc}", item)
                    continue
                if start_ts <= bar.ts <= end_ts:
                    by_ts[bar.ts] = bar
            until -= span
        return [by_ts[ts] for ts in sorted(by_ts)]

    async def _history(self, symbol: str, contract: Contract, until: int, span: int) -> list[Any]:
        s = self.settings
        self._require_socket()
        async with self._history_lock:
            await self.history_limiter.acquire()
            await self.limiter.acquire()
            try:
                async with asyncio.timeout(s.request_timeout_seconds):
                    return list(await self.ib.reqHistoricalDataAsync(
                        contract, datetime.fromtimestamp(until, UTC), _duration(span), s.bar_size,
                        s.spec(symbol).show, s.use_rth, formatDate=2, timeout=0))
            except RequestError as exc:
                if exc.code == 162 and "pacing" in exc.message.lower():
                    self.history_limiter.pause_until(15.0, reason=exc.message)
                if exc.code in (162, 166) and "no data" in exc.message.lower():
                    return []
                raise BrokerError(f"ib historical bars of {symbol}: {exc.message} (IB error {exc.code})") from None
            except TimeoutError:
                raise BrokerError(f"ib historical bars of {symbol}: no answer within "
                                  f"{s.request_timeout_seconds:g} s") from None
            except ConnectionError:
                raise BrokerError(f"ib historical bars of {symbol}: the connection to TWS closed during the "
                                  "request") from None

    def feed_status(self) -> dict[str, Any]:
        sup = self.supervisor
        connected = sup.connected and self.link.up
        if sup.state is ConnectionState.CONNECTED and not self.link.up:
            state = "venue_link_lost"
        else:
            state = sup.state.value
        last = self.outlet.last_bar
        return {
            "kind": "ib",
            "state": state,
            "connected": connected,
            "disconnected_seconds": round(max(sup.disconnected_seconds, self.link.down_seconds), 3),
            "reconnects": sup.reconnects,
            "market_open": None,
            "account": self.account_id,
            "client_id": self.settings.client_id,
            "read_only": self.read_only,
            "symbols": [c.symbol for c in self.settings.contracts],
            "contracts": {k: c.conId for k, c in self.contracts.items()},
            "bar_seconds": self.settings.bar_seconds,
            "last_bar_ts": last.time.isoformat() if last is not None else None,
            "socket": sup.status(),
            "venue_link": self.link.status(),
            "counts": dict(self.counts),
            "quarantined": self.quarantine.status(),
            "messages": self.limiter.status(),
            "historical": self.history_limiter.status(),
        }

    # ------------------------------------------------------------------ order updates
    async def next_update(self) -> OrderUpdate:
        return await self.updates.next()

    def drain_updates(self) -> list[OrderUpdate]:
        return self.updates.drain()

    def _deliver(self, update: OrderUpdate) -> None:
        self.counts["updates"] += 1
        self.updates.put(update)

    def _track(self, trade: Any) -> _Order | None:
        """Our record of the order behind an ib_async ``Trade`` (None for an order without our orderRef)."""
        order = trade.order
        cid = order.orderRef
        if not cid:
            self.counts["foreign_orders"] += 1
            return None
        info = self._orders.get(cid)
        if info is None:
            symbol = self._by_con_id.get(trade.contract.conId, trade.contract.localSymbol or trade.contract.symbol)
            info = self._orders[cid] = _Order(cid, symbol, convert.decimal(order.totalQuantity, "totalQuantity"))
        if order.orderId:
            info.order_id = order.orderId
            self._by_order_id[order.orderId] = cid
        perm = order.permId or trade.orderStatus.permId
        if perm:
            info.perm_id = perm
        return info

    def _report(self, info: _Order, trade: Any) -> OrderUpdate | None:
        """The order's status as IB reports it, never ahead of the fills delivered (they carry the progress)."""
        st = trade.orderStatus
        try:
            reported = max(convert.decimal(st.filled, "filled"),
                           convert.decimal(getattr(trade.order, "filledQuantity", 0) or 0, "filledQuantity")
                           if _finite(getattr(trade.order, "filledQuantity", 0)) else ZERO)
            status = convert.order_status(st.status, reported, bool(info.refusal))
        except convert.WireError as exc:
            self.quarantine.put(f"order status: {exc}", st)
            return None
        filled = info.filled
        if reported > filled and status in (OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED):
            return None  # the executions behind it will report it, each with its fill
        if status is OrderStatus.PARTIALLY_FILLED and reported == filled and filled == ZERO:
            status = OrderStatus.ACCEPTED
        return OrderUpdate(
            client_order_id=info.client_order_id, status=status, ts=self.now(),
            broker_order_id=str(info.perm_id) if info.perm_id else None, symbol=info.symbol,
            filled_quantity=filled if status is not OrderStatus.FILLED or filled else reported,
            average_price=info.average, message=info.refusal or _last_message(trade))

    def _on_status(self, trade: Any) -> None:
        info = self._track(trade)
        if info is None:
            return
        entry = trade.log[-1] if trade.log else None
        if entry is not None and entry.errorCode in convert.ORDER_REFUSALS and not info.perm_id and not info.refusal:
            info.refusal = entry.message  # ib_async reports the refusal as a cancel before its error event
        status = trade.orderStatus.status
        if status == "PendingSubmit":
            return  # our own placeOrder echo
        if status == "ValidationError" and info.perm_id:
            return  # a warning about a working order (a modification refused): the order stands
        if info.ack is not None and not info.ack.done() and (info.perm_id or info.refusal):
            info.ack.set_result(None)
        report = self._report(info, trade)
        if report is not None:
            self._deliver(report)

    def _on_order_error(self, cid: str, code: int, message: str) -> None:
        info = self._orders[cid]
        if (code in convert.ORDER_REFUSALS and not info.perm_id) or convert.read_only_error(code, message):
            info.refusal = f"IB error {code}: {message}"
            if convert.read_only_error(code, message):
                self.read_only = True
            if info.ack is not None and not info.ack.done():
                info.ack.set_exception(OrderRejected(info.refusal))
            log.warning("ib refused an order", client_order_id=cid, code=code, message=message)
        elif code != 202:
            log.warning("ib order message", client_order_id=cid, code=code, message=message)

    def _on_execution(self, trade: Any, ib_fill: Any) -> None:
        info = self._track(trade)
        exec_id = ib_fill.execution.execId
        if info is None:
            return
        if not self._executions.add(exec_id):
            self.counts["repeated_executions"] += 1
            return
        try:
            fill = convert.fill(ib_fill, info.symbol, ZERO)
        except convert.WireError as exc:
            self.quarantine.put(str(exc), ib_fill)
            return
        report = ib_fill.commissionReport
        if report.execId == exec_id:
            fill = dataclasses.replace(fill, fee=convert.decimal(report.commission, "commission"))
            self._deliver_fill(info, fill)
            return
        # TWS sends the commission report right after the execution, usually in the same read: wait one
        # loop turn for it so the fill is booked with its fee
        self._unpriced[exec_id] = (info, fill)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_unpriced)

    def _on_commission(self, trade: Any, ib_fill: Any, report: Any) -> None:
        exec_id = report.execId
        try:
            fee = convert.decimal(report.commission, "commission")
        except convert.WireError as exc:
            self.quarantine.put(str(exc), report)
            return
        if exec_id in self._unpriced:
            info, fill = self._unpriced[exec_id]
            self._unpriced[exec_id] = (info, dataclasses.replace(fill, fee=fee))
            return
        due = self._fees_due.pop(exec_id, None)
        if due is None:
            return  # a report for a fill delivered with its fee already (a replay of executions)
        info, fill = due
        completed = dataclasses.replace(fill, fee=fee)
        info.fills = [completed if f.fill_id == fill.fill_id else f for f in info.fills]
        self.counts["fee_completions"] += 1
        log.info("ib commission arrived after its execution; fee completed", fill_id=exec_id, fee=str(fee))
        self._deliver(self._fill_update(info, completed))

    def _flush_unpriced(self) -> None:
        self._flush_scheduled = False
        pending, self._unpriced = self._unpriced, {}
        for exec_id, (info, fill) in pending.items():
            if not fill.fee:
                self._fees_due[exec_id] = (info, fill)
            self._deliver_fill(info, fill)

    def _deliver_fill(self, info: _Order, fill: Fill) -> None:
        info.fills.append(fill)
        self._deliver(self._fill_update(info, fill))

    def _fill_update(self, info: _Order, fill: Fill) -> OrderUpdate:
        filled = info.filled
        status = OrderStatus.FILLED if filled >= info.quantity else OrderStatus.PARTIALLY_FILLED
        return OrderUpdate(client_order_id=info.client_order_id, status=status, ts=max(fill.ts, self._now),
                           broker_order_id=str(info.perm_id) if info.perm_id else None, symbol=info.symbol,
                           filled_quantity=filled, average_price=info.average, fill=fill)

    async def _recover_orders(self, reconnect: bool) -> None:
        """Re-learn our orders from TWS (a new socket knows none); after a reconnect deliver what was missed."""
        if self.read_only:
            return  # a read-only session lists no orders (TWS refuses the request)
        known = set(self._orders) if reconnect else set()
        open_now: set[str] = set()
        for trade in await self._open_trades():
            info = self._track(trade)
            if info is not None:
                open_now.add(info.client_order_id)
        if not reconnect:
            return
        for ib_fill in await self._executions_report():
            cid = ib_fill.execution.orderRef
            info = self._orders.get(cid)
            if cid not in known or info is None or not self._executions.add(ib_fill.execution.execId):
                continue
            fee = _fee(ib_fill)
            try:
                fill = convert.fill(ib_fill, info.symbol, fee)
            except convert.WireError as exc:
                self.quarantine.put(str(exc), ib_fill)
                continue
            self.counts["recovered_fills"] += 1
            self._deliver_fill(info, fill)
        finished = [cid for cid in known if cid not in open_now]
        if finished:
            for trade in await self._completed_trades():
                info = self._orders.get(trade.order.orderRef)
                if info is not None and info.client_order_id in finished:
                    report = self._report(info, trade)
                    if report is not None:
                        self._deliver(report)
        log.info("ib orders recovered after reconnect", open=len(open_now), finished=len(finished))

    # ------------------------------------------------------------------ orders
    def _require_socket(self) -> None:
        if not self.ib.isConnected():
            raise BrokerError("ib: not connected to TWS/Gateway")

    def _refuse_unless_tradable(self) -> None:
        if not self.ib.isConnected() or self.supervisor.state is not ConnectionState.CONNECTED:
            raise OrderRejected("ib: not connected to TWS/Gateway; order not sent")
        if not self.link.up:
            raise OrderRejected(f"ib: TWS has lost its connection to IB ({self.link.reason}); no orders until it "
                                "is restored")
        if self.read_only:
            raise OrderRejected("ib: the API session is read-only; order not sent")

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        known = self._orders.get(client_order_id)
        if known is not None:
            raise OrderRejected(f"duplicate client_order_id {client_order_id!r}: already sent to IB"
                                f" (permId {known.perm_id or 'pending'})")
        contract = self.contracts.get(request.symbol)
        if contract is None:
            raise OrderRejected(f"{client_order_id}: {request.symbol!r} is not a configured IB contract")
        self._refuse_unless_tradable()

        async def send() -> OrderUpdate:
            await self.limiter.acquire()
            self._refuse_unless_tradable()
            order = _ib_order(request, client_order_id, self.account_id)
            info = self._orders[client_order_id] = _Order(client_order_id, request.symbol, request.quantity)
            info.ack = asyncio.get_running_loop().create_future()
            try:
                trade = self.ib.placeOrder(contract, order)
            except ConnectionError:
                del self._orders[client_order_id]
                raise OrderRejected(f"{client_order_id}: not connected to TWS; order not sent") from None
            info.order_id = trade.order.orderId
            self._by_order_id[info.order_id] = client_order_id
            async with asyncio.timeout(self.settings.ack_timeout_seconds):
                await info.ack
            report = self._report(info, trade)
            if report is None or report.status is OrderStatus.REJECTED:
                raise OrderRejected(info.refusal or f"{client_order_id}: refused by IB")
            return report

        return await submit_once(client_order_id, request, send, lambda: self.get_order(client_order_id),
                                 _classify, deadline=self.settings.ack_timeout_seconds)

    async def cancel(self, client_order_id: str) -> OrderUpdate:
        found = await self._find(client_order_id)
        if found is None:
            raise BrokerError(f"cancel: unknown client_order_id {client_order_id!r}")
        info, trade = found
        report = await self._full_report(info, trade)
        if report.status.is_terminal:
            return report
        await self.limiter.acquire()
        self._require_socket()
        self.ib.cancelOrder(trade.order)  # ib_async marks it PendingCancel at once; TWS confirms Cancelled
        return dataclasses.replace(report, status=OrderStatus.CANCEL_PENDING, message="cancel requested",
                                   ts=self.now())

    async def get_order(self, client_order_id: str) -> OrderUpdate | None:
        found = await self._find(client_order_id)
        if found is None:
            return None
        return await self._full_report(*found)

    async def _full_report(self, info: _Order, trade: Any) -> OrderUpdate:
        """The order as TWS lists it, with the filled quantity and average price its executions give."""
        st = trade.orderStatus
        reported = convert.decimal(st.filled, "filled")
        completed_qty = getattr(trade.order, "filledQuantity", 0)
        if _finite(completed_qty):
            reported = max(reported, convert.decimal(completed_qty, "filledQuantity"))
        fills = list(info.fills)
        if reported > sum((f.quantity for f in fills), ZERO):
            fills = await self.fills_for(info.client_order_id)
        filled = sum((f.quantity for f in fills), ZERO)
        average = _DIV.divide(sum((f.quantity * f.price for f in fills), ZERO), filled) if filled else None
        status = convert.order_status(st.status, max(filled, reported), bool(info.refusal))
        if status is OrderStatus.PARTIALLY_FILLED and not filled:
            status = OrderStatus.ACCEPTED
        return OrderUpdate(client_order_id=info.client_order_id, status=status, ts=self.now(),
                           broker_order_id=str(info.perm_id) if info.perm_id else None, symbol=info.symbol,
                           filled_quantity=max(filled, reported), average_price=average,
                           message=info.refusal or _last_message(trade))

    async def _find(self, client_order_id: str) -> tuple[_Order, Any] | None:
        """The order among TWS's open orders, else its completed ones (by orderRef, as TWS keeps it)."""
        for trade in await self._open_trades():
            if trade.order.orderRef == client_order_id:
                info = self._track(trade)
                assert info is not None
                return info, trade
        matches = [t for t in await self._completed_trades() if t.order.orderRef == client_order_id]
        if not matches:
            return None
        trade = matches[-1]
        info = self._track(trade)
        assert info is not None
        return info, trade

    async def _ask(self, what: str, request: Callable[[], Awaitable[Any]], *, named: bool = True) -> list[Any]:
        """One list request to TWS: socket up, within the message rate and the request timeout.

        ``named``: ib_async files the answer under the request's name (open orders, completed orders,
        positions), so two at once would mix: they go one at a time.
        """
        self._require_socket()
        async with self._named_request if named else contextlib.nullcontext():
            await self.limiter.acquire()
            try:
                async with asyncio.timeout(self.settings.request_timeout_seconds):
                    return list(await request())
            except TimeoutError:
                raise BrokerError(f"ib: {what} not listed in time") from None

    async def _open_trades(self) -> list[Any]:
        return await self._ask("open orders", self.ib.reqOpenOrdersAsync)

    async def _completed_trades(self) -> list[Any]:
        return await self._ask("completed orders", lambda: self.ib.reqCompletedOrdersAsync(False))

    async def _executions_report(self) -> list[Any]:
        fills = await self._ask("executions", self.ib.reqExecutionsAsync, named=False)
        # the session's own copy of an execution carries its commission report
        session = {f.execution.execId: f for f in self.ib.fills()}
        return [session.get(f.execution.execId, f) for f in fills]

    async def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every execution of one order (by its orderRef), oldest first, each with its commission."""
        ours = [f for f in await self._executions_report() if f.execution.orderRef == client_order_id]
        ours.sort(key=lambda f: (f.execution.cumQty, f.execution.execId))
        info = self._orders.get(client_order_id)
        out = []
        for ib_fill in ours:
            symbol = info.symbol if info else self._by_con_id.get(ib_fill.contract.conId, ib_fill.contract.symbol)
            try:
                out.append(convert.fill(ib_fill, symbol, _fee(ib_fill)))
            except convert.WireError as exc:
                self.quarantine.put(str(exc), ib_fill)
        return out

    async def open_orders(self) -> list[OrderUpdate]:
        out = []
        for trade in await self._open_trades():
            info = self._track(trade)
            if info is not None and (report := self._report(info, trade)) is not None:
                out.append(report if report.filled_quantity >= info.filled else
                           dataclasses.replace(report, filled_quantity=info.filled))
        return out

    # ------------------------------------------------------------------ account
    async def positions(self) -> list[Position]:
        rows = await self._ask("positions", self.ib.reqPositionsAsync)
        out = []
        for row in rows:
            if self.account_id and row.account != self.account_id:
                continue
            try:
                quantity = convert.decimal(row.position, "position")
                if not quantity:
                    continue
                cost = convert.decimal(row.avgCost, "avgCost")
                multiplier = Decimal(row.contract.multiplier or 1)
            except (convert.WireError, ArithmeticError) as exc:
                self.quarantine.put(f"position: {exc}", row)
                continue
            symbol = self._by_con_id.get(row.contract.conId, row.contract.localSymbol or row.contract.symbol)
            out.append(Position(symbol, quantity, _DIV.divide(cost, multiplier)))
        return sorted(out, key=lambda p: p.symbol)

    async def venue_time(self) -> datetime:
        """TWS's own clock (what ``broker check`` shows); a TWS that does not answer in time is one error."""
        self._require_socket()
        await self.limiter.acquire()
        try:
            async with asyncio.timeout(self.settings.request_timeout_seconds):
                return await self.ib.reqCurrentTimeAsync()
        except TimeoutError:
            raise BrokerError("ib: TWS did not tell its time") from None

    async def account(self) -> AccountSnapshot:
        """Cash and net liquidation from a one-off account summary (subscribed, read, cancelled)."""
        self._require_socket()
        await self.limiter.acquire()
        client, wrapper = self.ib.client, self.ib.wrapper
        req_id = client.getReqId()
        future = wrapper.startReq(req_id)
        client.reqAccountSummary(req_id, "All", "TotalCashValue,NetLiquidation")
        try:
            async with asyncio.timeout(self.settings.request_timeout_seconds):
                await future
        except TimeoutError:
            raise BrokerError("ib: account summary not received in time") from None
        finally:
            with contextlib.suppress(ConnectionError):
                client.cancelAccountSummary(req_id)
        values = {(v.tag, v.currency): v.value for v in wrapper.acctSummary.values()
                  if v.account == self.account_id or not self.account_id}
        cash = [(cur, val) for (tag, cur), val in values.items() if tag == "TotalCashValue" and cur != "BASE"]
        equity = [(cur, val) for (tag, cur), val in values.items() if tag == "NetLiquidation" and cur != "BASE"]
        if not cash or not equity:
            raise BrokerError(f"ib: account summary without cash or net liquidation: {sorted(values)}")
        try:
            return AccountSnapshot(cash=Decimal(cash[0][1]), equity=Decimal(equity[0][1]), currency=cash[0][0],
                                   ts=self.now())
        except ArithmeticError:
            raise BrokerError(f"ib: unreadable account values {cash} {equity}") from None

    # ------------------------------------------------------------------ helpers
    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _classify(exc: BaseException) -> tuple[SubmitFailure, str]:
    if isinstance(exc, OrderRejected):
        return SubmitFailure.REJECTED, str(exc)
    if isinstance(exc, UnknownOrderOutcome):
        return SubmitFailure.AMBIGUOUS, str(exc)
    if isinstance(exc, TimeoutError):
        return SubmitFailure.AMBIGUOUS, "no acknowledgement from TWS in time"
    return SubmitFailure.AMBIGUOUS, f"{type(exc).__name__}: {exc}"


def _contract(spec: ContractSpec) -> Contract:
    if spec.sec_type == "STK":
        return Stock(spec.ib_symbol, spec.exchange, spec.currency, primaryExchange=spec.primary_exchange)
    if spec.sec_type == "CASH":
        return Forex(pair=spec.ib_symbol + spec.currency, exchange=spec.exchange or "IDEALPRO")
    return Future(spec.ib_symbol, spec.expiry, spec.exchange, currency=spec.currency)


def _describe(spec: ContractSpec) -> str:
    parts = [spec.sec_type, spec.ib_symbol, spec.currency, spec.exchange]
    if spec.expiry:
        parts.append(spec.expiry)
    return " ".join(p for p in parts if p)


def _ib_order(request: OrderRequest, client_order_id: str, account: str) -> Any:
    action = "BUY" if request.side.sign > 0 else "SELL"
    quantity = float(request.quantity)
    tif = _TIF[request.time_in_force.value]
    if request.order_type is OrderType.LIMIT:
        assert request.limit_price is not None
        order = LimitOrder(action, quantity, float(request.limit_price), tif=tif)
    else:
        order = MarketOrder(action, quantity, tif=tif)
    order.orderRef = client_order_id
    order.account = account
    return order


def _duration(seconds: int) -> str:
    """IB's durationStr: seconds up to a day, whole days beyond."""
    return f"{seconds} S" if seconds <= 86_400 else f"{math.ceil(seconds / 86_400)} D"


def _fee(ib_fill: Any) -> Decimal:
    report = ib_fill.commissionReport
    if report.execId != ib_fill.execution.execId:
        return ZERO
    return convert.decimal(report.commission, "commission")


def _finite(value: object) -> bool:
    return isinstance(value, int | float | Decimal) and math.isfinite(value) and abs(value) < 1e300


def _last_message(trade: Any) -> str:
    for entry in reversed(trade.log or []):
        if entry.message:
            return str(entry.message)
    return ""
