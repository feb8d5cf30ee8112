"""What the dashboard reads from the store: the latest equity points, closed trades and decisions.

Kept apart from ``Store`` so the page's read-only queries (which only ever
look at the newest rows) live in one module and go through the store's
read-only ``query``. Every read takes the newest rows by their integer
primary key or rowid, both always indexed, so the cost stays flat however
long a daemon has been writing.
"""

from __future__ import annotations

import json
from typing import Any

from daemon.store.repository import Store

__all__ = ["recent_decisions", "recent_equity", "recent_trades"]

_TRADE_KEYS = ("symbol", "direction", "quantity", "entry_ts", "exit_ts", "entry_price", "exit_price", "fees",
               "pnl", "entry_reason", "exit_reason")


async def recent_equity(store: Store, limit: int) -> list[tuple[int, float]]:
    """The latest ``limit`` equity snapshots as (bar ts, equity), oldest first."""
    rows = await store.query("SELECT ts, equity FROM equity_snapshots ORDER BY rowid DESC LIMIT ?", (limit,))
    return [(int(ts), float(equity)) for ts, equity in reversed(rows)]


async def recent_trades(store: Store, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` closed round trips, newest first; money stays decimal text."""
    rows = await store.query(f"SELECT {', '.join(_TRADE_KEYS)} FROM trades ORDER BY id DESC LIMIT ?", (limit,))
    return [dict(zip(_TRADE_KEYS, row, strict=True)) for row in rows]


async def recent_decisions(store: Store, limit: int) -> list[dict[str, Any]]:
    """The latest ``limit`` decisions, newest first, with probabilities and extras decoded from their JSON."""
    rows = await store.query(
        "SELECT ts, symbol, action, confidence, probabilities, reason, verdict, verdict_layer, verdict_reason,"
        " order_quantity, extras FROM decisions ORDER BY id DESC LIMIT ?",
        (limit,),
    )
    return [
        {
            "ts": r[0], "symbol": r[1], "action": r[2], "confidence": r[3],
            "probabilities": None if r[4] is None else json.loads(r[4]),
            "reason": r[5], "verdict": r[6], "verdict_layer": r[7], "verdict_reason": r[8],
            "order_quantity": r[9], "extras": None if r[10] is None else json.loads(r[10]),
        }
        for r in rows
    ]
