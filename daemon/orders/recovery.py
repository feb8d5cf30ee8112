"""Crash recovery and supervision: the books, open orders and the broker agree before any order is sent.

``app.py`` calls these in order; each is a small function so the wiring stays
thin and the tests can run the same sequence without the application:

1. ``open_books`` — the daemon's books come from its OWN store (every fill it
   booked since the account's epoch), not from the broker. Building them from
   the broker would make the start-up reconciliation compare the broker with
   itself and would double-count any fill that recovery books afterwards.
2. ``OrderManager.recover`` — settle what the last process left open, booking
   fills it never stored.
3. ``Reconciler.startup`` — compare with the broker before any order.
   ``start_safely`` runs 2 and 3 and halts if either cannot vouch for the books.
4. ``supervise`` — in the background: acknowledgement timeouts and the
   periodic reconciliation.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

import structlog

from brokers.base import AccountSnapshot, Broker, Position
from daemon.orders.manager import OrderManager, RecoveryReport
from daemon.portfolio import Portfolio
from daemon.store import Store
from risk.reconciler import ReconcileAction, Reconciler, ReconcileStatus, ReconciliationResult

log = structlog.get_logger(__name__)

EPOCH_KEY = "books_epoch_run"  # first run whose fills belong to the current account
CASH_KEY = "books_starting_cash"  # the account's cash at that epoch


@dataclass(frozen=True, slots=True)
class StartupOutcome:
    recovery: RecoveryReport
    reconciliation: ReconciliationResult

    @property
    def may_trade(self) -> bool:
        return self.recovery.ok and self.reconciliation.trading_allowed

    def as_dict(self) -> dict[str, object]:
        return {
            "may_trade": self.may_trade,
            "recovery": self.recovery.as_dict(),
            "reconciliation": self.reconciliation.as_dict(),
        }


async def open_books(
    store: Store, account: AccountSnapshot, broker_positions: list[Position], *, fresh_account: bool, ts: int = 0
) -> Portfolio:
    """The daemon's portfolio, rebuilt from the fills it stored for this account.

    ``fresh_account`` is True when the broker account is new with this run (a
    backtest, or the sim broker without a state file): the books start at the
    broker's cash and positions and a new epoch begins. Otherwise the first
    run against an account records the epoch and the account's cash, and
    every later run replays the stored fills since then, in booking order —
    the same order the live books saw them, so FIFO P&L comes out identical.
    Positions the broker holds that the fills do not explain are left for
    the reconciler to find (``position_outside_daemon``).
    """
    epoch = await store.get_state(EPOCH_KEY)
    if fresh_account or epoch is None:
        await store.set_state(EPOCH_KEY, str(store.run_id), ts)
        await store.set_state(CASH_KEY, str(account.cash), ts)
        portfolio = Portfolio(account.cash, account.currency)
        if fresh_account:
            for position in broker_positions:
                portfolio.adopt_position(position, ts)
        return portfolio
    cash = await store.get_state(CASH_KEY)
    portfolio = Portfolio(Decimal(cash) if cash is not None else account.cash, account.currency)
    for booked in await store.fills_since(int(epoch)):
        portfolio.apply_fill(booked.fill, reason=booked.order_reason)
    log.info("books rebuilt from the store", epoch_run=int(epoch), fills=portfolio.fill_count,
             positions=[(p.symbol, str(p.quantity)) for p in portfolio.positions()])
    return portfolio


def make_settle(broker: Broker, orders: OrderManager) -> Callable[[], Awaitable[None]]:
    """The reconciler's ``settle``: apply every update the broker has already delivered before comparing."""

    async def settle() -> None:
        for update in broker.drain_updates():
            await orders.apply(update)

    return settle


async def start_safely(orders: OrderManager, reconciler: Reconciler, ts: int, *,
                       attempts: int = 3, retry_delay: float = 2.0) -> StartupOutcome:
    """Recovery, then the start-up reconciliation; HALT unless both vouch for the books. Before any order."""
    report = await orders.recover(ts)
    result = await reconciler.startup(ts, attempts=attempts, retry_delay=retry_delay)
    if not report.ok and result.action is not ReconcileAction.HALTED:
        detail = f"orders whose fate the broker could not tell: {', '.join(report.unresolved)}"
        await reconciler.halt(detail, ts)
        result = ReconciliationResult("startup", ts, ReconcileStatus.UNKNOWN, ReconcileAction.HALTED, (), detail)
    outcome = StartupOutcome(report, result)
    log.info("startup recovery and reconciliation", **outcome.as_dict())
    return outcome


async def supervise(
    orders: OrderManager,
    reconciler: Reconciler,
    clock: Callable[[], int],
    *,
    reconcile_every: float = 60.0,
    timeouts_every: float = 5.0,
    stop: asyncio.Event | None = None,
) -> None:
    """The background task: acknowledgement timeouts every ``timeouts_every`` s, reconciliation every
    ``reconcile_every`` s. Runs until ``stop`` is set or the task is cancelled; a failing pass is logged
    and the next one runs (a supervisor that dies silently would leave nothing watching)."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    next_reconcile = loop.time() + reconcile_every
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), min(timeouts_every, max(0.0, next_reconcile - loop.time())))
            return
        except TimeoutError:
            pass
        try:
            await orders.check_timeouts(clock())
            if loop.time() >= next_reconcile:
                next_reconcile = loop.time() + reconcile_every
                await reconciler.reconcile("periodic", clock())
        except Exception as exc:
            log.exception("supervision pass failed", error=repr(exc))
