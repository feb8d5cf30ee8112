"""The SQL the store writes, and how each typed row becomes its parameters.

Statements are plain module constants (one place to read what the store
writes); every ``*_params`` function turns a row into the tuple its statement
binds, so positional tuples exist only here, next to the column lists they
follow.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from decimal import Decimal

from brokers.base import Fill, OrderRequest, OrderStatus
from daemon.store.rows import (
    BarRejection,
    ClosedTradeLike,
    DecisionRow,
    EquitySnapshot,
    ReconciliationRecord,
    RiskEvent,
)

DECISION_SQL = (
    "INSERT INTO decisions (id, run_id, symbol, ts, action, confidence, probabilities, reason, verdict,"
    " verdict_layer, verdict_reason, order_quantity, client_order_id, extras, bars, last_ts)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
EQUITY_SQL = (
    "INSERT INTO equity_snapshots (run_id, ts, equity, cash, realized_pnl, unrealized_pnl) VALUES (?,?,?,?,?,?)"
)
REJECTION_SQL = "INSERT INTO bar_rejections (run_id, ts, symbol, reason, detail) VALUES (?,?,?,?,?)"
RISK_SQL = "INSERT INTO risk_events (run_id, ts, symbol, layer, kind, reason, message) VALUES (?,?,?,?,?,?,?)"
ORDER_SQL = (
    "INSERT INTO orders (client_order_id, run_id, symbol, side, quantity, order_type, limit_price, time_in_force,"
    " status, broker_order_id, filled_quantity, average_price, reason, decision_id, created_ts, updated_ts, message)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
ORDER_UPDATE_SQL = (
    "UPDATE orders SET status = ?, updated_ts = ?, message = ?,"
    " broker_order_id = COALESCE(?, broker_order_id),"
    " filled_quantity = COALESCE(?, filled_quantity),"
    " average_price = COALESCE(?, average_price) WHERE client_order_id = ?"
)
ORDER_EVENT_SQL = (
    "INSERT INTO order_events (client_order_id, ts, from_status, to_status, message) VALUES (?,?,?,?,?)"
)
ORDER_SEQUENCE_SQL = "UPDATE meta SET value = ? WHERE key = 'order_seq'"
FILL_EXISTS_SQL = "SELECT 1 FROM fills WHERE fill_id = ?"
FILL_SQL = (
    "INSERT OR IGNORE INTO fills (fill_id, client_order_id, run_id, symbol, side, quantity, price,"
    " fee, ts, realized_pnl) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
TRADE_SQL = (
    "INSERT INTO trades (run_id, symbol, direction, quantity, entry_ts, exit_ts, entry_price, exit_price,"
    " fees, pnl, entry_reason, exit_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
RECONCILIATION_SQL = (
    "INSERT INTO reconciliation_runs (run_id, ts, reason, status, action, differences, detail)"
    " VALUES (?,?,?,?,?,?,?)"
)

_PROBABILITIES_JSON = json.JSONEncoder()
_EXTRAS_JSON = json.JSONEncoder(sort_keys=True, default=str)


def probabilities_json(values: Sequence[float]) -> str:
    """``json.dumps`` of a sequence of floats without the encoder's per-call set-up."""
    if all(map(math.isfinite, values)):
        return "[" + ", ".join(map(float.__repr__, values)) + "]"  # json writes floats with repr
    return _PROBABILITIES_JSON.encode(values)  # NaN/Infinity spelled the way json spells them


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def decision_params(
    decision_id: int, run_id: int, row: DecisionRow, bars: int = 1, last_ts: int | None = None
) -> tuple[object, ...]:
    probabilities = row.probabilities
    return (
        decision_id, run_id, row.symbol, row.ts, row.action, row.confidence,
        None if probabilities is None else probabilities_json(probabilities),
        row.reason, row.verdict, row.verdict_layer, row.verdict_reason, _dec(row.order_quantity),
        row.client_order_id, _EXTRAS_JSON.encode(row.extras) if row.extras else None, bars, last_ts,
    )


def equity_params(run_id: int, row: EquitySnapshot) -> tuple[object, ...]:
    return (run_id, row.ts, row.equity, row.cash, row.realized_pnl, row.unrealized_pnl)


def rejection_params(run_id: int, row: BarRejection) -> tuple[object, ...]:
    return (run_id, row.ts, row.symbol, row.reason, row.detail)


def risk_params(run_id: int, row: RiskEvent) -> tuple[object, ...]:
    return (run_id, row.ts, row.symbol, row.layer, row.kind, row.reason, row.message)


def order_params(client_order_id: str, run_id: int, request: OrderRequest, decision_id: int | None,
                 ts: int) -> tuple[object, ...]:
    """A NEW order's row, as journaled before the broker sees it."""
    return (
        client_order_id, run_id, request.symbol, request.side.value, str(request.quantity),
        request.order_type.value, _dec(request.limit_price), request.time_in_force.value, OrderStatus.NEW.value,
        None, "0", None, request.reason, decision_id, ts, ts, "",
    )


def order_update_params(client_order_id: str, to_status: OrderStatus, ts: int, message: str,
                        broker_order_id: str | None, filled_quantity: Decimal | None,
                        average_price: Decimal | None) -> tuple[object, ...]:
    return (to_status.value, ts, message, broker_order_id, _dec(filled_quantity), _dec(average_price),
            client_order_id)


def fill_params(run_id: int, fill: Fill, realized_pnl: Decimal) -> tuple[object, ...]:
    return (
        fill.fill_id, fill.client_order_id, run_id, fill.symbol, fill.side.value, str(fill.quantity),
        str(fill.price), str(fill.fee), fill.ts, str(realized_pnl),
    )


def trade_params(run_id: int, trade: ClosedTradeLike) -> tuple[object, ...]:
    return (
        run_id, trade.symbol, trade.direction, str(trade.quantity), trade.entry_ts, trade.exit_ts,
        str(trade.entry_price), str(trade.exit_price), str(trade.fees), str(trade.pnl), trade.entry_reason,
        trade.exit_reason,
    )


def reconciliation_params(record: ReconciliationRecord) -> tuple[object, ...]:
    differences = json.dumps(list(record.differences), sort_keys=True)
    return (record.run_id, record.ts, record.reason, record.status, record.action, differences, record.detail)

ALERT_ENQUEUE_SQL = "INSERT OR IGNORE INTO alert_outbox (dedup_key, kind, text, created_at) VALUES (?,?,?,?)"
# everything pending beyond the newest ``limit`` rows is dropped (the bound keeps a long outage finite)
ALERT_DROP_OVER_LIMIT_SQL = (
    "UPDATE alert_outbox SET status = 'dropped', done_at = ? WHERE id IN (SELECT id FROM alert_outbox"
    " WHERE status = 'pending' ORDER BY id DESC LIMIT -1 OFFSET ?)"
)
ALERT_PENDING_SQL = (
    "SELECT id, dedup_key, kind, text, created_at, attempts, delivered_to FROM alert_outbox"
    " WHERE status = 'pending' ORDER BY id LIMIT ?"
)
ALERT_DONE_SQL = "UPDATE alert_outbox SET status = ?, done_at = ? WHERE id = ? AND status = 'pending'"
ALERT_PROGRESS_SQL = "UPDATE alert_outbox SET attempts = attempts + 1, delivered_to = ? WHERE id = ?"
ALERT_CARRY_SQL = "UPDATE alert_outbox SET kind = 'summary', text = ? WHERE id = ? AND status = 'pending'"
