"""The reconciler: the daemon's books must agree with the broker's, or trading stops.

It compares the broker's positions and open orders with the daemon's
(portfolio positions, order-manager working orders) at start-up before any
order, after fills, and periodically. Three rules shape it:

* **Fail closed.** A broker report that fails, is missing (None) or is
  malformed is UNKNOWN, never "flat": an empty book we could not read is not
  an empty book. Unknown results do not let trading start, and a run of them
  halts.
* **Transients are not mismatches.** A fill the broker has already applied may
  still be in flight to us. Pending updates are applied (``settle``) before
  comparing, and a difference is only acted on if a second look after
  ``confirm_delay`` still shows it.
* **Every run is audited** — what differed and what was done — as a
  ``ReconciliationRecord`` handed to ``audit`` (``Store.record_reconciliation``).

The policy decides what a confirmed difference does: ``adopt`` takes the
broker's state (orders are looked up again, positions are set to the
broker's) and alerts; ``halt`` trips the reconciliation latch, which puts the
governor in HALTED until an operator resumes. A position the daemon never
opened (broker has it, books do not) is reported as ``position_outside_daemon``.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Literal, Protocol

import structlog

from brokers.base import ZERO, OrderStatus, OrderUpdate, Position
from daemon.store.rows import ReconciliationRecord
from risk.governor import RiskGovernor, TradingState

log = structlog.get_logger(__name__)

Policy = Literal["adopt", "halt"]
AuditWrite = Callable[[ReconciliationRecord], Awaitable[None]]
AlertSink = Callable[[str, str, dict[str, Any]], Awaitable[None] | None]
Settle = Callable[[], Awaitable[None]]

# Daemon orders the broker must list as open. NEW (send in progress), SUBMITTED/UNKNOWN (no ack yet) and
# CANCEL_PENDING (confirmation in flight) are the order manager's to settle through its ack timeout.
_SETTLED_OPEN = frozenset({OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED})


class ReconcileStatus(enum.StrEnum):
    OK = "ok"
    MISMATCH = "mismatch"
    UNKNOWN = "unknown"  # the broker's state could not be read: never treated as flat


class ReconcileAction(enum.StrEnum):
    NONE = "none"
    ADOPTED = "adopted"
    HALTED = "halted"
    RETRY = "retry"  # unknown, not yet halting: do not trade until a run succeeds


class DifferenceKind(enum.StrEnum):
    POSITION = "position"  # both hold the symbol, in different quantities
    POSITION_OUTSIDE_DAEMON = "position_outside_daemon"  # broker holds it, the books do not
    POSITION_MISSING_AT_BROKER = "position_missing_at_broker"  # the books hold it, the broker does not
    ORDER_MISSING_AT_BROKER = "order_missing_at_broker"
    ORDER_UNKNOWN_TO_DAEMON = "order_unknown_to_daemon"
    ORDER_FILLS = "order_fills"  # both have the order open, with different filled quantities


@dataclass(frozen=True, slots=True)
class Difference:
    kind: DifferenceKind
    symbol: str
    daemon: str
    broker: str
    client_order_id: str | None = None

    def as_dict(self) -> dict[str, str]:
        doc = {"kind": self.kind.value, "symbol": self.symbol, "daemon": self.daemon, "broker": self.broker}
        if self.client_order_id is not None:
            doc["client_order_id"] = self.client_order_id
        return doc

    def describe(self) -> str:
        what = f"{self.symbol} order {self.client_order_id}" if self.client_order_id else self.symbol
        return f"{self.kind.value}: {what} daemon={self.daemon} broker={self.broker}"


@dataclass(frozen=True, slots=True)
class ReconciliationResult:
    reason: str
    ts: int
    status: ReconcileStatus
    action: ReconcileAction
    differences: tuple[Difference, ...] = ()
    detail: str = ""

    @property
    def trading_allowed(self) -> bool:
        """True when the books may be trusted now: they agreed, or were made to agree."""
        return self.status is ReconcileStatus.OK or self.action is ReconcileAction.ADOPTED

    def as_dict(self) -> dict[str, Any]:
        return {
            "reason": self.reason,
            "ts": self.ts,
            "status": self.status.value,
            "action": self.action.value,
            "differences": [d.as_dict() for d in self.differences],
            "detail": self.detail,
        }


class BrokerView(Protocol):
    async def positions(self) -> list[Position]: ...

    async def open_orders(self) -> list[OrderUpdate]: ...


class BooksView(Protocol):
    """The daemon's positions (``Portfolio``)."""

    def positions(self) -> list[Position]: ...

    def adopt_position(self, position: Position, ts: int) -> None: ...


class OrderView(Protocol):
    """What the reconciler reads of one working order (``ManagedOrder``)."""

    client_order_id: str
    status: OrderStatus
    request: Any  # has .symbol
    filled_quantity: Decimal


class OrdersView(Protocol):
    """The daemon's working orders (``OrderManager``)."""

    def working(self, symbol: str | None = None) -> Sequence[OrderView]: ...

    def get(self, client_order_id: str) -> OrderView | None: ...

    async def resolve_unknown(self, order: Any, ts: int) -> None: ...


class HooksView(Protocol):
    def reconciliation_mismatch(self, detail: str, ts: int = 0) -> Any: ...


class BrokerStateUnknown(Exception):
    """The broker's report could not be read or trusted; carries why."""


@dataclass(slots=True)
class _Snapshot:
    positions: dict[str, Position]
    open_orders: dict[str, OrderUpdate]


@dataclass(slots=True)
class ReconcilerStats:
    runs: Counter[str] = field(default_factory=Counter)
    consecutive_unknown: int = 0
    last: ReconciliationResult | None = None


class Reconciler:
    """Compares broker and books; ``policy`` says whether a confirmed difference is adopted or halts."""

    def __init__(
        self,
        broker: BrokerView,
        books: BooksView,
        orders: OrdersView | None = None,
        *,
        policy: Policy = "halt",
        governor: RiskGovernor | None = None,
        hooks: HooksView | None = None,
        audit: AuditWrite | None = None,
        alert: AlertSink | None = None,
        settle: Settle | None = None,
        confirm_delay: float | None = 1.0,
        unknown_halt_after: int = 3,
        run_id: int = 0,
    ) -> None:
        if policy not in ("adopt", "halt"):
            raise ValueError(f"reconciliation policy must be 'adopt' or 'halt', not {policy!r}")
        if unknown_halt_after < 1:
            raise ValueError(f"unknown_halt_after must be >= 1, got {unknown_halt_after}")
        self.broker = broker
        self.books = books
        self.orders = orders
        self.policy: Policy = policy
        self.governor = governor
        self.hooks = hooks
        self._audit = audit
        self._alert = alert
        self._settle = settle
        self.confirm_delay = confirm_delay
        self.unknown_halt_after = unknown_halt_after
        self.run_id = run_id
        self.stats = ReconcilerStats()
        self._lock = asyncio.Lock()
        self._fills_seen = self._fill_count()

    @property
    def last(self) -> ReconciliationResult | None:
        return self.stats.last

    @property
    def trusted(self) -> bool:
        """Whether the last run left books the daemon may trade on."""
        last = self.stats.last
        return last is not None and last.trading_allowed

    # ------------------------------------------------------------------ entry points
    async def reconcile(self, reason: str, ts: int) -> ReconciliationResult:
        """One full run: read the broker, compare, act by policy, audit. Never raises for the broker's faults."""
        async with self._lock:
            result = await self._run(reason, ts)
            self._fills_seen = self._fill_count()
            stats = self.stats
            stats.runs[result.status.value] += 1
            stats.last = result
            await self._write_audit(result)
            return result

    async def startup(self, ts: int, *, attempts: int = 3, retry_delay: float = 2.0) -> ReconciliationResult:
        """The run before any order. An unknown broker state is retried, then halts: never assumed flat."""
        result = await self.reconcile("startup", ts)
        for _ in range(max(0, attempts - 1)):
            if result.status is not ReconcileStatus.UNKNOWN:
                return result
            await asyncio.sleep(retry_delay)
            result = await self.reconcile("startup", ts)
        if result.status is ReconcileStatus.UNKNOWN and result.action is not ReconcileAction.HALTED:
            await self.halt(f"broker state unknown at startup: {result.detail}", ts)
            result = ReconciliationResult(result.reason, ts, result.status, ReconcileAction.HALTED, (), result.detail)
            self.stats.last = result
            await self._write_audit(result)
        return result

    async def after_fills(self, ts: int) -> ReconciliationResult | None:
        """Reconcile if the books took fills since the last run (call once per batch of updates, not per fill)."""
        if self._fill_count() == self._fills_seen:
            return None
        return await self.reconcile("fill", ts)

    async def run_periodically(
        self, interval: float, clock: Callable[[], int], stop: asyncio.Event | None = None
    ) -> None:
        """Reconcile every ``interval`` seconds until ``stop`` is set (or the task is cancelled)."""
        stop = stop or asyncio.Event()
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), interval)
                return
            except TimeoutError:
                pass
            await self.reconcile("periodic", clock())

    # ------------------------------------------------------------------ the run
    async def _run(self, reason: str, ts: int) -> ReconciliationResult:
        try:
            differences = await self._look()
            if differences and self.confirm_delay is not None:
                await asyncio.sleep(self.confirm_delay)
                first = {_key(d) for d in differences}
                differences = [d for d in await self._look() if _key(d) in first]
        except BrokerStateUnknown as exc:
            return await self._unknown(reason, ts, str(exc))
        self.stats.consecutive_unknown = 0
        if not differences:
            return ReconciliationResult(reason, ts, ReconcileStatus.OK, ReconcileAction.NONE)
        detail = "; ".join(d.describe() for d in differences)
        log.error("reconciliation mismatch", reason=reason, policy=self.policy, differences=detail)
        if self.policy == "adopt":
            differences, detail = await self._adopt(differences, ts)
            await self._emit("reconciliation_adopted", f"adopted the broker's state: {detail}", differences)
            return ReconciliationResult(
                reason, ts, ReconcileStatus.MISMATCH, ReconcileAction.ADOPTED, tuple(differences), detail
            )
        await self.halt(detail, ts)
        await self._emit("reconciliation_mismatch", f"trading halted: {detail}", differences)
        return ReconciliationResult(reason, ts, ReconcileStatus.MISMATCH, ReconcileAction.HALTED, tuple(differences),
                                    detail)

    async def _look(self) -> list[Difference]:
        if self._settle is not None:
            await self._settle()
        snapshot = await self._read_broker()
        if self._settle is not None:
            await self._settle()  # updates that arrived while we read
        return self._order_differences(snapshot) + self._position_differences(snapshot)

    async def _read_broker(self) -> _Snapshot:
        try:
            positions = await self.broker.positions()
        except Exception as exc:  # any failure to read is "unknown", whatever the adapter raised
            raise BrokerStateUnknown(f"positions failed: {type(exc).__name__}: {exc}") from exc
        try:
            open_orders = await self.broker.open_orders()
        except Exception as exc:
            raise BrokerStateUnknown(f"open orders failed: {type(exc).__name__}: {exc}") from exc
        return _Snapshot(_positions_by_symbol(positions), _orders_by_id(open_orders))

    def _position_differences(self, snapshot: _Snapshot) -> list[Difference]:
        books = {p.symbol: p for p in self.books.positions() if p.quantity}
        out = []
        for symbol in sorted(set(books) | set(snapshot.positions)):
            ours = books[symbol].quantity if symbol in books else ZERO
            theirs = snapshot.positions[symbol].quantity if symbol in snapshot.positions else ZERO
            if ours == theirs:
                continue
            if not ours:
                kind = DifferenceKind.POSITION_OUTSIDE_DAEMON
            elif not theirs:
                kind = DifferenceKind.POSITION_MISSING_AT_BROKER
            else:
                kind = DifferenceKind.POSITION
            out.append(Difference(kind, symbol, str(ours), str(theirs)))
        return out

    def _order_differences(self, snapshot: _Snapshot) -> list[Difference]:
        if self.orders is None:
            return []
        out = []
        working = {o.client_order_id: o for o in self.orders.working()}
        for cid, order in working.items():
            if order.status not in _SETTLED_OPEN:
                continue
            at_broker = snapshot.open_orders.get(cid)
            symbol = order.request.symbol
            if at_broker is None:
                out.append(Difference(DifferenceKind.ORDER_MISSING_AT_BROKER, symbol, order.status.value,
                                      "not open", cid))
            elif at_broker.filled_quantity != order.filled_quantity:
                out.append(Difference(DifferenceKind.ORDER_FILLS, symbol, f"filled {order.filled_quantity}",
                                      f"filled {at_broker.filled_quantity}", cid))
        for cid, update in snapshot.open_orders.items():
            if cid in working:
                continue
            known = self.orders.get(cid)
            ours = "not known" if known is None else known.status.value
            out.append(Difference(DifferenceKind.ORDER_UNKNOWN_TO_DAEMON, update.symbol or "?", ours,
                                  update.status.value, cid))
        return out

    # ------------------------------------------------------------------ actions
    async def _adopt(self, differences: list[Difference], ts: int) -> tuple[list[Difference], str]:
        """Take the broker's state: orders are looked up again (booking their fills), then positions set."""
        notes = []
        order_kinds = (DifferenceKind.ORDER_MISSING_AT_BROKER, DifferenceKind.ORDER_FILLS)
        if self.orders is not None:
            for diff in differences:
                if diff.kind in order_kinds and diff.client_order_id is not None:
                    order = self.orders.get(diff.client_order_id)
                    if order is not None:
                        await self.orders.resolve_unknown(order, ts)
                        notes.append(f"order {diff.client_order_id} looked up: now {order.status.value}")
                elif diff.kind is DifferenceKind.ORDER_UNKNOWN_TO_DAEMON:
                    notes.append(f"order {diff.client_order_id} is not ours: left alone, its fills will be adopted")
        try:
            snapshot = await self._read_broker()
        except BrokerStateUnknown as exc:
            notes.append(f"positions not adopted: {exc}")
            return differences, "; ".join(notes)
        for diff in self._position_differences(snapshot):
            held = snapshot.positions.get(diff.symbol)
            position = held if held is not None else Position(diff.symbol, ZERO, ZERO)
            self.books.adopt_position(position, ts)
            notes.append(f"{diff.symbol} position {diff.daemon} -> {position.quantity} ({diff.kind.value})")
        log.warning("reconciliation adopted the broker's state", notes=notes)
        return differences, "; ".join(notes) or "nothing left to adopt"

    async def _unknown(self, reason: str, ts: int, detail: str) -> ReconciliationResult:
        stats = self.stats
        stats.consecutive_unknown += 1
        log.error("broker state unknown", reason=reason, detail=detail, consecutive=stats.consecutive_unknown)
        if stats.consecutive_unknown >= self.unknown_halt_after:
            await self.halt(f"broker state unknown {stats.consecutive_unknown} times: {detail}", ts)
            await self._emit("reconciliation_unknown", f"trading halted: broker state unknown ({detail})", [])
            return ReconciliationResult(reason, ts, ReconcileStatus.UNKNOWN, ReconcileAction.HALTED, (), detail)
        await self._emit("reconciliation_unknown", f"broker state unknown, will retry ({detail})", [])
        return ReconciliationResult(reason, ts, ReconcileStatus.UNKNOWN, ReconcileAction.RETRY, (), detail)

    async def halt(self, detail: str, ts: int) -> None:
        """Trip the reconciliation latch and put the governor in HALTED (until an operator resumes)."""
        if self.hooks is not None:
            self.hooks.reconciliation_mismatch(detail, ts)
        governor = self.governor
        if governor is not None and governor.state is not TradingState.HALTED:
            governor.transition(TradingState.HALTED, "reconciliation:reconciliation_mismatch")

    async def _emit(self, kind: str, message: str, differences: Sequence[Difference]) -> None:
        if self._alert is None:
            return
        try:
            result = self._alert(kind, message, {"differences": [d.as_dict() for d in differences]})
            if result is not None:
                await result
        except Exception as exc:  # alerts never break the reconciler
            log.warning("alert failed", kind=kind, error=repr(exc))

    async def _write_audit(self, result: ReconciliationResult) -> None:
        if self._audit is None:
            return
        try:
            await self._audit(audit_record(result, self.run_id))
        except Exception as exc:
            # Auditing is not allowed to take the safety action back; it is logged loudly instead.
            self.stats.runs["audit_failed"] += 1
            log.error("reconciliation audit write failed", error=repr(exc), result=result.as_dict())

    def _fill_count(self) -> int:
        return int(getattr(self.books, "fill_count", 0))


# ---------------------------------------------------------------------------- helpers


def audit_record(result: ReconciliationResult, run_id: int = 0) -> ReconciliationRecord:
    """What the audit keeps of one run."""
    return ReconciliationRecord(
        run_id, result.ts, result.reason, result.status.value, result.action.value,
        tuple(d.as_dict() for d in result.differences), result.detail,
    )


def _positions_by_symbol(positions: object) -> dict[str, Position]:
    if positions is None:
        raise BrokerStateUnknown("broker returned no position report (None)")
    if not isinstance(positions, list | tuple):
        raise BrokerStateUnknown(f"position report is a {type(positions).__name__}, not a list")
    out: dict[str, Position] = {}
    for position in positions:
        if not isinstance(position, Position) or not isinstance(position.symbol, str) or not position.symbol:
            raise BrokerStateUnknown(f"malformed position {position!r}")
        quantity = position.quantity
        if not isinstance(quantity, Decimal) or not quantity.is_finite():
            raise BrokerStateUnknown(f"malformed position quantity for {position.symbol}: {quantity!r}")
        if position.symbol in out:
            raise BrokerStateUnknown(f"position for {position.symbol} reported twice")
        if quantity:
            out[position.symbol] = position
    return out


def _orders_by_id(orders: object) -> dict[str, OrderUpdate]:
    if orders is None:
        raise BrokerStateUnknown("broker returned no open-order report (None)")
    if not isinstance(orders, list | tuple):
        raise BrokerStateUnknown(f"open-order report is a {type(orders).__name__}, not a list")
    out: dict[str, OrderUpdate] = {}
    for update in orders:
        if not isinstance(update, OrderUpdate) or not isinstance(update.client_order_id, str):
            raise BrokerStateUnknown(f"malformed open order {update!r}")
        if not isinstance(update.status, OrderStatus):
            raise BrokerStateUnknown(f"open order {update.client_order_id} has status {update.status!r}")
        if update.status.is_terminal:
            continue
        out[update.client_order_id] = update
    return out


def _key(diff: Difference) -> tuple[str, str, str | None]:
    return diff.kind.value, diff.symbol, diff.client_order_id
