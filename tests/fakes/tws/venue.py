"""The fake venue behind the fake TWS: contracts, one account, orders, executions, positions and 5-second bars.

Bars drive the market the way a real exchange's prints would: ``on_bar`` fills the orders a published
5-second bar crosses (market orders at its open, limit orders when its range reaches the limit), at most
``max_fill_qty_per_bar`` per order per bar (partial fills), and keeps the bar as history. Every change
returns the events the sessions must send; nothing here touches a socket.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal

from tests.fakes.tws.wire import ExecutionFields, Instrument, OrderFields

_DIV = Context(prec=28, rounding=ROUND_HALF_EVEN)
_CENT = Decimal("0.01")
ACCOUNT = "DU1234567"

# What the fake lists by default: a stock or two, an FX pair (IDEALPRO) and a future with its expiry.
DEFAULT_INSTRUMENTS: tuple[Instrument, ...] = (
    Instrument(756733, "SPY", "STK", "USD", "SMART", "ARCA", "SPY", "SPY", long_name="SPDR S&P 500 ETF TRUST"),
    Instrument(4815747, "NVDA", "STK", "USD", "SMART", "NASDAQ", "NVDA", "NMS", long_name="NVIDIA CORP"),
    Instrument(272093, "MSFT", "STK", "USD", "SMART", "NASDAQ", "MSFT", "NMS", long_name="MICROSOFT CORP"),
    Instrument(12087792, "EUR", "CASH", "USD", "IDEALPRO", "", "EUR.USD", "EUR.USD", min_tick="0.00005",
               long_name="European Monetary Union Euro"),
    Instrument(637533641, "ES", "FUT", "USD", "CME", "", "ESH5", "ES", last_trade_date="20250321",
               multiplier="50", min_tick="0.25", long_name="E-mini S&P 500"),
)


def fmt_time(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y%m%d %H:%M:%S UTC")


def ib_commission(instrument: Instrument, shares: Decimal, price: Decimal) -> Decimal:
    """IBKR's fixed pricing, roughly: stocks USD 0.005 a share (min 1.00, max 1% of value); FX 0.2 bp
    (min 2.00); futures 0.85 a contract."""
    if instrument.sec_type == "CASH":
        return max(Decimal(2), (shares * price * Decimal("0.00002")).quantize(_CENT))
    if instrument.sec_type == "FUT":
        return (shares * Decimal("0.85")).quantize(_CENT)
    fee = max(Decimal(1), shares * Decimal("0.005"))
    return min(fee, max(Decimal(1), shares * price / 100)).quantize(_CENT)


@dataclass
class Bar5:
    """One 5-second bar as IB sends it: stamped at its OPEN."""

    con_id: int
    ts_open: int
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal


@dataclass
class Order:
    order_id: int
    client_id: int
    perm_id: int
    instrument: Instrument
    action: str  # BUY | SELL
    quantity: Decimal
    order_type: str  # MKT | LMT
    limit_price: Decimal | None
    tif: str
    order_ref: str
    status: str = "Submitted"
    filled: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    last_price: Decimal = Decimal(0)
    completed_ts: int | None = None

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled

    @property
    def is_open(self) -> bool:
        return self.status in ("PreSubmitted", "Submitted")

    @property
    def avg_price(self) -> Decimal:
        return _DIV.divide(self.notional, self.filled) if self.filled else Decimal(0)

    def fields(self) -> OrderFields:
        return OrderFields(self.order_id, self.client_id, self.perm_id, self.action, self.quantity, self.order_type,
                           self.limit_price, self.tif, ACCOUNT, self.order_ref, self.status, self.filled,
                           fmt_time(self.completed_ts) if self.completed_ts else "")


@dataclass
class Execution:
    fields: ExecutionFields
    instrument: Instrument
    ts: int


@dataclass
class Venue:
    cash: Decimal = Decimal(1_000_000)
    currency: str = "USD"
    max_fill_qty_per_bar: Decimal | None = None
    instruments: tuple[Instrument, ...] = DEFAULT_INSTRUMENTS
    overfill_qty: Decimal = Decimal(0)  # the overfill fault: the next execution is this much larger than the rest

    def __post_init__(self) -> None:
        self.initial_cash = self.cash
        self.orders: dict[int, Order] = {}  # by perm id
        self.positions: dict[int, tuple[Decimal, Decimal]] = {}  # con id -> (quantity, average cost)
        self.executions: list[Execution] = []
        self.history: dict[int, list[Bar5]] = {}
        self.now = 0  # venue time: the close of the latest bar
        self._perm = itertools.count(1_000_001)
        self._exec = itertools.count(1)

    # ------------------------------------------------------------------ contracts
    def find(self, sec_type: str, symbol: str, currency: str, last_trade: str, con_id: int) -> list[Instrument]:
        """The contracts a contract-details request matches (IB matches on what is given)."""
        out = []
        for i in self.instruments:
            if con_id and i.con_id != con_id:
                continue
            if not con_id and (i.symbol != symbol or (sec_type and i.sec_type != sec_type)
                               or (currency and i.currency != currency)
                               or (last_trade and not i.last_trade_date.startswith(last_trade))):
                continue
            out.append(i)
        return out

    def by_con_id(self, con_id: int) -> Instrument | None:
        return next((i for i in self.instruments if i.con_id == con_id), None)

    # ------------------------------------------------------------------ orders
    def place(self, order_id: int, client_id: int, instrument: Instrument, action: str, quantity: Decimal,
              order_type: str, limit_price: Decimal | None, tif: str, order_ref: str) -> Order:
        order = Order(order_id, client_id, next(self._perm), instrument, action, quantity, order_type, limit_price,
                      tif, order_ref)
        self.orders[order.perm_id] = order
        return order

    def order_by_id(self, client_id: int, order_id: int) -> Order | None:
        return next((o for o in self.orders.values() if o.client_id == client_id and o.order_id == order_id), None)

    def finish(self, order: Order, status: str) -> None:
        order.status = status
        order.completed_ts = self.now

    # ------------------------------------------------------------------ market
    def on_bar(self, bar: Bar5) -> list[tuple[Order, Execution]]:
        fills = []
        for order in [o for o in self.orders.values() if o.is_open and o.instrument.con_id == bar.con_id]:
            fill = self._match(order, bar)
            if fill is not None:
                fills.append((order, fill))
        self.history.setdefault(bar.con_id, []).append(bar)
        self.now = max(self.now, bar.ts_open + 5)
        return fills

    def _match(self, order: Order, bar: Bar5) -> Execution | None:
        if order.order_type == "MKT":
            price: Decimal | None = bar.open
        else:
            assert order.limit_price is not None
            if order.action == "BUY":
                price = min(bar.open, order.limit_price) if bar.low <= order.limit_price else None
            else:
                price = max(bar.open, order.limit_price) if bar.high >= order.limit_price else None
        if price is None:
            return None
        qty = order.remaining
        if self.max_fill_qty_per_bar is not None:
            qty = min(qty, self.max_fill_qty_per_bar)
        qty, self.overfill_qty = qty + self.overfill_qty, Decimal(0)
        return self._fill(order, qty, price, bar.ts_open)

    def _fill(self, order: Order, qty: Decimal, price: Decimal, ts: int) -> Execution:
        signed = qty if order.action == "BUY" else -qty
        commission = ib_commission(order.instrument, qty, price)
        multiplier = Decimal(order.instrument.multiplier or 1)
        self.cash -= signed * price * multiplier + commission
        self._book(order.instrument.con_id, signed, price)
        order.filled += qty
        order.notional += qty * price
        order.last_price = price
        if order.remaining <= 0:  # below zero only under the overfill fault
            self.finish(order, "Filled")
        seq = next(self._exec)
        fields = ExecutionFields(
            exec_id=f"0000e0d5.{order.perm_id:08x}.{seq:02d}.01", order_id=order.order_id, client_id=order.client_id,
            perm_id=order.perm_id, time=fmt_time(ts), account=ACCOUNT, side="BOT" if order.action == "BUY" else "SLD",
            shares=qty, price=price, cum_qty=order.filled, avg_price=order.avg_price, order_ref=order.order_ref,
            commission=commission, currency=self.currency)
        execution = Execution(fields, order.instrument, ts)
        self.executions.append(execution)
        return execution

    def _book(self, con_id: int, signed: Decimal, price: Decimal) -> None:
        old, avg = self.positions.get(con_id, (Decimal(0), Decimal(0)))
        new = old + signed
        if new == 0:
            self.positions.pop(con_id, None)
            return
        if old == 0 or (old > 0) == (signed > 0):
            avg = price if old == 0 else _DIV.divide(abs(old) * avg + abs(signed) * price, abs(new))
        elif (old > 0) != (new > 0):
            avg = price
        self.positions[con_id] = (new, avg)

    def bars(self, con_id: int, start: int, end: int, seconds: int) -> list[Bar5]:
        """History aggregated to ``seconds`` buckets (aligned to the epoch) opening in ``[start, end)``."""
        out: list[Bar5] = []
        for bar in self.history.get(con_id, []):
            bucket = bar.ts_open - bar.ts_open % seconds
            if not start <= bucket < end:
                continue
            if out and out[-1].ts_open == bucket:
                agg = out[-1]
                agg.high, agg.low = max(agg.high, bar.high), min(agg.low, bar.low)
                agg.close, agg.volume = bar.close, agg.volume + bar.volume
            else:
                out.append(Bar5(con_id, bucket, bar.open, bar.high, bar.low, bar.close, bar.volume))
        return out

    def market_value(self) -> Decimal:
        total = Decimal(0)
        for con_id, (qty, avg) in self.positions.items():
            series = self.history.get(con_id)
            last = series[-1].close if series else avg
            instrument = self.by_con_id(con_id)
            multiplier = instrument.multiplier if instrument is not None and instrument.multiplier else 1
            total += qty * last * Decimal(multiplier)
        return total


@dataclass
class Records:
    """What the fake received, for the tests to check afterwards."""

    order_refs: list[str] = field(default_factory=list)  # every placeOrder's orderRef, in arrival order
    messages: list[tuple[int, float]] = field(default_factory=list)  # (message id, loop time) of each request
    order_arrivals_ns: list[int] = field(default_factory=list)  # time.monotonic_ns() of each placeOrder's arrival
    bar_writes_ns: list[tuple[int, int]] = field(default_factory=list)  # (ts_open, monotonic ns) of each bar sent
    history_requests: list[dict[str, str]] = field(default_factory=list)  # end, duration, bar_size, what_to_show
    connections: int = 0
    client_ids: list[int] = field(default_factory=list)

    def duplicate_order_refs(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for ref in self.order_refs:
            counts[ref] = counts.get(ref, 0) + 1
        return {ref: n for ref, n in counts.items() if n > 1}
