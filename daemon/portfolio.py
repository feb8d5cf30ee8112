"""Positions, cash and P&L, counted from actual fills.

Positions are ``brokers.accounting.FifoPosition``: FIFO by lot with ``Decimal``
arithmetic, the rule the training environment books by too. This module adds
the account around them (cash, fees, realized P&L), the round trips for the
journal, and marking to market (unrealized P&L, equity), which is float: an
estimate from the last bar, recomputed every bar, and never booked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

from brokers.accounting import FifoPosition
from brokers.base import ZERO, Fill, Position, Side
from strategies.base import FLAT, PositionView

_DAY = 86_400
_BUY = Side.BUY  # bound once: in Python 3.11 ``Side.BUY`` is a descriptor lookup (~150 ns) on every use


@dataclass(frozen=True, slots=True)
class ClosedTrade:
    """One round trip: from flat to flat (a flip closes one trade and opens the next)."""

    symbol: str
    direction: int
    quantity: Decimal
    entry_ts: int
    exit_ts: int
    entry_price: Decimal
    exit_price: Decimal
    fees: Decimal
    pnl: Decimal  # realized price P&L minus every fee paid in the round trip
    entry_reason: str
    exit_reason: str

    def as_row(self) -> tuple[object, ...]:
        return (
            self.symbol,
            self.direction,
            str(self.quantity),
            self.entry_ts,
            self.exit_ts,
            str(self.entry_price),
            str(self.exit_price),
            str(self.fees),
            str(self.pnl),
            self.entry_reason,
            self.exit_reason,
        )


@dataclass(frozen=True, slots=True)
class FillEffect:
    realized: Decimal  # price P&L realized by this fill, before fees
    closed: tuple[ClosedTrade, ...] = ()


@dataclass(slots=True)
class _Holding(FifoPosition):
    """One symbol's position, its last mark, and the round trip it is in."""

    symbol: str = ""
    last_price: float = math.nan
    # the current round trip
    entry_ts: int = 0
    entry_quantity: Decimal = ZERO
    entry_cost: Decimal = ZERO
    exit_quantity: Decimal = ZERO
    exit_value: Decimal = ZERO
    trip_realized: Decimal = ZERO
    trip_fees: Decimal = ZERO
    entry_reason: str = ""

    def unrealized(self) -> float:
        return self.unrealized_at(self.last_price)


class Portfolio:
    """The daemon's own books for one account.

    Equity and unrealized P&L are asked for several times per bar (the
    sizer, the risk context, the risk hooks, the snapshot) but change only
    when a price is marked or a fill, cash or adopted position is booked:
    ``mark`` computes both in one pass and every change invalidates them, so
    ``equity()`` and ``unrealized()`` are usually cached reads of the very
    values the full sums would give.
    """

    def __init__(self, starting_cash: Decimal, currency: str = "USD") -> None:
        self.currency = currency
        self.starting_cash = starting_cash
        self.cash = starting_cash
        self.realized = ZERO  # price P&L realized, before fees
        self.fees = ZERO
        self._holdings: dict[str, _Holding] = {}
        self._cash_float = float(starting_cash)
        self.cash_text = str(starting_cash)
        self.realized_net_text = "0"
        self._day = -1
        self.day_start_equity = float(starting_cash)
        self.peak_equity = float(starting_cash)
        self.fill_count = 0
        # cached marks (see the class docstring); None = changed since last computed
        self._equity: float | None = None
        self._unrealized: float | None = None

    # ------------------------------------------------------------------ booking
    def apply_fill(self, fill: Fill, reason: str = "") -> FillEffect:
        """Book one fill. A fill that crosses zero closes one round trip and opens another."""
        holding = self._holding(fill.symbol)
        price, fee = fill.price, fill.fee
        signed = fill.quantity if fill.side is _BUY else -fill.quantity  # fill.signed_quantity
        size = abs(signed)
        self.cash -= signed * price + fee
        self._cash_float = float(self.cash)
        self._equity = self._unrealized = None
        self.fees += fee
        self.fill_count += 1

        booked = holding.book(signed, price)
        closing, opening = booked.closed, booked.opened
        # A flip splits its fee between the trip it ends and the one it starts;
        # the two shares add up to the fee exactly.
        close_fee = fee if not opening else (fee * closing / size if closing else ZERO)
        open_fee = fee - close_fee

        closed: tuple[ClosedTrade, ...] = ()
        if closing:
            holding.trip_realized += booked.realized
            holding.exit_quantity += closing
            holding.exit_value += closing * price
            holding.trip_fees += close_fee
            if booked.flat_between:
                closed = (self._close_trip(holding, fill.ts, booked.direction, reason),)
        if opening:
            if booked.flat_between:
                holding.entry_ts = fill.ts
                holding.entry_reason = reason
            holding.entry_quantity += opening
            holding.entry_cost += opening * price
            holding.trip_fees += open_fee
        self.realized += booked.realized
        self.cash_text = str(self.cash)
        self.realized_net_text = str(self.realized - self.fees)
        return FillEffect(booked.realized, closed)

    def correct_fee(self, symbol: str, delta: Decimal) -> None:
        """A booked fill's fee changed by ``delta`` (completed by the venue): cash, fees and the open trip's fees.

        A trip that closed before the correction keeps the fees it closed with
        (its row is written); cash and the fee total carry the whole fee.
        """
        self.cash -= delta
        self._cash_float = float(self.cash)
        self._equity = self._unrealized = None
        self.fees += delta
        holding = self._holdings.get(symbol)
        if holding is not None and holding.quantity:
            holding.trip_fees += delta
        self.cash_text = str(self.cash)
        self.realized_net_text = str(self.realized - self.fees)

    @staticmethod
    def _close_trip(holding: _Holding, ts: int, direction: int, reason: str) -> ClosedTrade:
        trade = ClosedTrade(
            symbol=holding.symbol,
            direction=direction,
            quantity=holding.entry_quantity,
            entry_ts=holding.entry_ts,
            exit_ts=ts,
            entry_price=holding.entry_cost / holding.entry_quantity,
            exit_price=holding.exit_value / holding.exit_quantity,
            fees=holding.trip_fees,
            pnl=holding.trip_realized - holding.trip_fees,
            entry_reason=holding.entry_reason,
            exit_reason=reason,
        )
        holding.entry_quantity = holding.entry_cost = ZERO
        holding.exit_quantity = holding.exit_value = ZERO
        holding.trip_realized = holding.trip_fees = ZERO
        return trade

    def adopt_position(self, position: Position, ts: int) -> None:
        """Take a broker-reported position as our own (start-up with an existing account)."""
        holding = self._holding(position.symbol)
        holding.adopt(position.quantity, position.average_price)
        holding.entry_ts = ts
        holding.entry_quantity = abs(position.quantity)
        holding.entry_cost = abs(position.quantity) * position.average_price
        self._equity = self._unrealized = None

    def set_cash(self, cash: Decimal) -> None:
        self.cash = cash
        self._cash_float = float(cash)
        self.cash_text = str(cash)
        self._equity = self._unrealized = None

    # ------------------------------------------------------------------ marking
    def mark(self, symbol: str, price: float, ts: int) -> None:
        """Mark one symbol at a bar's close; rolls the trading day at UTC midnight."""
        holding = self._holdings.get(symbol)
        if holding is None:
            holding = self._holding(symbol)
        holding.last_price = price
        if holding.quantity:
            holding.mark(price)
        day = ts // _DAY
        equity = self._revalue()[0]
        if day != self._day:
            self._day = day
            self.day_start_equity = equity
        if equity > self.peak_equity:
            self.peak_equity = equity

    def drawdown(self) -> float | None:
        """How far equity is below its peak, 0..1 (None while there is no positive peak to measure from)."""
        peak = self.peak_equity
        return max(0.0, 1.0 - self.equity() / peak) if peak > 0 else None

    def equity(self) -> float:
        """Cash plus every marked position at its last price (float: an estimate, never booked)."""
        equity = self._equity
        return self._revalue()[0] if equity is None else equity

    def unrealized(self) -> float:
        """The sum of every holding's unrealized P&L at its last price."""
        unrealized = self._unrealized
        return self._revalue()[1] if unrealized is None else unrealized

    def _revalue(self) -> tuple[float, float]:
        """Recompute (and cache) equity and unrealized P&L in one pass over the holdings."""
        equity = self._cash_float
        unrealized = 0  # an int start, exactly like sum(): a book without holdings reports 0
        for holding in self._holdings.values():
            quantity = holding.quantity_float
            if quantity and holding.last_price == holding.last_price:  # skip NaN (never marked)
                equity += quantity * holding.last_price
            unrealized += holding.unrealized_at(holding.last_price)
        self._equity, self._unrealized = equity, unrealized
        return equity, unrealized

    def gross_exposure(self) -> float:
        return sum(
            abs(h.quantity_float) * h.last_price  # quantity_float is float(h.quantity), cached per fill
            for h in self._holdings.values()
            if h.quantity and not math.isnan(h.last_price)
        )

    # ------------------------------------------------------------------ views
    def quantity(self, symbol: str) -> Decimal:
        holding = self._holdings.get(symbol)
        return holding.quantity if holding else ZERO

    def last_price(self, symbol: str) -> float:
        holding = self._holdings.get(symbol)
        return holding.last_price if holding else math.nan

    def view(self, symbol: str) -> PositionView:
        holding = self._holdings.get(symbol)
        if holding is None or not holding.quantity:
            return FLAT
        # positional: built on every bar while a position is open, and keywords cost a third more
        return PositionView(holding.quantity, holding.average_float, holding.bars_held, holding.peak_unrealized)

    def positions(self) -> list[Position]:
        return [
            Position(h.symbol, h.quantity, h.average)
            for h in sorted(self._holdings.values(), key=lambda h: h.symbol)
            if h.quantity
        ]

    def position_rows(self) -> list[dict[str, object]]:
        rows = []
        for position in self.positions():
            holding = self._holdings[position.symbol]
            rows.append(
                {
                    "symbol": position.symbol,
                    "quantity": str(position.quantity),
                    "average_price": str(round(position.average_price, 8)),
                    "last_price": holding.last_price,
                    "unrealized_pnl": round(holding.unrealized(), 2),
                    "bars_held": holding.bars_held,
                }
            )
        return rows

    def _holding(self, symbol: str) -> _Holding:
        holding = self._holdings.get(symbol)
        if holding is None:
            holding = self._holdings[symbol] = _Holding(symbol=symbol)
        return holding
