"""The order manager: ids, the journal-before-send rule, the order state machine, recovery of open orders.

Every order gets a client order id that is unique across restarts (a per-
database prefix and a sequence number journaled with the order), is committed
to SQLite in state NEW *before* the broker sees it, and then follows the
validated transitions below. Nothing here ever sends an order twice: when an
outcome is unknown (a submit timed out, an acknowledgement never came, the
daemon was killed) the manager asks the broker for the order by its client id
and takes the broker's answer.

Fills are booked exactly once, by broker fill id, whichever way they arrive:
the update stream, a lookup after a timeout, or recovery at start-up, which
asks the broker for every execution of every order the store still has open
(``fills_for``) because updates in flight when the process died are gone.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol, runtime_checkable

import structlog

from brokers.base import ZERO, Broker, Fill, OrderRequest, OrderStatus, OrderType, OrderUpdate, Side
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

# States in which the broker owes us an answer; ``check_timeouts`` asks for it.
_AWAITING_BROKER = frozenset({S.SUBMITTED, S.UNKNOWN, S.CANCEL_PENDING})
# Final states (``OrderStatus.is_terminal`` as a set: membership is cheaper than the property on the hot path).
_TERMINAL = frozenset(status for status in OrderStatus if status.is_terminal)
_NO_TRANSITIONS: frozenset[OrderStatus] = frozenset()

NEVER_SENT = "never sent (crash between journal and send)"


def check_transition(current: OrderStatus, new: OrderStatus) -> None:
    """Raise ``OrderStateError`` unless ``current -> new`` is a legal order transition."""
    if new not in _TRANSITIONS.get(current, _NO_TRANSITIONS):
        raise OrderStateError(f"order cannot go from {current} to {new}")


# finished orders kept in memory for late reports (a fill after a cancel); older ones are the store's
_RECENT_FINISHED = 256


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
    waiting_since: int | None = None  # when the order last started waiting for the broker (ack, cancel, lookup)
    lookups: int = 0  # broker lookups that found no such order
    rejection: str = ""  # the venue's reason when it refused the order at submit
    # fill ids booked (or being booked) for this order; older ones are the store's to know
    fill_ids: set[str] = field(default_factory=set)

    @property
    def remaining(self) -> Decimal:
        return self.request.quantity - self.filled_quantity

    @property
    def signed_remaining(self) -> Decimal:
        return self.remaining if self.request.side.sign > 0 else -self.remaining


@runtime_checkable
class FillSource(Protocol):
    """A broker that can list one order's executions: needed to recover fills whose updates were lost."""

    async def fills_for(self, client_order_id: str) -> list[Fill]: ...


@dataclass(slots=True)
class RecoveryReport:
    """What start-up recovery found. ``ok`` is False while any order's fate is still unknown: do not trade."""

    checked: int = 0
    never_sent: list[str] = field(default_factory=list)
    found_at_broker: list[str] = field(default_factory=list)
    fills_booked: int = 0
    unresolved: list[str] = field(default_factory=list)
    final: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.unresolved

    def as_dict(self) -> dict[str, object]:
        return {
            "checked": self.checked,
            "never_sent": list(self.never_sent),
            "found_at_broker": list(self.found_at_broker),
            "fills_booked": self.fills_booked,
            "unresolved": list(self.unresolved),
            "final": dict(self.final),
        }


FillHandler = Callable[[Fill, ManagedOrder], Awaitable[None]]
# (the fill with its corrected fee, the fee's change, the order): a venue whose fee arrives after the fill
FeeHandler = Callable[[Fill, Decimal, ManagedOrder], Awaitable[None]]
AnomalyHandler = Callable[[str, str, ManagedOrder | None], Awaitable[None]]


class OrderManager:
    """Owns the working orders of one daemon; the only code that calls ``broker.submit``.

    ``ack_timeout`` (seconds, in the caller's clock) is how long an order may
    wait in SUBMITTED, UNKNOWN or CANCEL_PENDING before ``check_timeouts``
    asks the broker about it. A broker that still has no record of an order
    after ``not_found_limit`` such lookups never received it: the order is
    marked REJECTED (never re-sent; the strategy decides again).
    """

    def __init__(
        self,
        store: Store,
        broker: Broker,
        *,
        on_fill: FillHandler,
        on_anomaly: AnomalyHandler,
        sequence: int = 0,
        submit_timeout: float = 10.0,
        ack_timeout: float = 30.0,
        not_found_limit: int = 3,
        on_fee: FeeHandler | None = None,
    ) -> None:
        self._store = store
        self._broker = broker
        self._on_fill = on_fill
        self._on_fee = on_fee
        self._on_anomaly = on_anomaly
        self._sequence = sequence
        self._prefix = f"tc{store.instance_id}"
        self._orders: dict[str, ManagedOrder] = {}
        self._recent: dict[str, ManagedOrder] = {}
        self._submit_timeout = submit_timeout
        self.ack_timeout = ack_timeout
        self.not_found_limit = max(1, not_found_limit)
        self.counts = {
            "orders": 0,
            "rejected": 0,
            "fills": 0,
            "duplicate_fills": 0,
            "unknown_updates": 0,
            "lookups": 0,
            "recovered_fills": 0,
            "malformed_updates": 0,
            "fee_corrections": 0,
        }
        self.rejections: Counter[str] = Counter()  # refused broker updates by reason code
        self.status_counts: Counter[OrderStatus] = Counter()  # orders that entered each status (metrics)

    @classmethod
    async def create(cls, store: Store, broker: Broker, **kwargs: object) -> OrderManager:
        """A manager holding every order the store has not seen finish, with fills counted from the store."""
        manager = cls(store, broker, sequence=await store.order_sequence(), **kwargs)  # type: ignore[arg-type]
        for row in await store.open_orders():
            request = await store.journaled_request(row.client_order_id)
            if request is None:
                request = OrderRequest(row.symbol, Side(row.side), row.quantity, reason=row.reason)
            order = ManagedOrder(
                row.client_order_id,
                request,
                row.status,
                row.created_ts,
                broker_order_id=row.broker_order_id,
                filled_quantity=row.filled_quantity,
                average_price=row.average_price,
                waiting_since=row.created_ts,
            )
            # The fills table, not the order row, is the truth: a kill between booking a fill and
            # updating its order leaves the row behind.
            booked, average = await store.filled_for_order(row.client_order_id)
            if booked:
                order.filled_quantity, order.average_price = booked, average
            manager._orders[row.client_order_id] = order
        return manager

    # ------------------------------------------------------------------ queries
    @property
    def sequence(self) -> int:
        return self._sequence

    def has_working(self) -> bool:
        """Any order not yet in a terminal state (cheap enough to ask on every bar)."""
        return any(not o.status.is_terminal for o in reversed(self._orders.values()))

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
        return self._orders.get(client_order_id) or self._recent.get(client_order_id)

    # ------------------------------------------------------------------ submit
    def _next_id(self) -> tuple[str, int]:
        self._sequence += 1
        return f"{self._prefix}-{self._sequence:08d}", self._sequence

    async def submit(self, request: OrderRequest, *, ts: int, decision_id: int | None = None) -> ManagedOrder:
        """Journal, then send once. Returns the order in whatever state the broker left it."""
        client_order_id, sequence = self._next_id()
        order = ManagedOrder(client_order_id, request, S.NEW, ts, decision_id)
        await self._store.journal_order(client_order_id, sequence, request, decision_id=decision_id, ts=ts)
        self._orders[client_order_id] = order
        self.counts["orders"] += 1
        try:
            ack = await self._send(client_order_id, request)
        except OrderRejected as exc:
            self.counts["rejected"] += 1
            order.rejection = str(exc)
            await self._move(order, S.REJECTED, ts, message=str(exc))
            log.warning("order rejected", client_order_id=client_order_id, reason=str(exc))
            return order
        except (TimeoutError, UnknownOrderOutcome, BrokerError, OSError) as exc:
            order.waiting_since = ts
            await self._move(order, S.UNKNOWN, ts, message=f"submit outcome unknown: {exc!r}")
            log.error("submit outcome unknown; asking the broker", client_order_id=client_order_id, error=repr(exc))
            await self.resolve_unknown(order, ts)
            return order
        order.waiting_since = ts
        await self._move(order, S.SUBMITTED, ts, message="sent")
        await self.apply(ack)
        return order

    async def _send(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        """``broker.submit``, once, under the submit deadline; a timeout means "unknown", never "resend"."""
        async with asyncio.timeout(self._submit_timeout):
            return await self._broker.submit(client_order_id, request)

    async def resolve_unknown(self, order: ManagedOrder, ts: int) -> None:
        """Ask the broker what became of an order instead of sending it again."""
        await self._lookup(order, ts)

    async def check_timeouts(self, now_ts: int) -> list[str]:
        """Look up every order that has waited ``ack_timeout`` for the broker; returns the ids asked about.

        Called periodically by the daemon. An acknowledgement, a cancel
        confirmation or a lookup answer that never came is the broker's to
        give: we ask for it, we never re-send.
        """
        asked = []
        for order in list(self._orders.values()):
            if order.status not in _AWAITING_BROKER:
                continue
            since = order.waiting_since if order.waiting_since is not None else order.created_ts
            if now_ts - since < self.ack_timeout:
                continue
            asked.append(order.client_order_id)
            log.warning(
                "no answer from the broker in time; asking for the order",
                client_order_id=order.client_order_id,
                status=order.status.value,
                waited=now_ts - since,
            )
            await self._lookup(order, now_ts)
        return asked

    async def recover(self, ts: int) -> RecoveryReport:
        """Settle every order a previous process left open, before anything new is sent.

        NEW orders were journaled but maybe never sent: the broker is asked; if
        it does not know the id the order is REJECTED (never sent now — the
        strategy will decide again). Every other open order is looked up and
        the broker's report applied, booking each of its fills that the store
        lacks exactly once.
        """
        report = RecoveryReport()
        for order in list(self._orders.values()):
            if order.status.is_terminal:
                continue
            report.checked += 1
            was_new = order.status is S.NEW
            booked = self.counts["recovered_fills"]
            resolved = await self._lookup(order, ts, recovering=True)
            report.fills_booked += self.counts["recovered_fills"] - booked
            if not resolved:
                report.unresolved.append(order.client_order_id)
            elif was_new and order.status is S.REJECTED:
                report.never_sent.append(order.client_order_id)
            elif was_new:
                report.found_at_broker.append(order.client_order_id)
            report.final[order.client_order_id] = order.status.value
        log.info("order recovery", **report.as_dict())
        return report

    # ------------------------------------------------------------------ cancel / replace
    async def cancel(self, client_order_id: str, ts: int) -> None:
        order = self._orders.get(client_order_id)
        if order is None or order.status.is_terminal:
            return
        if order.status is not S.CANCEL_PENDING:
            order.waiting_since = ts
            await self._move(order, S.CANCEL_PENDING, ts, message="cancel requested")
        try:
            update = await self._broker.cancel(client_order_id)
        except (BrokerError, OSError) as exc:
            # The cancel may or may not have arrived; the order stays CANCEL_PENDING and the broker is asked.
            log.error("cancel failed; asking the broker", client_order_id=client_order_id, error=repr(exc))
            await self._lookup(order, ts)
            return
        await self.apply(update)

    async def replace(
        self,
        client_order_id: str,
        *,
        ts: int,
        quantity: Decimal | None = None,
        limit_price: Decimal | None = None,
    ) -> ManagedOrder | None:
        """Cancel an order, then submit a new journaled order for what is still wanted.

        ``quantity`` is the new *total* of the order including what has already
        filled (FIX ``OrderQty`` semantics), so a fill racing the cancel is
        never bought twice. It may not exceed the original quantity: the
        governor approved that much; more needs a new order through the
        governor. The replacement is sent only once the cancel is confirmed
        (no two live orders for the same intent); otherwise None is returned
        and the caller may try again. None also when nothing is left to do.
        """
        order = self._orders.get(client_order_id)
        if order is None or order.status.is_terminal:
            return None
        old = order.request
        if quantity is not None and not (quantity.is_finite() and ZERO < quantity <= old.quantity):
            raise ValueError(f"replace quantity must be in (0, {old.quantity}], got {quantity}")
        if limit_price is not None:
            if old.order_type is not OrderType.LIMIT:
                raise ValueError("limit_price can only replace a limit order's price")
            if not (limit_price.is_finite() and limit_price > 0):
                raise ValueError(f"limit_price must be a positive Decimal, got {limit_price}")
        await self.cancel(client_order_id, ts)
        if order.status is not S.CANCELLED and order.status is not S.EXPIRED:
            log.warning("replace: cancel not confirmed; nothing sent", client_order_id=client_order_id,
                        status=order.status.value)
            return None
        left = (quantity if quantity is not None else old.quantity) - order.filled_quantity
        if left <= 0:
            return None
        new_request = dataclasses.replace(
            old,
            quantity=left,
            limit_price=limit_price if limit_price is not None else old.limit_price,
            reason=f"{old.reason} (replaces {client_order_id})".strip(),
        )
        replacement = await self.submit(new_request, ts=ts, decision_id=order.decision_id)
        log.info("order replaced", old=client_order_id, new=replacement.client_order_id, quantity=str(left))
        return replacement

    # ------------------------------------------------------------------ updates
    async def apply(self, update: OrderUpdate) -> None:
        """Apply one broker report: book a new fill once, then move the order's state.

        Never raises for what a broker sends: malformed, duplicated, stale and
        unknown-order reports are refused with a reason code and counted.
        """
        order = self._orders.get(update.client_order_id) or self._recent.get(update.client_order_id)
        if order is None:
            self.counts["unknown_updates"] += 1
            self.rejections["unknown_order"] += 1
            log.warning("update for an order this daemon does not know", client_order_id=update.client_order_id)
            await self._on_anomaly("unknown_order", f"update for unknown order {update.client_order_id!r}", None)
            return
        problem = _malformed(update, order)
        if problem is not None:
            self.counts["malformed_updates"] += 1
            self.rejections[problem] += 1
            log.error("malformed order update refused", client_order_id=order.client_order_id, reason=problem)
            await self._on_anomaly("malformed_update", f"{order.client_order_id}: {problem}", order)
            return
        async with self._store.together():  # the fill, its trade and the order's new state: one commit
            booked = False
            if update.fill is not None:
                booked = await self._book(order, update.fill)
            await self._advance(order, update, booked)

    async def _advance(self, order: ManagedOrder, update: OrderUpdate, booked: bool) -> None:
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
            self.rejections["illegal_transition"] += 1
            log.info("order update ignored", client_order_id=order.client_order_id, error=str(exc))
            return
        if update.broker_order_id:
            order.broker_order_id = update.broker_order_id
        await self._move(order, target, update.ts, message=update.message)

    async def _book(self, order: ManagedOrder, fill: Fill) -> bool:
        """Book one fill unless its id was booked before (in this process or any earlier one).

        A fill reported again with a different fee is the venue completing or
        correcting its fee (IB's commission report can follow its execution):
        the difference is booked through ``on_fee``, the fill is not booked again.
        """
        fill_id = fill.fill_id
        if fill_id in order.fill_ids:
            if not await self._correct_fee(order, fill):
                self.counts["duplicate_fills"] += 1
                self.rejections["duplicate_fill"] += 1
            return False
        # Claimed before the first await, so a concurrent report of the same fill cannot book it too.
        order.fill_ids.add(fill_id)
        try:
            if await self._store.has_fill(fill_id):
                if await self._correct_fee(order, fill):
                    return False
                self.counts["duplicate_fills"] += 1
                self.rejections["duplicate_fill"] += 1
                log.info("duplicate fill ignored", fill_id=fill_id)
                return False
            total = order.filled_quantity + fill.quantity
            previous_avg = order.average_price or ZERO
            order.average_price = (previous_avg * order.filled_quantity + fill.price * fill.quantity) / total
            order.filled_quantity = total
            self.counts["fills"] += 1
            await self._on_fill(fill, order)
        except BaseException:
            order.fill_ids.discard(fill_id)
            raise
        if order.filled_quantity > order.request.quantity:
            await self._on_anomaly(
                "overfill",
                f"{order.client_order_id}: filled {order.filled_quantity} of {order.request.quantity}",
                order,
            )
        return True

    async def _correct_fee(self, order: ManagedOrder, fill: Fill) -> bool:
        """True when ``fill`` is a booked fill whose fee changed: the store's fee becomes the venue's."""
        if self._on_fee is None:
            return False
        booked = await self._store.fill_fee(fill.fill_id)
        if booked is None or booked == fill.fee:
            return False
        self.counts["fee_corrections"] += 1
        log.info("fee completed by the venue", fill_id=fill.fill_id, booked=str(booked), fee=str(fill.fee))
        await self._on_fee(fill, fill.fee - booked, order)
        return True

    async def _lookup(self, order: ManagedOrder, ts: int, *, recovering: bool = False) -> bool:
        """Ask the broker for one order and take its answer. Returns False when the broker could not say."""
        self.counts["lookups"] += 1
        order.waiting_since = ts
        try:
            report = await self._broker.get_order(order.client_order_id)
        except (BrokerError, OSError, TimeoutError) as exc:
            log.error("order lookup failed; order stays open", client_order_id=order.client_order_id, error=repr(exc))
            return False
        if report is None:
            return await self._not_at_broker(order, ts, recovering)
        if order.status is S.NEW:
            # Sent before the process died: the broker has it, so it left us.
            await self._move(order, S.SUBMITTED, ts, message="found at the broker during recovery")
        if not await self._sync_fills(order):
            return False
        await self._advance(order, dataclasses.replace(report, fill=None), booked=False)
        if report.filled_quantity > order.filled_quantity:
            await self._on_anomaly(
                "fills_missing",
                f"{order.client_order_id}: broker reports {report.filled_quantity} filled, "
                f"books hold {order.filled_quantity}",
                order,
            )
        return True

    async def _not_at_broker(self, order: ManagedOrder, ts: int, recovering: bool) -> bool:
        order.lookups += 1
        status = order.status
        if status is S.NEW:
            await self._move(order, S.REJECTED, ts, message=NEVER_SENT)
            log.warning("journaled order never reached the broker", client_order_id=order.client_order_id)
            return True
        if status in (S.SUBMITTED, S.UNKNOWN) and (recovering or order.lookups >= self.not_found_limit):
            await self._move(
                order, S.REJECTED, ts, message=f"broker has no order with this client id ({order.lookups} lookups)"
            )
            return True
        if status in (S.SUBMITTED, S.UNKNOWN):
            return True  # maybe still in flight: asked again after ack_timeout
        # The broker acknowledged this order once and now denies it: our books cannot be trusted.
        await self._on_anomaly(
            "order_missing_at_broker", f"{order.client_order_id} ({status}) is unknown to the broker", order
        )
        return not recovering

    async def _sync_fills(self, order: ManagedOrder) -> bool:
        """Book every execution the broker lists for ``order`` that is not booked yet."""
        if not isinstance(self._broker, FillSource):
            return True
        try:
            fills = await self._broker.fills_for(order.client_order_id)
        except (BrokerError, OSError, TimeoutError) as exc:
            log.error("fill lookup failed", client_order_id=order.client_order_id, error=repr(exc))
            return False
        for fill in fills:
            if fill.client_order_id != order.client_order_id:
                continue
            if await self._book(order, fill):
                self.counts["recovered_fills"] += 1
                log.warning("fill recovered from the broker", fill_id=fill.fill_id,
                            client_order_id=order.client_order_id)
        return True

    async def _move(self, order: ManagedOrder, to: OrderStatus, ts: int, *, message: str = "") -> None:
        previous = order.status
        check_transition(previous, to)
        order.status = to
        self.status_counts[to] += 1
        if to not in _AWAITING_BROKER:
            order.lookups = 0
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
        if to in _TERMINAL:
            # keep terminal orders out of the hot dict once nothing can change them
            self._orders.pop(order.client_order_id, None)
            self._terminal_cache(order)

    def _terminal_cache(self, order: ManagedOrder) -> None:
        """Late updates for a just-finished order (a fill after cancel) must still find it."""
        self._recent[order.client_order_id] = order
        if len(self._recent) > _RECENT_FINISHED:
            self._recent.pop(next(iter(self._recent)))


def _malformed(update: OrderUpdate, order: ManagedOrder) -> str | None:
    """A reason code when a broker report cannot be trusted enough to apply, else None."""
    if not isinstance(update.status, OrderStatus):
        return "malformed_status"
    if not _is_int(update.ts):
        return "malformed_ts"
    fill = update.fill
    if fill is None:
        return None
    if not isinstance(fill, Fill) or not isinstance(fill.fill_id, str) or not fill.fill_id:
        return "malformed_fill_id"
    if fill.client_order_id != order.client_order_id:
        return "fill_for_other_order"
    if fill.symbol != order.request.symbol:
        return "fill_symbol_mismatch"
    if fill.side is not order.request.side:
        return "fill_side_mismatch"
    if _bad_amount(fill.quantity, positive=True):
        return "malformed_fill_quantity"
    if _bad_amount(fill.price, positive=True):
        return "malformed_fill_price"
    if _bad_amount(fill.fee, positive=False):
        return "malformed_fill_fee"
    if not _is_int(fill.ts):
        return "malformed_fill_ts"
    return None


def _is_int(value: object) -> bool:
    """An int that is not a bool; the exact-type test first because every well-formed report passes it."""
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _bad_amount(value: object, *, positive: bool) -> bool:
    """Not a finite Decimal, negative, or zero where it must be positive."""
    if not isinstance(value, Decimal) or not value.is_finite():
        return True
    return value <= ZERO if positive else value < ZERO
