"""The market vocabulary every tradectl package speaks, and the ``Broker`` protocol.

This module is the leaf of the dependency graph: nothing here imports from
``strategies``, ``risk`` or ``daemon``. Types are small slotted dataclasses
because one is created per bar or per order event on the hot path.

Conventions
-----------
* ``Bar.ts`` is the bar's CLOSE time in UTC epoch seconds. An int keeps the hot
  path cheap (no datetime per bar) and makes time-of-day arithmetic trivial.
* Money and quantities that are *counted* (orders, fills, positions, cash) are
  ``Decimal``; market data (bars) are floats because they are observed, not
  counted.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol, runtime_checkable

ZERO = Decimal(0)


class Side(enum.StrEnum):
    BUY = "buy"
    SELL = "sell"

    @property
    def sign(self) -> int:
        return 1 if self is Side.BUY else -1


class OrderType(enum.StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(enum.StrEnum):
    GTC = "gtc"
    DAY = "day"
    IOC = "ioc"


class OrderStatus(enum.StrEnum):
    """Order lifecycle. ``NEW`` means journaled locally but not yet sent."""

    NEW = "new"
    SUBMITTED = "submitted"
    ACCEPTED = "accepted"
    PARTIALLY_FILLED = "partially_filled"
    FILLED = "filled"
    CANCEL_PENDING = "cancel_pending"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    EXPIRED = "expired"
    UNKNOWN = "unknown"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL = frozenset(
    {OrderStatus.FILLED, OrderStatus.CANCELLED, OrderStatus.REJECTED, OrderStatus.EXPIRED}
)


def utc_datetime(ts: int | float) -> datetime:
    """Epoch seconds → aware UTC datetime (for display and storage only)."""
    return datetime.fromtimestamp(ts, tz=UTC)


@dataclass(frozen=True, slots=True)
class Bar:
    """One OHLCV bar, stamped at its close (UTC epoch seconds)."""

    symbol: str
    ts: int
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0

    @property
    def time(self) -> datetime:
        return utc_datetime(self.ts)


@dataclass(frozen=True, slots=True)
class OrderRequest:
    """What the daemon wants; the order manager adds the client order id."""

    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    time_in_force: TimeInForce = TimeInForce.GTC
    reason: str = ""

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is Side.BUY else -self.quantity


@dataclass(frozen=True, slots=True)
class Fill:
    """One execution, identified by the broker's own fill (execution) id."""

    fill_id: str
    client_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    price: Decimal
    fee: Decimal
    ts: int

    @property
    def signed_quantity(self) -> Decimal:
        return self.quantity if self.side is Side.BUY else -self.quantity


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """A broker's report about one order. ``fill`` is set when it reports an execution."""

    client_order_id: str
    status: OrderStatus
    ts: int
    broker_order_id: str | None = None
    symbol: str | None = None
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None
    fill: Fill | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class Position:
    symbol: str
    quantity: Decimal
    average_price: Decimal


@dataclass(frozen=True, slots=True)
class AccountSnapshot:
    cash: Decimal
    equity: Decimal
    currency: str = "USD"
    ts: int = 0


@runtime_checkable
class MarketData(Protocol):
    """A venue's market-data side: the live bar stream and the history behind it.

    ``bars`` yields close-stamped bars in the order the venue delivers them;
    a bad bar is still yielded (the daemon's bar guard rejects it with a
    reason, a feed never drops one silently). ``stop_bars`` ends the stream
    after the bar in hand, waking a consumer that is waiting for the next one.
    """

    def bars(self) -> AsyncIterator[Bar]: ...

    def stop_bars(self) -> None: ...

    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]: ...

    def feed_status(self) -> dict[str, Any]:
        """What ``/status`` shows about the stream (position, lag, connection): plain JSON values."""
        ...


@runtime_checkable
class Broker(MarketData, Protocol):
    """What the daemon needs from any venue, simulated or real: the only seam to the market.

    Order updates are delivered two ways: ``next_update`` for a task that waits
    on them, and ``drain_updates`` which returns whatever has already arrived.
    The pipeline drains before acting on each bar so that it never decides on
    a position that is stale by an already-received fill.

    ``now`` is the venue's clock in epoch seconds: the wall clock for a live
    venue, the close of the last delivered bar for a replay. Order timeouts
    and audits use it, so a replay of 2017 keeps 2017's time.
    """

    name: str

    async def connect(self) -> None: ...

    async def close(self) -> None: ...

    def now(self) -> int: ...

    async def next_update(self) -> OrderUpdate: ...

    def drain_updates(self) -> list[OrderUpdate]: ...

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate: ...

    async def cancel(self, client_order_id: str) -> OrderUpdate: ...

    async def get_order(self, client_order_id: str) -> OrderUpdate | None: ...

    async def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every execution of one order, oldest first (how a restarted daemon finds fills it never booked)."""
        ...

    async def open_orders(self) -> list[OrderUpdate]: ...

    async def positions(self) -> list[Position]: ...

    async def account(self) -> AccountSnapshot: ...


@dataclass(slots=True)
class UpdateInbox:
    """A small inbox that backs ``next_update``/``drain_updates`` for adapters.

    Unbounded on purpose: dropping an order update would lose a fill.
    """

    _items: deque[OrderUpdate] = field(default_factory=deque)
    _waiter: asyncio.Future[None] | None = None

    def put(self, update: OrderUpdate) -> None:
        self._items.append(update)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __len__(self) -> int:
        return len(self._items)

    def drain(self) -> list[OrderUpdate]:
        items = list(self._items)
        self._items.clear()
        return items

    async def get(self) -> OrderUpdate:
        while not self._items:
            waiter = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self._items.popleft()
