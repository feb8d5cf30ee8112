"""What an evaluation reads back of one finished run: its equity curve and its closed trades.

``tradectl validate`` (and later reports and shadow replays) judge a run by
the record the pipeline wrote, not by a second bookkeeping of their own, so
the figures they print are the store's. Kept beside ``reads`` (the
dashboard's newest-rows queries) because these read a whole run, by run id,
through the store's read-only ``query``.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from daemon.store.repository import Store

__all__ = [
    "TRADE_COLUMNS", "FillTotals", "RunTrade", "run_day", "run_equity", "run_fill_totals", "run_trades",
    "trade_from_row",
]


@dataclass(frozen=True, slots=True)
class RunTrade:
    """A closed round trip of one run: when it ended and what it made net of fees (and, for reports,
    its size, prices and why it opened and closed)."""

    symbol: str
    direction: int
    entry_ts: int
    exit_ts: int
    fees: Decimal
    pnl: Decimal
    quantity: Decimal = Decimal(0)
    entry_price: Decimal = Decimal(0)
    exit_price: Decimal = Decimal(0)
    entry_reason: str = ""
    exit_reason: str = ""


async def run_equity(store: Store, run_id: int, *, since_ts: int | None = None) -> list[tuple[int, float]]:
    """The run's equity snapshots as (bar ts, equity), oldest first; from ``since_ts`` on when given."""
    rows = await store.query(
        "SELECT ts, equity FROM equity_snapshots WHERE run_id = ? AND ts >= ? ORDER BY rowid",
        (run_id, -(2**62) if since_ts is None else since_ts),
    )
    return [(int(ts), float(equity)) for ts, equity in rows]


async def run_last_unrealized(store: Store, run_id: int) -> float:
    """The open position's P&L at the run's last equity snapshot (0 for a run without snapshots)."""
    rows = await store.query(
        "SELECT unrealized_pnl FROM equity_snapshots WHERE run_id = ? ORDER BY rowid DESC LIMIT 1", (run_id,)
    )
    return float(rows[0][0]) if rows else 0.0


@dataclass(frozen=True, slots=True)
class FillTotals:
    """What a run's fills add up to: gross realized P&L and fees, exact (``Decimal``)."""

    fills: int
    realized: Decimal
    fees: Decimal

    @property
    def net(self) -> Decimal:
        """Realized P&L after every fee paid (fees of a position still open included)."""
        return self.realized - self.fees


async def run_fill_totals(store: Store, run_id: int) -> FillTotals:
    """The run's fills summed in ``Decimal`` from their stored text (SQLite's SUM would go through floats)."""
    rows = await store.query("SELECT realized_pnl, fee FROM fills WHERE run_id = ?", (run_id,))
    return FillTotals(len(rows), sum((Decimal(r) for r, _ in rows), Decimal(0)),
                      sum((Decimal(f) for _, f in rows), Decimal(0)))


async def run_day(
    store: Store, run_id: int, start_ts: int, end_ts: int
) -> tuple[list[str], list[RunTrade], list[tuple[int, float]]]:
    """One span of a run (a trading day): every decision's action (a folded row once per bar it stands
    for), the round trips closed in it, and its equity points preceded by the last one before it."""
    rows = await store.query(
        "SELECT action, bars FROM decisions WHERE run_id = ? AND ts >= ? AND ts < ? ORDER BY id",
        (run_id, start_ts, end_ts),
    )
    actions = [action for action, bars in rows for _ in range(int(bars))]
    trades = await store.query(
        f"SELECT {TRADE_COLUMNS} FROM trades WHERE run_id = ? AND exit_ts >= ? AND exit_ts < ? ORDER BY id",
        (run_id, start_ts, end_ts),
    )
    before = await store.query(
        "SELECT ts, equity FROM equity_snapshots WHERE run_id = ? AND ts < ? ORDER BY rowid DESC LIMIT 1",
        (run_id, start_ts),
    )
    points = await store.query(
        "SELECT ts, equity FROM equity_snapshots WHERE run_id = ? AND ts >= ? AND ts < ? ORDER BY rowid",
        (run_id, start_ts, end_ts),
    )
    equity = [(int(ts), float(e)) for ts, e in [*before, *points]]
    return actions, [trade_from_row(r) for r in trades], equity


async def run_trades(store: Store, run_id: int) -> list[RunTrade]:
    """The run's closed round trips in the order they closed (money stays ``Decimal``)."""
    rows = await store.query(f"SELECT {TRADE_COLUMNS} FROM trades WHERE run_id = ? ORDER BY id", (run_id,))
    return [trade_from_row(r) for r in rows]


TRADE_COLUMNS = (
    "symbol, direction, entry_ts, exit_ts, fees, pnl, quantity, entry_price, exit_price, entry_reason, exit_reason"
)


def trade_from_row(r: tuple[Any, ...]) -> RunTrade:
    """A ``trades`` row selected as ``TRADE_COLUMNS``, money as ``Decimal``."""
    return RunTrade(
        r[0], int(r[1]), int(r[2]), int(r[3]), Decimal(r[4]), Decimal(r[5]), Decimal(r[6]), Decimal(r[7]),
        Decimal(r[8]), r[9], r[10],
    )
