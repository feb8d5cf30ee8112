"""``FakeTws``: an asyncio socket server on 127.0.0.1 that speaks the TWS API to ib_async 2.1.

Handshake: the client sends ``API\\0`` and a framed ``v157..178``; the fake answers a framed
``"176\\0<time>\\0"`` and waits for startApi (71), then sends nextValidId and managedAccounts. A client id
already connected gets error 326 and a closed socket, as TWS does. Requests served: contract details,
real-time bars, historical bars, place/cancel order, open and completed orders, executions (each with its
commission report), positions, account summary and the current time. Anything else is answered with
error 10000 naming the message id so a test never hangs on a silent fake.

Fault injection (test side): ``connectivity_lost`` (1100: no market data flows), ``connectivity_restored``
(1101 drops every market-data subscription, 1102 keeps them), ``drop_connections`` (sockets closed, the
listener stays), ``go_away``/``come_back`` (refused connections, state kept), ``reject_next_order``,
``hold_commissions`` (commission reports withheld until ``release_commissions``), ``read_only``,
``max_fill_qty_per_bar`` for partial fills and ``overfill_next`` (an execution larger than the order).
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

from tests.fakes.tws import wire
from tests.fakes.tws.venue import ACCOUNT, Bar5, Execution, Order, Records, Venue

_BAR_SIZES = {"5 secs": 5, "10 secs": 10, "15 secs": 15, "30 secs": 30, "1 min": 60, "2 mins": 120,
              "3 mins": 180, "5 mins": 300, "10 mins": 600, "15 mins": 900, "20 mins": 1200, "30 mins": 1800,
              "1 hour": 3600, "2 hours": 7200, "4 hours": 14400, "1 day": 86400}
_DURATION_UNITS = {"S": 1, "D": 86400, "W": 7 * 86400}


def _d(value: str) -> Decimal:
    return Decimal(value) if value else Decimal(0)


@dataclass
class Subscription:
    req_id: int
    con_id: int


@dataclass
class Session:
    """One client connection."""

    writer: asyncio.StreamWriter
    client_id: int = -1
    bars: dict[int, Subscription] = field(default_factory=dict)  # real-time bar subscriptions by req id

    def send(self, fields: Sequence[wire.Field]) -> None:
        if not self.writer.is_closing():
            self.writer.write(wire.frame(fields))

    def send_many(self, messages: Sequence[Sequence[wire.Field]]) -> None:
        """Several messages in one write: ib_async decodes them in one pass (as TWS's bursts arrive)."""
        if not self.writer.is_closing():
            self.writer.write(b"".join(wire.frame(m) for m in messages))


class FakeTws:
    def __init__(self, *, cash: object = 1_000_000, max_fill_qty_per_bar: object | None = None,
                 next_order_id: int = 1, read_only: bool = False, account: str = ACCOUNT) -> None:
        self.venue = Venue(cash=Decimal(str(cash)),
                           max_fill_qty_per_bar=None if max_fill_qty_per_bar is None else Decimal(
                               str(max_fill_qty_per_bar)))
        self.records = Records()
        self.read_only = read_only
        self.account = account  # the login's one managed account: DU... is a paper account, U... a live one
        self.port = 0
        self.sessions: list[Session] = []
        self._server: asyncio.Server | None = None
        self._next_order_id = next_order_id
        self._lost = False  # between 1100 and 1101/1102: no market data flows
        self._rejections: list[str] = []
        self._held_commissions = 0
        self._withheld: list[tuple[Session, Execution]] = []
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        await self.go_away()
        if self._tasks:  # closed sockets end their readers; a cancelled reader would be logged by asyncio
            await asyncio.wait(set(self._tasks), timeout=2)

    async def __aenter__(self) -> FakeTws:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def go_away(self) -> None:
        """Stop listening and close every connection; the venue's state is kept for ``come_back``."""
        if self._server is not None:
            self._server.close()
            self._server = None
        await self.drop_connections()

    async def come_back(self) -> None:
        await self.start()

    async def drop_connections(self) -> None:
        """Close every client socket (a TWS restart, a network cut); the listener stays up."""
        for session in list(self.sessions):
            session.writer.close()
        self.sessions.clear()
        await asyncio.sleep(0)

    # ------------------------------------------------------------------ the market (test side)
    async def publish_bar(self, symbol: str, ts_open: int, o: object, h: object, low: object, c: object,
                          volume: object = 100) -> None:
        """One 5-second bar of ``symbol`` (stamped at its open): orders it crosses fill, then it streams."""
        instrument = next(i for i in self.venue.instruments if i.local_symbol == symbol or i.symbol == symbol)
        bar = Bar5(instrument.con_id, ts_open, *(Decimal(str(x)) for x in (o, h, low, c, volume)))
        fills = self.venue.on_bar(bar)
        for order, execution in fills:
            self._report_fill(order, execution)
        if self._lost:
            return  # the data farm is unreachable: the bar is history only
        for session in list(self.sessions):
            for sub in session.bars.values():
                if sub.con_id == bar.con_id:
                    wap = (bar.high + bar.low + bar.close) / 3
                    session.send(wire.real_time_bar(sub.req_id, bar.ts_open, bar.open, bar.high, bar.low, bar.close,
                                                    bar.volume, wap.quantize(Decimal("0.00001")), 1))
                    self.records.bar_writes_ns.append((bar.ts_open, time.monotonic_ns()))
        await self._drain()

    async def publish_long_bar(self, symbol: str, ts_open: int, seconds: int, o: float, h: float, low: float,
                               c: float, volume: float = 1200) -> None:
        """One bar of ``seconds`` as the 5-second bars TWS streams: from the open to the close in even steps (four
        decimals), the fourth reaching the high and the eighth the low (each the last when there are fewer); a
        daemon summing them gets exactly ``o, h, low, c``."""
        n = seconds // 5
        for k in range(n):
            p = round(o + (c - o) * k / (n - 1), 4) if n > 1 else c
            await self.publish_bar(symbol, ts_open + 5 * k, o if k == 0 else p, h if k == min(3, n - 1) else p,
                                   low if k == min(7, n - 1) else p, c if k == n - 1 else p, volume / n)

    def add_history(self, symbol: str, bars: Sequence[tuple[int, object, object, object, object, object]]) -> None:
        """5-second bars for the historical API only (warm-up data): (ts_open, o, h, l, c, volume) each."""
        instrument = next(i for i in self.venue.instruments if i.local_symbol == symbol or i.symbol == symbol)
        series = self.venue.history.setdefault(instrument.con_id, [])
        for ts_open, o, h, low, c, v in bars:
            series.append(Bar5(instrument.con_id, ts_open, *(Decimal(str(x)) for x in (o, h, low, c, v))))
        series.sort(key=lambda b: b.ts_open)
        self.venue.now = max(self.venue.now, series[-1].ts_open + 5)

    # ------------------------------------------------------------------ faults (test side)
    async def connectivity_lost(self) -> None:
        self._lost = True
        self._broadcast(wire.error(-1, 1100, "Connectivity between IB and Trader Workstation has been lost."))
        await self._drain()

    async def connectivity_restored(self, *, data_lost: bool) -> None:
        self._lost = False
        if data_lost:
            for session in self.sessions:
                session.bars.clear()  # every market-data subscription is gone: the client must renew them
            self._broadcast(wire.error(-1, 1101, "Connectivity between IB and TWS has been restored- data lost.*"))
        else:
            self._broadcast(wire.error(-1, 1102, "Connectivity between IB and TWS has been restored- data maintained."))
        await self._drain()

    def reject_next_order(self, reason: str = "Insufficient buying power") -> None:
        self._rejections.append(reason)

    def overfill_next(self, shares: object) -> None:
        """The next execution is ``shares`` larger than its order's rest (a venue that misreports or double-fills)."""
        self.venue.overfill_qty = Decimal(str(shares))

    def hold_commissions(self, n: int = 1) -> None:
        """The commission reports of the next ``n`` executions are withheld until ``release_commissions``."""
        self._held_commissions += n

    async def release_commissions(self) -> None:
        for session, execution in self._withheld:
            session.send(wire.commission_report(execution.fields))
        self._withheld.clear()
        await self._drain()

    async def cancel_by_venue(self, order_ref: str, why: str = "Order Canceled - reason:") -> None:
        order = self.order(order_ref)
        assert order is not None and order.is_open
        self.venue.finish(order, "Cancelled")
        session = self._session_of(order.client_id)
        if session is not None:
            session.send_many([wire.error(order.order_id, 202, why), self._status(order)])
        await self._drain()

    # ------------------------------------------------------------------ what happened (test side)
    def order(self, order_ref: str) -> Order | None:
        return next((o for o in self.venue.orders.values() if o.order_ref == order_ref), None)

    @property
    def orders(self) -> list[Order]:
        return list(self.venue.orders.values())

    @property
    def executions(self) -> list[Execution]:
        return list(self.venue.executions)

    def position(self, symbol: str) -> Decimal:
        for con_id, (qty, _avg) in self.venue.positions.items():
            i = self.venue.by_con_id(con_id)
            if i is not None and (i.symbol == symbol or i.local_symbol == symbol):
                return qty
        return Decimal(0)

    async def wait_until(self, check: Callable[[], bool], seconds: float = 5.0, what: str = "") -> None:
        deadline = asyncio.get_running_loop().time() + seconds
        while not check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"fake TWS: not within {seconds} s: {what}")
            await asyncio.sleep(0.005)

    def subscribed(self, symbol: str) -> int:
        """How many real-time bar subscriptions ``symbol`` has across connections."""
        ids = {i.con_id for i in self.venue.instruments if i.symbol == symbol or i.local_symbol == symbol}
        return sum(1 for s in self.sessions for sub in s.bars.values() if sub.con_id in ids)

    # ------------------------------------------------------------------ connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        session = Session(writer)
        self.records.connections += 1
        try:
            if await reader.readexactly(4) != b"API\0":
                return
            versions = (await self._read(reader)).decode()
            top = int(versions.split("..")[1].split()[0]) if ".." in versions else 0
            if top < wire.MIN_CLIENT_VERSION:
                return
            now = datetime.now(UTC).strftime("%Y%m%d %H:%M:%S UTC")
            payload = f"{wire.SERVER_VERSION}\0{now}\0".encode()
            writer.write(struct.pack(">I", len(payload)) + payload)
            while True:
                fields = wire.split(await self._read(reader))
                if fields:
                    self._handle(session, fields)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if session in self.sessions:
                self.sessions.remove(session)
            writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _read(reader: asyncio.StreamReader) -> bytes:
        (size,) = struct.unpack(">I", await reader.readexactly(4))
        return await reader.readexactly(size)

    def _broadcast(self, fields: Sequence[wire.Field]) -> None:
        for session in self.sessions:
            session.send(fields)

    async def _drain(self) -> None:
        for session in list(self.sessions):
            with contextlib.suppress(ConnectionError):
                await session.writer.drain()

    def _session_of(self, client_id: int) -> Session | None:
        return next((s for s in self.sessions if s.client_id == client_id), None)

    # ------------------------------------------------------------------ requests
    def _handle(self, s: Session, f: list[str]) -> None:
        msg_id = int(f[0])
        self.records.messages.append((msg_id, time.monotonic()))
        if s.client_id < 0 and msg_id != 71:
            return  # nothing is served before startApi
        handler = {
            71: self._start_api, 9: self._contract_details, 50: self._real_time_bars, 51: self._cancel_bars,
            20: self._historical, 25: lambda s, f: None, 3: self._place, 4: self._cancel, 5: self._open_orders,
            99: self._completed_orders, 7: self._executions, 61: self._positions, 64: lambda s, f: None,
            62: self._account_summary, 63: lambda s, f: None, 49: self._current_time,
        }.get(msg_id)
        if handler is None:
            s.send(wire.error(-1, 10000, f"fake TWS: message {msg_id} is not served"))
            return
        handler(s, f)

    def _start_api(self, s: Session, f: list[str]) -> None:
        client_id = int(f[2])
        self.records.client_ids.append(client_id)
        if any(other.client_id == client_id for other in self.sessions):
            s.send(wire.error(-1, 326, "Unable to connect as the client id is already in use. "
                                       "Retry with a unique client id."))
            s.writer.close()
            return
        s.client_id = client_id
        self.sessions.append(s)
        top = max([self._next_order_id] + [o.order_id + 1 for o in self.venue.orders.values()
                                           if o.client_id == client_id])
        s.send_many([wire.next_valid_id(top), wire.managed_accounts([self.account])])

    def _contract_details(self, s: Session, f: list[str]) -> None:
        # 9, 8, reqId, conId, symbol, secType, lastTrade, strike, right, multiplier, exchange, primaryExch, currency...
        req_id, con_id, symbol, sec_type, last_trade = int(f[2]), int(f[3] or 0), f[4], f[5], f[6]
        currency = f[12]
        found = self.venue.find(sec_type, symbol, currency, last_trade, con_id)
        if not found:
            s.send(wire.error(req_id, 200, "No security definition has been found for the request"))
            return
        s.send_many([*(wire.contract_details(req_id, i) for i in found), wire.contract_details_end(req_id)])

    def _real_time_bars(self, s: Session, f: list[str]) -> None:
        # 50, 3, reqId, contract(12), barSize, whatToShow, useRTH, options
        req_id, con_id = int(f[2]), int(f[3] or 0)
        instrument = self.venue.by_con_id(con_id)
        if instrument is None:
            s.send(wire.error(req_id, 200, "No security definition has been found for the request"))
            return
        if f[15] != "5":
            s.send(wire.error(req_id, 321, "Error validating request:-'bP' : cause - Invalid bar size"))
            return
        s.bars[req_id] = Subscription(req_id, con_id)

    def _cancel_bars(self, s: Session, f: list[str]) -> None:
        s.bars.pop(int(f[2]), None)

    def _historical(self, s: Session, f: list[str]) -> None:
        # 20, reqId, contract(12), includeExpired, endDateTime, barSize, duration, useRTH, whatToShow, formatDate,
        # keepUpToDate, chartOptions
        req_id, con_id = int(f[1]), int(f[2] or 0)
        end_text, bar_size, duration, format_date = f[15], f[16], f[17], f[20]
        self.records.history_requests.append({"end": end_text, "duration": duration, "bar_size": bar_size,
                                              "what_to_show": f[19]})
        seconds = _BAR_SIZES.get(bar_size)
        if seconds is None or format_date != "2":
            s.send(wire.error(req_id, 321, f"Error validating request:-'bQ' : cause - bar size {bar_size!r}"))
            return
        number, _, unit = duration.partition(" ")
        span = int(number) * _DURATION_UNITS[unit]
        end = (int(datetime.strptime(end_text, "%Y%m%d %H:%M:%S UTC").replace(tzinfo=UTC).timestamp())
               if end_text else self.venue.now)
        bars = self.venue.bars(con_id, end - span, end, seconds)
        # a bar is reported once it is complete (IB: "bars whose end is before endDateTime")
        rows = [(b.ts_open, b.open, b.high, b.low, b.close, b.volume, b.close, 1)
                for b in bars if b.ts_open + seconds <= max(end, self.venue.now)]
        start_text = datetime.fromtimestamp(end - span, UTC).strftime("%Y%m%d %H:%M:%S")
        s.send(wire.historical_data(req_id, start_text, datetime.fromtimestamp(end, UTC).strftime("%Y%m%d %H:%M:%S"),
                                    rows))

    def _place(self, s: Session, f: list[str]) -> None:
        # 3, orderId, contract(12), secIdType, secId, action, totalQuantity, orderType, lmtPrice, auxPrice, tif,
        # ocaGroup, account, openClose, origin, orderRef, ...
        order_id, con_id = int(f[1]), int(f[2] or 0)
        action, quantity, order_type, lmt, tif, order_ref = f[16], _d(f[17]), f[18], f[19], f[21], f[26]
        self.records.order_arrivals_ns.append(time.monotonic_ns())
        self.records.order_refs.append(order_ref)
        if self.read_only:
            s.send(wire.error(order_id, 321, "Error validating request:-'bN' : cause - The API interface is "
                                             "currently in Read-Only mode."))
            return
        instrument = self.venue.by_con_id(con_id)
        if instrument is None:
            s.send(wire.error(order_id, 200, "No security definition has been found for the request"))
            return
        if self.venue.order_by_id(s.client_id, order_id) is not None:
            s.send(wire.error(order_id, 103, "Duplicate order id"))
            return
        order = self.venue.place(order_id, s.client_id, instrument, action, quantity, order_type,
                                 _d(lmt) if lmt else None, tif or "DAY", order_ref)
        if self._rejections:
            reason = self._rejections.pop(0)
            self.venue.finish(order, "Cancelled")
            s.send_many([wire.error(order_id, 201, f"Order rejected - reason:{reason}"), self._status(order)])
            return
        s.send_many([wire.open_order(order.fields(), instrument), self._status(order)])

    def _status(self, order: Order) -> list[wire.Field]:
        return wire.order_status(order.order_id, order.status, order.filled, max(order.remaining, Decimal(0)),
                                 order.avg_price,
                                 order.perm_id, order.last_price, order.client_id)

    def _cancel(self, s: Session, f: list[str]) -> None:
        order_id = int(f[2])
        order = self.venue.order_by_id(s.client_id, order_id)
        if order is None or not order.is_open:
            s.send(wire.error(order_id, 10147, f"OrderId {order_id} that needs to be cancelled is not found."))
            return
        self.venue.finish(order, "Cancelled")
        s.send_many([wire.error(order_id, 202, "Order Canceled - reason:"), self._status(order)])

    def _open_orders(self, s: Session, f: list[str]) -> None:
        if self.read_only:
            s.send(wire.error(-1, 321, "Error validating request:-'b7' : cause - The API interface is currently in "
                                       "Read-Only mode."))
            return
        out: list[Sequence[wire.Field]] = []
        for order in self.venue.orders.values():
            if order.is_open and order.client_id == s.client_id:
                out += [wire.open_order(order.fields(), order.instrument), self._status(order)]
        s.send_many([*out, wire.open_order_end()])

    def _completed_orders(self, s: Session, f: list[str]) -> None:
        done = [o for o in self.venue.orders.values() if not o.is_open]
        s.send_many([*(wire.completed_order(o.fields(), o.instrument) for o in done), wire.completed_orders_end()])

    def _report_fill(self, order: Order, execution: Execution) -> None:
        session = self._session_of(order.client_id)
        if session is None:
            return  # nobody connected: the execution waits in the venue's report
        messages = [self._status(order), wire.exec_details(-1, execution.fields, execution.instrument)]
        if self._held_commissions:
            self._held_commissions -= 1
            self._withheld.append((session, execution))
        else:
            messages.append(wire.commission_report(execution.fields))
        session.send_many(messages)

    def _executions(self, s: Session, f: list[str]) -> None:
        # 7, 3, reqId, clientId, acctCode, time, symbol, secType, exchange, side
        req_id, client_id = int(f[2]), int(f[3] or 0)
        out: list[Sequence[wire.Field]] = []
        for e in self.venue.executions:
            if client_id and e.fields.client_id != client_id:
                continue
            out += [wire.exec_details(req_id, e.fields, e.instrument), wire.commission_report(e.fields)]
        s.send_many([*out, wire.exec_details_end(req_id)])

    def _positions(self, s: Session, f: list[str]) -> None:
        out: list[Sequence[wire.Field]] = []
        for con_id, (qty, avg) in self.venue.positions.items():
            instrument = self.venue.by_con_id(con_id)
            assert instrument is not None
            out.append(wire.position(self.account, instrument, qty, avg))
        s.send_many([*out, wire.position_end()])

    def _account_summary(self, s: Session, f: list[str]) -> None:
        req_id = int(f[2])
        v = self.venue
        equity = v.cash + v.market_value()
        values = {"AccountType": ("INDIVIDUAL", ""), "TotalCashValue": (str(v.cash), v.currency),
                  "NetLiquidation": (str(equity), v.currency), "BuyingPower": (str(equity * 4), v.currency),
                  "AvailableFunds": (str(v.cash), v.currency)}
        rows = [wire.account_summary(req_id, self.account, tag, value, cur) for tag, (value, cur) in values.items()]
        s.send_many([*rows, wire.account_summary_end(req_id)])

    def _current_time(self, s: Session, f: list[str]) -> None:
        s.send(wire.current_time(int(time.time())))
