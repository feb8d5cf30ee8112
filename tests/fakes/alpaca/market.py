"""The fake Alpaca's venue: account, positions, orders and the matching engine that fills them against bars.

Everything here is plain synchronous state so that a test can read it directly and so that the REST handlers
and the websockets never disagree: both render the same objects. Money is ``Decimal`` throughout (prices
and quantities arrive as strings or numbers and are converted through ``str`` so ``0.1`` stays ``0.1``);
the only inexact step is a division (average entry price, average fill price), done in a 34-digit context.

The market is driven by the bars the test publishes. Alpaca stamps a minute bar with its OPEN time, and
the bar for ``t`` is published shortly after ``t + 1 min``; so the fake's market time after publishing the
bar for ``t`` is ``t + 1 min``. A market order fills at the open of the next bar published after it arrived
(stamped with that bar's open time, the instant the price was traded); a limit buy fills when a bar's low
reaches the limit (at the open if the bar opened through it, else at the limit), a limit sell when the high
does. A per-order or global cap on the quantity filled per bar produces partial fills. Commission is zero
(Alpaca stocks are commission-free).
"""

from __future__ import annotations

import bisect
import decimal
import itertools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

ONE_MINUTE = timedelta(minutes=1)
_DIV = decimal.Context(prec=34)
_ASSET_NAMESPACE = uuid.UUID("5f0c6f1e-4b7a-4f55-9a7e-2d2f7d3f0a11")

OPEN_STATUSES = frozenset({"new", "accepted", "partially_filled", "pending_new", "accepted_for_bidding",
                           "pending_cancel", "pending_replace", "held", "calculated", "stopped", "suspended"})


def to_decimal(value: object) -> Decimal:
    """Decimal from a wire or test value; floats go through ``str`` so that ``101.1`` is ``101.1``."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value))


def is_crypto(symbol: str) -> bool:
    """Alpaca spells crypto pairs with a slash (``BTC/USD``); everything else here is a US equity."""
    return "/" in symbol


def asset_id(symbol: str) -> str:
    """A stable asset id per symbol, as Alpaca's are stable."""
    return str(uuid.uuid5(_ASSET_NAMESPACE, symbol))


class OrderError(Exception):
    """A request the venue refuses: rendered as Alpaca's ``{"code", "message"}`` body with ``status``."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Bar:
    """One bar of the fake's market; ``ts_open`` is the bar's OPEN time (Alpaca's convention), UTC."""

    symbol: str
    ts_open: datetime
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: Decimal
    trade_count: int
    vwap: Decimal
    timeframe: timedelta = ONE_MINUTE

    @classmethod
    def make(cls, symbol: str, ts_open: datetime, o: object, h: object, low: object, c: object, v: object = 100,
             *, trade_count: int | None = None, vwap: object | None = None,
             timeframe: timedelta = ONE_MINUTE) -> Bar:
        if ts_open.tzinfo is None:
            raise ValueError("bar timestamps must be timezone-aware (Alpaca's are UTC)")
        o_, h_, l_, c_ = (to_decimal(x) for x in (o, h, low, c))
        if not (l_ <= min(o_, c_) and h_ >= max(o_, c_)):
            raise ValueError(f"inconsistent bar {symbol} {ts_open}: o={o_} h={h_} l={l_} c={c_}")
        vw = to_decimal(vwap) if vwap is not None else _DIV.divide(o_ + h_ + l_ + c_, Decimal(4))
        return cls(symbol, ts_open.astimezone(UTC), o_, h_, l_, c_, to_decimal(v),
                   trade_count if trade_count is not None else 1, vw, timeframe)


@dataclass
class Order:
    """An order as the venue holds it; rendered to Alpaca's order JSON by ``wire.order_json``."""

    id: str
    client_order_id: str
    symbol: str
    side: str  # buy | sell
    type: str  # market | limit
    qty: Decimal
    time_in_force: str
    limit_price: Decimal | None
    created_at: datetime
    status: str = "accepted"
    extended_hours: bool = False
    updated_at: datetime | None = None
    submitted_at: datetime | None = None
    filled_at: datetime | None = None
    canceled_at: datetime | None = None
    expired_at: datetime | None = None
    failed_at: datetime | None = None
    filled_qty: Decimal = Decimal(0)
    filled_notional: Decimal = Decimal(0)  # sum of qty * price over the fills, exact
    max_fill_per_bar: Decimal | None = None

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def remaining(self) -> Decimal:
        return self.qty - self.filled_qty

    @property
    def filled_avg_price(self) -> Decimal | None:
        return _DIV.divide(self.filled_notional, self.filled_qty) if self.filled_qty else None

    @property
    def asset_class(self) -> str:
        return "crypto" if is_crypto(self.symbol) else "us_equity"


@dataclass
class Position:
    symbol: str
    qty: Decimal  # signed: negative is short
    avg_entry_price: Decimal

    @property
    def cost_basis(self) -> Decimal:
        return self.qty * self.avg_entry_price


@dataclass(frozen=True)
class Execution:
    """One fill (or partial fill) of an order: what the trade-updates stream reports and REST sums up."""

    execution_id: str
    order_id: str
    client_order_id: str
    symbol: str
    side: str
    qty: Decimal
    price: Decimal
    timestamp: datetime
    position_qty: Decimal


@dataclass(frozen=True)
class TradeEvent:
    """One trade update: the event name, a snapshot of the order at that moment and, for fills, the fill."""

    event: str  # new | partial_fill | fill | canceled | rejected | expired
    order: Order
    timestamp: datetime
    execution: Execution | None = None


@dataclass
class Market:
    """Account, orders, positions and bar history; every change returns the trade events it causes."""

    cash: Decimal = Decimal(100_000)
    start_time: datetime = field(default_factory=lambda: datetime.now(UTC))
    max_fill_qty_per_bar: Decimal | None = None
    check_buying_power: bool = True

    def __post_init__(self) -> None:
        self.initial_cash = self.cash
        self.orders: dict[str, Order] = {}
        self.by_client_id: dict[str, Order] = {}
        self.positions: dict[str, Position] = {}
        self.executions: list[Execution] = []
        self.history: dict[str, list[Bar]] = {}
        self.last_price: dict[str, Decimal] = {}
        self.per_order_fill_cap: dict[str, Decimal] = {}  # by client order id, set before or after submit
        self._time: datetime | None = None
        self._exec_seq = itertools.count(1)

    # ------------------------------------------------------------------ time
    def now(self) -> datetime:
        """Market time: the close of the latest published bar (when it became known), else ``start_time``."""
        return self._time or self.start_time

    def set_time(self, when: datetime) -> None:
        self._time = when.astimezone(UTC)

    # ------------------------------------------------------------------ bars
    def add_history(self, bars: Iterable[Bar]) -> None:
        """Store bars for the historical API only (no fills, no market time change): warm-up and backfill data."""
        for bar in bars:
            series = self.history.setdefault(bar.symbol, [])
            keys = [b.ts_open for b in series] if series and series[-1].ts_open >= bar.ts_open else None
            if keys is None:
                series.append(bar)
                continue
            i = bisect.bisect_left(keys, bar.ts_open)
            if i < len(series) and series[i].ts_open == bar.ts_open:
                series[i] = bar  # a corrected bar replaces the old one, as Alpaca's history would
            else:
                series.insert(i, bar)

    def on_bar(self, bar: Bar) -> list[TradeEvent]:
        """A bar is traded: fill what it crosses (at its open instant), then it becomes history and last price."""
        events: list[TradeEvent] = []
        for order in [o for o in self.orders.values() if o.is_open and o.symbol == bar.symbol]:
            events += self._match(order, bar)
        self.add_history([bar])
        self.last_price[bar.symbol] = bar.close
        close_time = bar.ts_open + bar.timeframe
        if self._time is None or close_time > self._time:
            self._time = close_time
        return events

    def _match(self, order: Order, bar: Bar) -> list[TradeEvent]:
        if order.type == "market":
            price: Decimal | None = bar.open
        else:
            assert order.limit_price is not None
            if order.side == "buy":
                price = min(bar.open, order.limit_price) if bar.low <= order.limit_price else None
            else:
                price = max(bar.open, order.limit_price) if bar.high >= order.limit_price else None
        events: list[TradeEvent] = []
        if price is not None:
            qty = order.remaining
            cap = self.per_order_fill_cap.get(order.client_order_id, self.max_fill_qty_per_bar)
            if cap is not None:
                qty = min(qty, cap)
            if order.time_in_force == "fok" and qty < order.remaining:
                qty = Decimal(0)  # fill or kill: all of it from this bar or nothing
            if qty > 0:
                events.append(self._fill(order, qty, price, bar.ts_open))
        if order.is_open and order.time_in_force in ("ioc", "fok"):
            events.append(self._finish(order, "canceled", bar.ts_open))
        return events

    # ------------------------------------------------------------------ fills and positions
    def _fill(self, order: Order, qty: Decimal, price: Decimal, when: datetime) -> TradeEvent:
        signed = qty if order.side == "buy" else -qty
        self.cash -= signed * price
        position_qty = self._book(order.symbol, signed, price)
        order.filled_qty += qty
        order.filled_notional += qty * price
        order.updated_at = when
        if order.remaining == 0:
            order.status, order.filled_at, event = "filled", when, "fill"
        else:
            order.status, event = "partially_filled", "partial_fill"
        execution = Execution(str(uuid.uuid4()), order.id, order.client_order_id, order.symbol, order.side,
                              qty, price, when, position_qty)
        self.executions.append(execution)
        return TradeEvent(event, replace(order), when, execution)

    def _book(self, symbol: str, signed: Decimal, price: Decimal) -> Decimal:
        """Apply a signed fill to the position; the average entry moves only when exposure grows."""
        pos = self.positions.get(symbol)
        old = pos.qty if pos else Decimal(0)
        new = old + signed
        if new == 0:
            self.positions.pop(symbol, None)
            return new
        if old == 0 or (old > 0) == (signed > 0):  # opening or adding
            avg = price if old == 0 else _DIV.divide(abs(old) * pos.avg_entry_price + abs(signed) * price,  # type: ignore[union-attr]
                                                     abs(new))
        elif (old > 0) == (new > 0):  # reducing: the entry price of what is left is unchanged
            avg = pos.avg_entry_price  # type: ignore[union-attr]
        else:  # flipped through zero: the remainder was opened at this price
            avg = price
        self.positions[symbol] = Position(symbol, new, avg)
        return new

    # ------------------------------------------------------------------ order life cycle
    def submit(self, *, symbol: str, qty: object, side: str, type: str, time_in_force: str,
               client_order_id: str | None, limit_price: object | None = None,
               extended_hours: bool = False) -> tuple[Order, list[TradeEvent]]:
        """Validate and accept an order the way Alpaca's POST /v2/orders does; returns it and its "new" event."""
        if not symbol:
            raise OrderError(422, 40010000, "symbol is required")
        if side not in ("buy", "sell"):
            raise OrderError(422, 40010000, f"invalid side: {side}")
        if type not in ("market", "limit"):
            raise OrderError(422, 40010000, f"order type {type!r} is not supported by the fake")
        if time_in_force not in ("day", "gtc", "ioc", "fok", "opg", "cls"):
            raise OrderError(422, 40010000, f"invalid time_in_force: {time_in_force}")
        if is_crypto(symbol) and time_in_force not in ("gtc", "ioc"):
            raise OrderError(422, 40010000, "invalid crypto time_in_force")  # crypto: gtc or ioc only
        try:
            qty_d = to_decimal(qty)
        except (decimal.InvalidOperation, TypeError):
            raise OrderError(422, 40010000, "qty must be a number") from None
        if qty is None or not qty_d.is_finite() or qty_d <= 0:
            raise OrderError(422, 40010000, "qty must be > 0")
        limit_d = None
        if type == "limit":
            if limit_price is None:
                raise OrderError(422, 40010000, "limit_price is required for limit orders")
            limit_d = to_decimal(limit_price)
            if limit_d <= 0:
                raise OrderError(422, 40010000, "limit_price must be > 0")
        cid = client_order_id or str(uuid.uuid4())
        if len(cid) > 128:
            raise OrderError(422, 40010000, "client_order_id must be no more than 128 characters")
        if cid in self.by_client_id:
            raise OrderError(422, 40010001, "client_order_id must be unique")
        if self.check_buying_power and side == "buy":
            ref = limit_d if limit_d is not None else self.last_price.get(symbol)
            if ref is not None and qty_d * ref > self.buying_power():
                raise OrderError(403, 40310000, "insufficient buying power")
        now = self.now()
        order = Order(str(uuid.uuid4()), cid, symbol, side, type, qty_d.normalize(), time_in_force, limit_d,
                      created_at=now, updated_at=now, submitted_at=now, extended_hours=extended_hours)
        self.orders[order.id] = order
        self.by_client_id[cid] = order
        accepted = replace(order)
        order.status = "new"
        return accepted, [TradeEvent("new", replace(order), now)]

    def cancel(self, order_id: str) -> list[TradeEvent]:
        order = self.orders.get(order_id)
        if order is None:
            raise OrderError(404, 40410000, "order not found")
        if not order.is_open:
            raise OrderError(422, 42210000, f'order is already in "{order.status}" state')
        return [self._finish(order, "canceled", self.now())]

    def reject(self, order: Order) -> list[TradeEvent]:
        """The venue rejects an accepted order after the fact (the asynchronous rejection path)."""
        return [self._finish(order, "rejected", self.now())]

    def expire_day_orders(self) -> list[TradeEvent]:
        """The session ends: open day (and opg/cls) orders expire; gtc orders stay."""
        now = self.now()
        return [self._finish(o, "expired", now) for o in list(self.orders.values())
                if o.is_open and o.time_in_force in ("day", "opg", "cls")]

    def _finish(self, order: Order, status: str, when: datetime) -> TradeEvent:
        order.status = status
        order.updated_at = when
        if status == "canceled":
            order.canceled_at = when
        elif status == "expired":
            order.expired_at = when
        elif status == "rejected":
            order.failed_at = when
        return TradeEvent(status, replace(order), when)

    # ------------------------------------------------------------------ account figures
    def reserved_for_buys(self) -> Decimal:
        total = Decimal(0)
        for o in self.orders.values():
            if o.is_open and o.side == "buy":
                ref = o.limit_price if o.limit_price is not None else self.last_price.get(o.symbol, Decimal(0))
                total += o.remaining * ref
        return total

    def buying_power(self) -> Decimal:
        """A cash account's buying power: cash less what open buy orders may spend (never negative)."""
        return max(Decimal(0), self.cash - self.reserved_for_buys())

    def market_value(self, side: str) -> Decimal:
        total = Decimal(0)
        for p in self.positions.values():
            if (p.qty > 0) == (side == "long"):
                total += p.qty * self.last_price.get(p.symbol, p.avg_entry_price)
        return total

    def equity(self) -> Decimal:
        return self.cash + self.market_value("long") + self.market_value("short")
