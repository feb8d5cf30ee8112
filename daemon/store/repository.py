"""The store: the daemon's memory and audit trail, asked in the terms its callers think in.

Each method says what a caller wants (journal this order, the journaled
request for a client id, fills since a run, the gold model); how it becomes
SQL is ``daemon.store.tables`` and when it reaches the disk is the writer's
(``daemon.store.writer``). Orders, their state changes, fills and state flags
go through ``Writer.commit``; decisions, equity snapshots, rejections and
risk events are buffered and written by ``flush``.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import aiosqlite

from brokers.base import ZERO, Fill, OrderRequest, OrderStatus, OrderType, Side, TimeInForce
from brokers.errors import StoreError
from daemon.store import tables
from daemon.store.rows import (
    BarRejection,
    BookedFill,
    ClosedTradeLike,
    DecisionRow,
    EquitySnapshot,
    JournaledOrder,
    ModelEntry,
    ModelEvaluation,
    OutboxAlert,
    Promotion,
    ReconciliationRecord,
    RiskEvent,
    StoredTrade,
)
from daemon.store.schema import configure, ensure_meta, migrate, utc_now
from daemon.store.writer import BatchWriter, LiveWriter, OnLoop, OnThread, Writer, fetch_all

Synchronous = Literal["full", "normal"]
LOCK_WAIT_SECONDS = 5.0  # how long a write waits for another connection's write lock (sqlite3's default)

CYCLE_COLUMNS: tuple[str, ...] = (
    "cycle", "ts", "timesteps", "hold_rate_target", "selection_metric", "selection_value", "improvement", "sharpe",
    "max_drawdown_pct", "trades_per_day", "hold_rate", "return_pct", "parameter_drift", "gates_passed",
    "gates_total", "gates_failed", "model_sha256", "checkpoint",
)  # fmt: skip
"""The columns of a ``cycle_metrics`` row (schema migration 6) besides its id and run."""

TUNE_COLUMNS: tuple[str, ...] = (
    "trial", "ts", "params", "status", "error", "train_run_id", "cycles", "timesteps", "sharpe", "return_pct",
    "max_drawdown_pct", "trades_per_day", "hold_rate", "gates_passed", "gates_total", "gates_failed", "model_sha256",
    "model_path", "best",
)  # fmt: skip
"""The columns of a ``tune_trials`` row (schema migration 8) besides its id and search run."""

_TERMINAL = tuple(status.value for status in OrderStatus if status.is_terminal)


class Store:
    """One SQLite database file (WAL) and the writer chosen for it when it was opened."""

    def __init__(self, writer: Writer, path: Path, instance_id: str) -> None:
        self._writer = writer
        self.path = path
        self.instance_id = instance_id
        self.run_id = 0

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        batched: bool = False,
        synchronous: Synchronous = "full",
        flush_rows: int = 4096,
        instance_id: str | None = None,
    ) -> Store:
        """Open (creating and migrating) the database with its writer.

        ``batched`` (backtests): ``BatchWriter``, no fsyncs. Otherwise a
        ``LiveWriter`` whose commits are durable per ``synchronous``: with
        ``full`` (an fsync per commit) SQLite runs on aiosqlite's thread so the
        loop never waits on the disk; with ``normal`` a commit costs less than
        that thread hop and runs on the loop. ``instance_id`` fixes the
        client-order-id prefix of a new database (backtests use a constant so
        that two runs journal identical ids); a live database gets a random one
        once, at creation, and keeps it.
        """
        db_path = Path(path)
        on_thread = not batched and synchronous == "full"
        runner: OnLoop | OnThread
        try:
            if str(db_path) != ":memory:":
                db_path.parent.mkdir(parents=True, exist_ok=True)
            if on_thread:
                runner = OnThread(await aiosqlite.connect(str(db_path), isolation_level=None))
            else:
                runner = _connect_on_loop(db_path, wait_in_sqlite=batched)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"{db_path}: cannot open the store: {exc}") from None
        try:
            await runner.run(configure, "off" if batched else synchronous)
            if not batched:
                # a checkpoint copies the WAL and fsyncs: never inside an order's commit (see LiveWriter)
                await runner.run(fetch_all, "PRAGMA wal_autocheckpoint=0", ())
            await runner.run(migrate, db_path)
            meta = await runner.run(ensure_meta, instance_id or secrets.token_hex(3))
            ((last_decision,),) = await runner.run(fetch_all, "SELECT COALESCE(MAX(id), 0) FROM decisions", ())
            writer: Writer
            if isinstance(runner, OnLoop) and batched:
                writer = BatchWriter(runner.conn, flush_rows=flush_rows, first_decision_id=int(last_decision) + 1)
            else:
                writer = LiveWriter(runner, db_path, flush_rows=flush_rows, first_decision_id=int(last_decision) + 1,
                                    fsyncs=on_thread)
        except sqlite3.DatabaseError as exc:
            await runner.close()
            raise StoreError(f"{db_path}: not a usable tradectl database: {exc}") from None
        except BaseException:
            await runner.close()  # an open aiosqlite connection keeps a non-daemon thread alive
            raise
        return cls(writer, db_path, meta["instance_id"])

    async def close(self) -> None:
        await self._writer.close()

    def together(self) -> AbstractAsyncContextManager[None]:
        """Commits this task makes inside the scope are committed as one transaction when it ends.

        A broker report's consequences (the fill, the trade it closes, the
        order's new state) then cost one fsync instead of three, and land on
        disk together. Order journals are exempt: they are committed at once.
        """
        return self._writer.together()

    async def flush(self) -> None:
        """Write the buffered rows (live: at most ``store.flush_seconds`` after they were added)."""
        await self._writer.flush()

    @property
    def should_flush(self) -> bool:
        return self._writer.should_flush

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """Fold the WAL into the database off the commit path: (busy, wal pages, pages checkpointed), or
        None where SQLite does it by itself (backtests)."""
        return await self._writer.checkpoint()

    async def schema_version(self) -> int:
        ((version,),) = await self._writer.fetch("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        return int(version)

    # ------------------------------------------------------------------ runs
    async def begin_run(self, mode: str, fingerprint: str, config: dict[str, Any]) -> int:
        await self._writer.commit([(
            "INSERT INTO runs (mode, started_at, config_fingerprint, config) VALUES (?,?,?,?)",
            (mode, utc_now(), fingerprint, json.dumps(config, sort_keys=True)),
            False,
        )])
        ((run_id,),) = await self._writer.fetch("SELECT COALESCE(MAX(id), 0) FROM runs")
        self.run_id = int(run_id)
        return self.run_id

    async def end_run(self, summary: dict[str, Any]) -> None:
        await self._writer.flush(final=True)
        await self._writer.commit([(
            "UPDATE runs SET ended_at = ?, summary = ? WHERE id = ?",
            (utc_now(), json.dumps(summary, sort_keys=True, default=str), self.run_id),
            False,
        )])

    # ------------------------------------------------------------------ the order journal (committed)
    async def order_sequence(self) -> int:
        rows = await self._writer.fetch("SELECT value FROM meta WHERE key = 'order_seq'")
        return int(rows[0][0]) if rows else 0

    async def journal_order(
        self, client_order_id: str, sequence: int, request: OrderRequest, *, decision_id: int | None, ts: int
    ) -> None:
        """A NEW order and the id sequence, in one transaction: committed before the broker sees the order.

        Only the order's own rows: buffered decisions and snapshots are left to
        the next flush, so a burst of them never sits between a decision and
        the broker (an order row may therefore precede its decision row on
        disk by up to one flush interval).
        """
        await self._writer.commit([
            (tables.ORDER_SQL, tables.order_params(client_order_id, self.run_id, request, decision_id, ts), False),
            (tables.ORDER_EVENT_SQL, (client_order_id, ts, None, OrderStatus.NEW.value, "journaled"), False),
            (tables.ORDER_SEQUENCE_SQL, (str(sequence),), False),
        ], now=True)

    async def update_order(
        self,
        client_order_id: str,
        *,
        from_status: OrderStatus,
        to_status: OrderStatus,
        ts: int,
        broker_order_id: str | None = None,
        filled_quantity: Decimal | None = None,
        average_price: Decimal | None = None,
        message: str = "",
    ) -> None:
        """An order's state change and its event row, in one transaction."""
        update = tables.order_update_params(
            client_order_id, to_status, ts, message, broker_order_id, filled_quantity, average_price
        )
        event = (client_order_id, ts, from_status.value, to_status.value, message)
        await self._writer.commit([(tables.ORDER_UPDATE_SQL, update, False), (tables.ORDER_EVENT_SQL, event, False)])

    async def open_orders(self) -> list[JournaledOrder]:
        """Every journaled order not yet in a terminal state, oldest first."""
        marks = ",".join("?" * len(_TERMINAL))
        rows = await self._writer.fetch(
            "SELECT client_order_id, symbol, side, quantity, status, filled_quantity, average_price,"
            f" broker_order_id, created_ts, reason FROM orders WHERE status NOT IN ({marks})"
            " ORDER BY created_ts, client_order_id",
            _TERMINAL,
        )
        return [
            JournaledOrder(
                r[0], r[1], r[2], Decimal(r[3]), OrderStatus(r[4]), Decimal(r[5]),
                Decimal(r[6]) if r[6] is not None else None, r[7], int(r[8]), r[9],
            )
            for r in rows
        ]

    async def journaled_request(self, client_order_id: str) -> OrderRequest | None:
        """The order as journaled for a client id (type, limit, time in force), or None if never journaled."""
        rows = await self._writer.fetch(
            "SELECT symbol, side, quantity, order_type, limit_price, time_in_force, reason FROM orders"
            " WHERE client_order_id = ?",
            (client_order_id,),
        )
        if not rows:
            return None
        symbol, side, quantity, order_type, limit_price, tif, reason = rows[0]
        return OrderRequest(
            symbol, Side(side), Decimal(quantity), OrderType(order_type),
            Decimal(limit_price) if limit_price is not None else None, TimeInForce(tif), reason,
        )

    # ------------------------------------------------------------------ fills and trades (committed)
    async def record_fill(self, fill: Fill, realized_pnl: Decimal) -> bool:
        """Store a fill once. Returns False when its fill id is already stored."""
        return await self._writer.insert_fill(fill.fill_id, tables.fill_params(self.run_id, fill, realized_pnl))

    async def has_fill(self, fill_id: str) -> bool:
        return await self._writer.has_fill(fill_id)

    async def fill_fee(self, fill_id: str) -> Decimal | None:
        """The fee stored with a fill (None when no such fill is stored)."""
        rows = await self._writer.fetch("SELECT fee FROM fills WHERE fill_id = ?", (fill_id,))
        return Decimal(rows[0][0]) if rows else None

    async def correct_fill_fee(self, fill_id: str, fee: Decimal) -> None:
        """The venue's final fee for a stored fill (its commission report came after the fill)."""
        await self._writer.commit([("UPDATE fills SET fee = ? WHERE fill_id = ?", (str(fee), fill_id), False)])

    async def filled_for_order(self, client_order_id: str) -> tuple[Decimal, Decimal | None]:
        """The quantity stored fills gave one order, and their average price (None when nothing filled)."""
        rows = await self._writer.fetch(
            "SELECT quantity, price FROM fills WHERE client_order_id = ?", (client_order_id,)
        )
        quantity = value = ZERO
        for q, p in rows:
            quantity += Decimal(q)
            value += Decimal(q) * Decimal(p)
        return quantity, (value / quantity if quantity else None)

    async def fills_since(self, run_id: int) -> list[BookedFill]:
        """Every fill stored since run ``run_id``, in booking order, with its order's reason."""
        rows = await self._writer.fetch(
            "SELECT f.fill_id, f.client_order_id, f.symbol, f.side, f.quantity, f.price, f.fee, f.ts,"
            " COALESCE(o.reason, '') FROM fills f LEFT JOIN orders o ON o.client_order_id = f.client_order_id"
            " WHERE f.run_id >= ? ORDER BY f.rowid",
            (run_id,),
        )
        return [
            BookedFill(Fill(r[0], r[1], r[2], Side(r[3]), Decimal(r[4]), Decimal(r[5]), Decimal(r[6]), int(r[7])),
                       r[8])
            for r in rows
        ]

    async def record_trade(self, trade: ClosedTradeLike) -> None:
        await self._writer.commit([(tables.TRADE_SQL, tables.trade_params(self.run_id, trade), False)])

    async def recent_trades(self, limit: int) -> list[StoredTrade]:
        """The last ``limit`` closed trades (any run), newest first."""
        rows = await self._writer.fetch(
            "SELECT symbol, direction, quantity, exit_ts, entry_price, exit_price, pnl FROM trades"
            " ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [StoredTrade(r[0], int(r[1]), Decimal(r[2]), int(r[3]), Decimal(r[4]), Decimal(r[5]), Decimal(r[6]))
                for r in rows]

    # ------------------------------------------------------------------ buffered rows
    def next_decision_id(self) -> int:
        """An id for a decision about to cause an order (the order row refers to it)."""
        return self._writer.next_decision_id()

    def record_decision(self, row: DecisionRow) -> int:
        """Buffer one decision; returns its id."""
        return self._writer.add_decision(self.run_id, row)

    def record_equity(self, row: EquitySnapshot) -> None:
        self._writer.add_equity(self.run_id, row)

    def record_rejection(self, row: BarRejection) -> None:
        self._writer.add_rejection(self.run_id, row)

    def record_risk_event(self, row: RiskEvent) -> None:
        self._writer.add_risk_event(self.run_id, row)

    # ------------------------------------------------------------------ state flags and recurrent memory
    async def get_state(self, key: str) -> str | None:
        rows = await self._writer.fetch("SELECT value FROM state WHERE key = ?", (key,))
        return None if not rows else str(rows[0][0])

    async def set_state(self, key: str, value: str, ts: int) -> None:
        await self._writer.commit([(
            "INSERT INTO state (key, value, updated_ts) VALUES (?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_ts = excluded.updated_ts",
            (key, value, ts),
            False,
        )])

    async def save_blob(self, symbol: str, model_sha256: str, ts: int, state: bytes) -> None:
        await self._writer.commit([(
            "INSERT INTO recurrent_states (symbol, model_sha256, ts, state) VALUES (?,?,?,?)"
            " ON CONFLICT(symbol) DO UPDATE SET model_sha256 = excluded.model_sha256, ts = excluded.ts,"
            " state = excluded.state",
            (symbol, model_sha256, ts, state),
            False,
        )])

    async def load_blobs(self) -> list[tuple[str, str, int, bytes]]:
        rows = await self._writer.fetch("SELECT symbol, model_sha256, ts, state FROM recurrent_states")
        return [(r[0], r[1], int(r[2]), bytes(r[3])) for r in rows]

    # ------------------------------------------------------------------ the model registry
    async def register_model(
        self, sha256: str, path: Path, feature_hash: str, metrics: Mapping[str, Any], *, gold: bool, ts: int
    ) -> None:
        """Record a model file (its SHA-256 already checked); ``gold`` makes it the only gold model."""
        upsert = (
            "INSERT INTO model_registry (sha256, path, feature_hash, metrics, is_gold, registered_ts)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT(sha256) DO UPDATE SET path = excluded.path,"
            " is_gold = MAX(model_registry.is_gold, excluded.is_gold)",
            (sha256, str(path), feature_hash, json.dumps(dict(metrics), sort_keys=True, default=str), int(gold), ts),
            False,
        )
        clear_gold = ("UPDATE model_registry SET is_gold = 0 WHERE is_gold = 1", (), False)
        await self._writer.commit([clear_gold, upsert] if gold else [upsert])

    async def gold_model(self) -> ModelEntry | None:
        models = [m for m in await self.models() if m.gold]
        return models[0] if models else None

    async def models(self) -> list[ModelEntry]:
        """Every registered model, in registration order."""
        rows = await self._writer.fetch(
            "SELECT sha256, path, feature_hash, is_gold, is_production, registered_ts FROM model_registry"
            " ORDER BY registered_ts, sha256"
        )
        return [ModelEntry(r[0], Path(r[1]), r[2], bool(r[3]), bool(r[4]), int(r[5])) for r in rows]

    # ------------------------------------------------------------------ training cycles (committed)
    async def record_cycle(self, run_id: int, row: Mapping[str, Any]) -> None:
        """One finished training cycle (``CYCLE_COLUMNS``); a second row for the same cycle is refused."""
        missing = [c for c in CYCLE_COLUMNS if c not in row]
        if missing:
            raise StoreError(f"cycle row lacks {', '.join(missing)}")
        marks = ",".join("?" * (len(CYCLE_COLUMNS) + 1))
        sql = f"INSERT INTO cycle_metrics (run_id, {', '.join(CYCLE_COLUMNS)}) VALUES ({marks})"
        try:
            await self._writer.commit([(sql, (run_id, *(row[c] for c in CYCLE_COLUMNS)), False)])
        except sqlite3.IntegrityError:
            raise StoreError(f"training run {run_id}: cycle {row['cycle']} is already recorded") from None

    async def cycles(self, run_id: int) -> list[dict[str, Any]]:
        """A training run's cycle rows, first cycle first."""
        rows = await self._writer.fetch(
            f"SELECT {', '.join(CYCLE_COLUMNS)} FROM cycle_metrics WHERE run_id = ? ORDER BY cycle", (run_id,)
        )
        return [dict(zip(CYCLE_COLUMNS, r, strict=True)) for r in rows]

    async def record_tune_trials(self, run_id: int, rows: Sequence[Mapping[str, Any]]) -> None:
        """Every trial of one hyperparameter search (``TUNE_COLUMNS``), in one transaction."""
        for row in rows:
            missing = [c for c in TUNE_COLUMNS if c not in row]
            if missing:
                raise StoreError(f"tune trial row lacks {', '.join(missing)}")
        marks = ",".join("?" * (len(TUNE_COLUMNS) + 1))
        sql = f"INSERT INTO tune_trials (run_id, {', '.join(TUNE_COLUMNS)}) VALUES ({marks})"
        await self._writer.commit([(sql, [(run_id, *(r[c] for c in TUNE_COLUMNS)) for r in rows], True)])

    async def tune_trials(self, run_id: int) -> list[dict[str, Any]]:
        """One search's trial rows, in trial order."""
        rows = await self._writer.fetch(
            f"SELECT {', '.join(TUNE_COLUMNS)} FROM tune_trials WHERE run_id = ? ORDER BY trial", (run_id,)
        )
        return [dict(zip(TUNE_COLUMNS, r, strict=True)) for r in rows]

    async def production_model(self) -> ModelEntry | None:
        models = [m for m in await self.models() if m.production]
        return models[0] if models else None

    async def record_promotion(self, row: Promotion) -> None:
        """Make ``row.sha256`` the only production model and record why, in one transaction."""
        await self._writer.commit([
            ("UPDATE model_registry SET is_production = 0 WHERE is_production = 1", (), False),
            ("UPDATE model_registry SET is_production = 1 WHERE sha256 = ?", (row.sha256,), False),
            (
                "INSERT INTO model_promotions (ts, action, sha256, previous_sha256, forced, reason, who, evidence)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (row.ts, row.action, row.sha256, row.previous_sha256, int(row.forced), row.reason, row.who,
                 json.dumps(row.evidence, sort_keys=True, default=str)),
                False,
            ),
        ])

    async def promotions(self) -> list[Promotion]:
        """Every change of the production model, oldest first."""
        rows = await self._writer.fetch(
            "SELECT id, ts, action, sha256, previous_sha256, forced, reason, who, evidence FROM model_promotions"
            " ORDER BY id"
        )
        return [Promotion(int(r[0]), int(r[1]), r[2], r[3], r[4], bool(r[5]), r[6], r[7], json.loads(r[8]))
                for r in rows]

    async def record_evaluation(self, row: ModelEvaluation) -> None:
        await self._writer.commit([(
            "INSERT INTO model_evaluations (sha256, kind, ts, passed, reference_sha256, summary) VALUES (?,?,?,?,?,?)",
            (row.sha256, row.kind, row.ts, int(row.passed), row.reference_sha256,
             json.dumps(row.summary, sort_keys=True, default=str)),
            False,
        )])

    async def latest_evaluation(self, sha256: str, kind: str) -> ModelEvaluation | None:
        """The newest recorded judgement of one kind for a model, or None."""
        rows = await self._writer.fetch(
            "SELECT sha256, kind, ts, passed, reference_sha256, summary FROM model_evaluations"
            " WHERE sha256 = ? AND kind = ? ORDER BY id DESC LIMIT 1",
            (sha256, kind),
        )
        if not rows:
            return None
        r = rows[0]
        return ModelEvaluation(r[0], r[1], int(r[2]), bool(r[3]), r[4], json.loads(r[5]))

    async def record_drift(
        self, ts: int, candidate: str, reference: str, relative_l2: float, limit: float, reason: str
    ) -> None:
        """A policy's parameter drift beyond its limit (``parameter_drift_log``)."""
        await self._writer.commit([(
            "INSERT INTO parameter_drift_log (ts, parameter, old_value, new_value, reason, relative_l2, drift_limit)"
            " VALUES (?,?,?,?,?,?,?)",
            (ts, "policy", reference, candidate, reason, relative_l2, limit),
            False,
        )])

    # ------------------------------------------------------------------ reconciliation audit
    async def record_reconciliation(self, record: ReconciliationRecord) -> None:
        await self._writer.commit([(tables.RECONCILIATION_SQL, tables.reconciliation_params(record), False)])

    # ------------------------------------------------------------------ the alert outbox (committed)
    async def enqueue_alert(self, dedup_key: str, kind: str, text: str, created_at: float, *, limit: int) -> None:
        """Queue an operator alert once per ``dedup_key``; beyond ``limit`` pending the oldest are dropped."""
        await self._writer.commit([
            (tables.ALERT_ENQUEUE_SQL, (dedup_key, kind, text, created_at), False),
            (tables.ALERT_DROP_OVER_LIMIT_SQL, (created_at, limit), False),
        ])

    async def pending_alerts(self, limit: int) -> list[OutboxAlert]:
        """The oldest undelivered alerts, in the order they were queued."""
        rows = await self._writer.fetch(tables.ALERT_PENDING_SQL, (limit,))
        return [
            OutboxAlert(int(r[0]), r[1], r[2], r[3], float(r[4]), int(r[5]),
                        frozenset(int(c) for c in r[6].split(",") if c))
            for r in rows
        ]

    async def pending_alert_count(self) -> int:
        ((count,),) = await self._writer.fetch("SELECT COUNT(*) FROM alert_outbox WHERE status = 'pending'")
        return int(count)

    async def alert_progress(self, alert_id: int, delivered_to: Iterable[int]) -> None:
        """One more delivery attempt, and the chats that have the alert so far."""
        chats = ",".join(str(c) for c in sorted(delivered_to))
        await self._writer.commit([(tables.ALERT_PROGRESS_SQL, (chats, alert_id), False)])

    async def finish_alerts(self, alert_ids: Sequence[int], status: str, done_at: float) -> None:
        """Mark alerts ``sent`` or ``summarised`` (a pending alert only: finishing twice changes nothing)."""
        await self._writer.commit([(tables.ALERT_DONE_SQL, (status, done_at, i), False) for i in alert_ids])

    async def summarise_alerts(self, folded: Sequence[int], carrier: int, text: str, done_at: float) -> None:
        """Fold a backlog in one transaction: ``folded`` are done as summarised and the ``carrier`` (the newest
        of them, so the order holds) now says ``text`` and is delivered in their place."""
        ops: list[tuple[str, Sequence[Any], bool]] = [
            (tables.ALERT_DONE_SQL, ("summarised", done_at, i), False) for i in folded
        ]
        ops.append((tables.ALERT_CARRY_SQL, (text, carrier), False))
        await self._writer.commit(ops)

    async def alert_status_counts(self) -> dict[str, int]:
        rows = await self._writer.fetch("SELECT status, COUNT(*) FROM alert_outbox GROUP BY status")
        return {str(r[0]): int(r[1]) for r in rows}

    # ------------------------------------------------------------------ reading (reports, tests)
    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only SQL for reports and tests."""
        return await self._writer.fetch(sql, tuple(params))

    async def order_journal_text(self) -> str:
        """A canonical dump of orders, their events and fills (used to compare runs)."""
        lines: list[str] = []
        for table, order in (("orders", "client_order_id"), ("order_events", "id"), ("fills", "fill_id")):
            rows: Sequence[tuple[Any, ...]] = await self._writer.fetch(f"SELECT * FROM {table} ORDER BY {order}")
            lines.extend(f"{table}\t" + "\t".join("" if v is None else str(v) for v in row) for row in rows)
        return "\n".join(lines) + "\n"


def _connect_on_loop(db_path: Path, *, wait_in_sqlite: bool) -> OnLoop:
    """A batched writer (a backtest: no loop to keep free) lets SQLite wait for a lock; a live one waits on
    the loop (see ``OnLoop``)."""
    if wait_in_sqlite:
        return OnLoop(sqlite3.connect(str(db_path), isolation_level=None, timeout=LOCK_WAIT_SECONDS))
    return OnLoop(sqlite3.connect(str(db_path), isolation_level=None, timeout=0), busy_seconds=LOCK_WAIT_SECONDS)
