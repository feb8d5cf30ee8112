"""What ``tradectl report`` reads: one run (by id) or a span of bar time (the weekly one-pager).

Every question takes a ``Scope`` — a run, or bar timestamps from/until — so the
run report and the weekly page read the same rows the same way. Reads go
through the store's read-only ``query``; money stays ``Decimal`` text until a
chart needs a float. Kept in ``daemon/store`` because no SQL lives elsewhere.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from daemon.store.repository import Store
from daemon.store.runs import TRADE_COLUMNS, RunTrade, trade_from_row

__all__ = [
    "AlertRow",
    "DenialRow",
    "ReconRow",
    "RunInfo",
    "Scope",
    "TraceRow",
    "alerts_between",
    "bar_rejections",
    "decision_counts",
    "equity",
    "last_bar_ts",
    "latest_run_id",
    "latest_run_of_model",
    "net_positions",
    "reconciliation_problems",
    "risk_events",
    "run_info",
    "trace",
    "trades",
    "trading_state",
]


@dataclass(frozen=True, slots=True)
class Scope:
    """One run (``run_id``) or every run's rows with a bar timestamp in ``[since_ts, until_ts]``."""

    run_id: int | None = None
    since_ts: int = -(2**62)
    until_ts: int = 2**62

    def where(self, ts_column: str = "ts") -> tuple[str, tuple[Any, ...]]:
        if self.run_id is not None:
            return "run_id = ?", (self.run_id,)
        return f"{ts_column} BETWEEN ? AND ?", (self.since_ts, self.until_ts)


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    mode: str
    started_at: str
    ended_at: str | None
    config: dict[str, Any]
    summary: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class TraceRow:
    """A decisions row: ``bars`` identical plain decisions from ``ts`` to ``last_ts``."""

    ts: int
    last_ts: int
    bars: int
    action: str
    confidence: float | None
    verdict: str | None
    verdict_layer: str | None
    regime_score: float | None
    hold_bonus: float | None
    model_sha256: str | None


@dataclass(frozen=True, slots=True)
class DenialRow:
    ts: int
    symbol: str | None
    layer: str
    kind: str
    reason: str
    message: str


@dataclass(frozen=True, slots=True)
class ReconRow:
    ts: int
    reason: str
    status: str
    action: str
    detail: str


@dataclass(frozen=True, slots=True)
class AlertRow:
    created_at: float
    kind: str
    text: str


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


async def run_info(store: Store, run_id: int) -> RunInfo | None:
    rows = await store.query(
        "SELECT id, mode, started_at, ended_at, config, summary FROM runs WHERE id = ?", (run_id,)
    )
    if not rows:
        return None
    r = rows[0]
    return RunInfo(int(r[0]), r[1], r[2], r[3], json.loads(r[4]), None if r[5] is None else json.loads(r[5]))


async def latest_run_id(store: Store) -> int | None:
    """The newest run that recorded at least one decision (an aborted start has none to show)."""
    rows = await store.query("SELECT MAX(run_id) FROM decisions")
    return None if not rows or rows[0][0] is None else int(rows[0][0])


async def latest_run_of_model(store: Store, sha256: str) -> int | None:
    """The newest run whose decisions name the model (the recurrent policy stores its SHA-256 in each)."""
    pattern = f'%"model_sha256": "{sha256}%'
    rows = await store.query("SELECT run_id FROM decisions WHERE extras LIKE ? ORDER BY id DESC LIMIT 1", (pattern,))
    return int(rows[0][0]) if rows else None


async def equity(store: Store, scope: Scope) -> list[tuple[int, float]]:
    """(bar ts, equity), oldest first."""
    where, params = scope.where()
    rows = await store.query(f"SELECT ts, equity FROM equity_snapshots WHERE {where} ORDER BY rowid", params)
    return [(int(ts), float(value)) for ts, value in rows]


async def trace(store: Store, scope: Scope) -> list[TraceRow]:
    """Every decision in order, with what its extras say about the regime and the hold bonus."""
    where, params = scope.where()
    rows = await store.query(
        "SELECT ts, COALESCE(last_ts, ts), bars, action, confidence, verdict, verdict_layer, extras FROM decisions"
        f" WHERE {where} ORDER BY id",
        params,
    )
    out = []
    for ts, last_ts, bars, action, confidence, verdict, layer, extras_json in rows:
        extras = json.loads(extras_json) if extras_json else {}
        out.append(TraceRow(
            int(ts), int(last_ts), int(bars), action, _float(confidence), verdict, layer,
            _float(extras.get("regime_score")), _float(extras.get("hold_bonus")), extras.get("model_sha256"),
        ))
    return out


async def decision_counts(store: Store, scope: Scope) -> dict[str, int]:
    """Decisions by action, each folded row counted for the bars it stands for."""
    where, params = scope.where()
    rows = await store.query(f"SELECT action, SUM(bars) FROM decisions WHERE {where} GROUP BY action", params)
    return {action: int(n) for action, n in rows}


async def risk_events(store: Store, scope: Scope) -> list[DenialRow]:
    where, params = scope.where()
    rows = await store.query(
        f"SELECT ts, symbol, layer, kind, reason, message FROM risk_events WHERE {where} ORDER BY id", params
    )
    return [DenialRow(int(r[0]), r[1], r[2], r[3], r[4], r[5]) for r in rows]


async def bar_rejections(store: Store, scope: Scope) -> dict[str, int]:
    """Rejected bars by reason."""
    where, params = scope.where()
    rows = await store.query(f"SELECT reason, COUNT(*) FROM bar_rejections WHERE {where} GROUP BY reason", params)
    return {reason: int(n) for reason, n in rows}


async def reconciliation_problems(store: Store, scope: Scope) -> list[ReconRow]:
    """Reconciliation runs that did not find the books and the broker in agreement."""
    where, params = scope.where()
    rows = await store.query(
        f"SELECT ts, reason, status, action, detail FROM reconciliation_runs WHERE {where} AND status != 'ok'"
        " ORDER BY id",
        params,
    )
    return [ReconRow(int(r[0]), r[1], r[2], r[3], r[4]) for r in rows]


async def alerts_between(store: Store, kinds: tuple[str, ...], since: float, until: float) -> list[AlertRow]:
    """Operator alerts of ``kinds`` queued between two wall-clock times (the outbox keeps wall time)."""
    marks = ",".join("?" * len(kinds))
    rows = await store.query(
        f"SELECT created_at, kind, text FROM alert_outbox WHERE kind IN ({marks}) AND created_at BETWEEN ? AND ?"
        " ORDER BY id",
        (*kinds, since, until),
    )
    return [AlertRow(float(r[0]), r[1], r[2]) for r in rows]


async def net_positions(store: Store) -> dict[str, Decimal]:
    """Every symbol's net filled quantity over the whole store (buys minus sells); flat symbols left out."""
    rows = await store.query("SELECT symbol, side, quantity FROM fills")
    net: dict[str, Decimal] = {}
    for symbol, side, quantity in rows:
        q = Decimal(quantity)
        net[symbol] = net.get(symbol, Decimal(0)) + (q if side == "buy" else -q)
    return {s: q for s, q in net.items() if q}


async def trading_state(store: Store) -> str | None:
    return await store.get_state("trading_state")


async def trades(store: Store, scope: Scope) -> list[RunTrade]:
    """Closed round trips in the order they closed; a span takes those that closed within it."""
    where, params = scope.where("exit_ts")
    rows = await store.query(f"SELECT {TRADE_COLUMNS} FROM trades WHERE {where} ORDER BY id", params)
    return [trade_from_row(r) for r in rows]


async def last_bar_ts(store: Store) -> int | None:
    """The newest bar any run booked equity on (where a weekly page's week ends)."""
    rows = await store.query("SELECT MAX(ts) FROM equity_snapshots")
    return None if not rows or rows[0][0] is None else int(rows[0][0])
