"""Order manager: ids, the journal-before-send rule, the order state machine.

Every order gets a client order id that is unique across restarts (a per-
database prefix and a sequence number journaled with the order), is committed
to SQLite in state NEW *before* the broker sees it, and then follows the
validated transitions below. A submit whose outcome is unknown is never sent
again: the manager asks the broker for the order by its client id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import structlog

from brokers.base import ZERO, Broker, Fill, OrderRequest, OrderStatus, OrderUpdate, Side
from brokers.errors import BrokerError, OrderRejected, OrderStateError, UnknownOrderOutcome
from daemon.store import Store

log = structlog.get_logger(__name__)

S = OrderStatus
_TRANSITIONS: dict[OrderStatus, frozenset[OrderStatus]] = {
    S.NEW: frozenset({S.SUBMITTED, S.REJECTED, S.UNKNOWN}),
    S.SUBMITTED: frozenset(
        {S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.REJECTED, S.EXPIRED, S.UNKNOWN}
    ),
    S.ACCEPTED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.EXPIRED}),
    S.PARTIALLY_FILLED: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.EXPIRED}),
    S.CANCEL_PENDING: frozenset({S.PARTIALLY_FILLED, S.FILLED, S.CANCELLED, S.EXPIRED}),
    S.UNKNOWN: frozenset(
        {S.ACCEPTED, S.PARTIALLY_FILLED, S.FILLED, S.CANCEL_PENDING, S.CANCELLED, S.REJECTED, S.EXPIRED}
    ),
}


def check_transition(current: OrderStatus, new: OrderStatus) -> None:
    """Raise ``OrderStateError`` unless ``current -> new`` is a legal order transition."""
    if new not in _TRANSITIONS.get(current, frozenset()):
        raise OrderStateError(f"order cannot go from {current} to {new}")


@dataclass(slots=True)
class ManagedOrder:
    client_order_id: str
    request: OrderRequest
    status: OrderStatus
    created_ts: int
    decision_id: int | None = None
    broker_order_id: str | None = None
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None

    @property
    def remaining(self) -> Decimal:
        return self.request.quantity - self.filled_quantity

    @property
    def signed_remaining(self) -> Decimal:
        return self.remaining if self.request.side.sign > 0 else -self.remaining


FillHandler = Callable[[Fill, ManagedOrder], Awaitable[None]]
AnomalyHandler = Callable[[str, str, ManagedOrder | None], Awaitable[None]]


class OrderManager:
    """Owns the working orders of one daemon; the only code that calls ``broker.submit``."""

    def __init__(
        self,
        store: Store,
        broker: Broker,
        *,
        on_fill: FillHandler,
        on_anomaly: AnomalyHandler,
        sequence: int = 0,
        submit_timeout: float = 10.0,
    ) -> None:
        self._store = store
        self._broker = broker
        self._on_fill = on_fill
        self._on_anomaly = on_anomaly
        self._sequence = sequence
        self._prefix = f"tc{store.instance_id}"
        self._orders: dict[str, ManagedOrder] = {}
        self._recent: dict[str, ManagedOrder] = {}
        self._seen_fills: set[str] = set()
        self._submit_timeout = submit_timeout
        self.counts = {"orders": 0, "rejected": 0, "fills": 0, "duplicate_fills": 0, "unknown_updates": 0}

    @classmethod
    async def create(cls, store: Store, broker: Broker, **kwargs: object) -> OrderManager:
        manager = cls(store, broker, sequence=await store.order_sequence(), **kwargs)  # type: ignore[arg-type]
        for row in await store.open_orders():
            manager._orders[row.client_order_id] = ManagedOrder(
                row.client_order_id,
                OrderRequest(row.symbol, Side(row.side), row.quantity, reason=row.reason),
                row.status,
                row.created_ts,
                broker_order_id=row.broker_order_id,
                filled_quantity=row.filled_quantity,
                average_price=row.average_price,
            )
        return manager

    # ------------------------------------------------------------------ queries
    @property
    def sequence(self) -> int:
        return self._sequence

    def working(self, symbol: str | None = None) -> list[ManagedOrder]:
        orders = self._orders.values()
        return [o for o in orders if not o.status.is_terminal and (symbol is None or o.request.symbol == symbol)]

    def pending_quantity(self, symbol: str) -> Decimal:
        """Signed quantity still to be filled on working orders for ``symbol``."""
        total = ZERO
        for order in self._orders.values():
            if order.request.symbol == symbol and not order.status.is_terminal:
                total += order.signed_remaining
        return total

    def get(self, client_order_id: str) -> ManagedOrder | None:
        return self._orders.get(client_order_id)

    # ------------------------------------------------------------------ submit
    def _next_id(self) -> tuple[str, int]:
        self._sequence += 1
        return f"{self._prefix}-{self._sequence:08d}", self._sequence

    async def submit(self, request: OrderRequest, *, ts: int, decision_id: int | None = None) -> ManagedOrder:
        """Journal, then send. Returns the order in whatever state the broker left it."""
        client_order_id, sequence = self._next_id()
        order = ManagedOrder(client_order_id, request, S.NEW, ts, decision_id)
        await self._store.journal_order(client_order_id, sequence, request, decision_id=decision_id, ts=ts)
        self._orders[client_order_id] = order
        self.counts["orders"] += 1
        try:
            ack = await asyncio.wait_for(self._broker.submit(client_order_id, request), self._submit_timeout)
        except OrderRejected as exc:
            self.counts["rejected"] += 1
            await self._move(order, S.REJECTED, ts, message=str(exc))
            log.warning("order rejected", client_order_id=client_order_id, reason=str(exc))
            return order
        except (TimeoutError, UnknownOrderOutcome, BrokerError, OSError) as exc:
            await self._move(order, S.UNKNOWN, ts, message=f"submit outcome unknown: {exc!r}")
            log.error("submit outcome unknown; asking the broker", client_order_id=client_order_id, error=repr(exc))
            await self.resolve_unknown(order, ts)
            return order
        await self._move(order, S.SUBMITTED, ts, message="sent")
        await self.apply(ack)
        return order

    async def resolve_unknown(self, order: ManagedOrder, ts: int) -> None:
        """Ask the broker what became of an order instead of sending it again."""
        try:
            report = await self._broker.get_order(order.client_order_id)
        except (BrokerError, OSError) as exc:
            log.error("order lookup failed; order stays unknown", client_order_id=order.client_order_id, error=str(exc))
            return
        if report is None:
            await self._move(order, S.REJECTED, ts, message="broker has no order with this client id")
            return
        await self.apply(report)

    async def cancel(self, client_order_id: str, ts: int) -> None:
        order = self._orders.get(client_order_id)
        if order is None or order.status.is_terminal:
            return
        if order.status is not S.CANCEL_PENDING:
            await self._move(order, S.CANCEL_PENDING, ts, message="cancel requested")
        update = await self._broker.cancel(client_order_id)
        await self.apply(update)

    # ------------------------------------------------------------------ updates
    async def apply(self, update: OrderUpdate) -> None:
        """Apply one broker report: book a new fill once, then move the order's state."""
        order = self._orders.get(update.client_order_id) or self._recent.get(update.client_order_id)
        if order is None:
            self.counts["unknown_updates"] += 1
            log.warning("update for an order this daemon does not know", client_order_id=update.client_order_id)
            await self._on_anomaly("unknown_order", f"update for unknown order {update.client_order_id}", None)
            return
        fill = update.fill
        booked = False
        if fill is not None:
            if fill.fill_id in self._seen_fills or await self._store.has_fill(fill.fill_id):
                self.counts["duplicate_fills"] += 1
                log.info("duplicate fill ignored", fill_id=fill.fill_id)
            else:
                self._seen_fills.add(fill.fill_id)
                booked = True
                order.filled_quantity += fill.quantity
                total = order.filled_quantity
                previous_avg = order.average_price or ZERO
                order.average_price = (previous_avg * (total - fill.quantity) + fill.price * fill.quantity) / total
                self.counts["fills"] += 1
                await self._on_fill(fill, order)
                if order.filled_quantity > order.request.quantity:
                    await self._on_anomaly(
                        "overfill",
                        f"{order.client_order_id}: filled {order.filled_quantity} of {order.request.quantity}",
                        order,
                    )
        target = update.status
        if target is order.status and target is not S.PARTIALLY_FILLED:
            if update.broker_order_id and not order.broker_order_id:
                order.broker_order_id = update.broker_order_id
            return
        if target is S.PARTIALLY_FILLED and order.status is S.PARTIALLY_FILLED and not booked:
            return
        try:
            check_transition(order.status, target)
        except OrderStateError as exc:
            log.warning("order update ignored", client_order_id=order.client_order_id, error=str(exc))
            return
        if update.broker_order_id:
            order.broker_order_id = update.broker_order_id
        await self._move(order, target, update.ts, message=update.message)

    async def _move(self, order: ManagedOrder, to: OrderStatus, ts: int, *, message: str = "") -> None:
        previous = order.status
        check_transition(previous, to)
        order.status = to
        await self._store.update_order(
            order.client_order_id,
            from_status=previous,
            to_status=to,
            ts=ts,
            broker_order_id=order.broker_order_id,
            filled_quantity=order.filled_quantity,
            average_price=order.average_price,
            message=message,
        )
        if to.is_terminal:
            # keep terminal orders out of the hot dict once nothing can change them
            self._orders.pop(order.client_order_id, None)
            self._terminal_cache(order)

    def _terminal_cache(self, order: ManagedOrder) -> None:
        """Late updates for a just-finished order (a fill after cancel) must still find it."""
        self._recent[order.client_order_id] = order
        if len(self._recent) > 1024:
            self._recent.pop(next(iter(self._recent)))
