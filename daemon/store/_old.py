"""The SQLite store: the daemon's memory and its audit trail.

Two write paths, chosen by what a loss would cost:

* **Committed at once** — orders (journaled *before* they are sent), order
  state changes, fills and state flags. Losing one of these could duplicate an
  order or lose money, so each call waits for the commit.
* **Buffered** — decisions, equity snapshots, bar rejections, risk events.
  One row per bar would otherwise cost a thread hop per bar; they are written
  in batches at most ``store.flush_seconds`` apart, and never inside an order's
  journal transaction, which stays small because it sits between a decision
  and the broker. (An order row may therefore precede its decision row on disk
  by up to one flush interval.) Repeats of the same plain decision share one
  row with a bar count (``add_decision``).

Where SQLite runs follows what a commit costs. With ``synchronous=full`` a
commit waits for an fsync (milliseconds), so live runs go through aiosqlite's
worker thread and the event loop never waits on the disk. With ``normal`` (WAL)
a commit only appends to the WAL in the page cache (tens of microseconds,
less than the thread hop itself), so it runs inline on the loop and the WAL is
checkpointed, fsyncs included, from a worker thread (``checkpoint``).
Backtests run SQLite inline, their writes queued and executed in
order in one batch transaction per flush (``_Inline``).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from brokers.base import Fill, OrderRequest, OrderStatus
from brokers.errors import StoreError
from daemon.migrations import LATEST_VERSION, MIGRATIONS

_DECISION_SQL = (
    "INSERT INTO decisions (id, run_id, symbol, ts, action, confidence, probabilities, reason, verdict,"
    " verdict_layer, verdict_reason, order_quantity, client_order_id, extras, bars, last_ts)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_PROBABILITIES_JSON = json.JSONEncoder()
_EXTRAS_JSON = json.JSONEncoder(sort_keys=True, default=str)
# where a buffered decisions row keeps its probabilities and extras until it is written
_D_PROBABILITIES, _D_EXTRAS = 6, 13


def _probabilities_json(values: Sequence[float]) -> str:
    """``json.dumps`` of a sequence of floats without the encoder's per-call set-up."""
    if all(map(math.isfinite, values)):
        return "[" + ", ".join(map(float.__repr__, values)) + "]"  # json writes floats with repr
    return _PROBABILITIES_JSON.encode(values)  # NaN/Infinity spelled the way json spells them


def _encoded_decision(row: tuple[Any, ...]) -> tuple[Any, ...]:
    probabilities, extras = row[_D_PROBABILITIES], row[_D_EXTRAS]
    if probabilities is None and extras is None:
        return row
    return (
        *row[:_D_PROBABILITIES],
        None if probabilities is None else _probabilities_json(probabilities),
        *row[_D_PROBABILITIES + 1 : _D_EXTRAS],
        _EXTRAS_JSON.encode(extras) if extras else None,
        *row[_D_EXTRAS + 1 :],
    )


# where a decision run's bar count and last timestamp sit in a buffered decisions row
_RUN_BARS, _RUN_LAST_TS = 14, 15
_EQUITY_SQL = (
    "INSERT INTO equity_snapshots (run_id, ts, equity, cash, realized_pnl, unrealized_pnl) VALUES (?,?,?,?,?,?)"
)
_REJECTION_SQL = "INSERT INTO bar_rejections (run_id, ts, symbol, reason, detail) VALUES (?,?,?,?,?)"
_ORDER_SQL = (
    "INSERT INTO orders (client_order_id, run_id, symbol, side, quantity, order_type, limit_price, time_in_force,"
    " status, broker_order_id, filled_quantity, average_price, reason, decision_id, created_ts, updated_ts, message)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_ORDER_UPDATE_SQL = (
    "UPDATE orders SET status = ?, updated_ts = ?, message = ?,"
    " broker_order_id = COALESCE(?, broker_order_id),"
    " filled_quantity = COALESCE(?, filled_quantity),"
    " average_price = COALESCE(?, average_price) WHERE client_order_id = ?"
)
_SEQ_SQL = "UPDATE meta SET value = ? WHERE key = 'order_seq'"
_FILL_SQL = (
    "INSERT OR IGNORE INTO fills (fill_id, client_order_id, run_id, symbol, side, quantity, price,"
    " fee, ts, realized_pnl) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
_TRADE_SQL = (
    "INSERT INTO trades (run_id, symbol, direction, quantity, entry_ts, exit_ts, entry_price, exit_price,"
    " fees, pnl, entry_reason, exit_reason) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
)
# positions in an orders row (_ORDER_SQL's column order)
_O_STATUS, _O_BROKER_ID, _O_FILLED, _O_AVERAGE, _O_UPDATED, _O_MESSAGE = 8, 9, 10, 11, 15, 16
_EVENT_SQL = "INSERT INTO order_events (client_order_id, ts, from_status, to_status, message) VALUES (?,?,?,?,?)"
_RISK_SQL = (
    "INSERT INTO risk_events (run_id, ts, symbol, layer, kind, reason, message) VALUES (?,?,?,?,?,?,?)"
)


@dataclass(frozen=True, slots=True)
class OrderRow:
    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    status: OrderStatus
    filled_quantity: Decimal
    average_price: Decimal | None
    broker_order_id: str | None
    created_ts: int
    reason: str


_T = TypeVar("_T")

# (sql, parameters, executemany?)
_Op = tuple[str, Sequence[Any], bool]


def _run_transaction(conn: sqlite3.Connection, ops: list[_Op]) -> list[int]:
    """Executed on the database thread: all of ``ops`` or none of them."""
    return _all_or_nothing(conn, ops, ("BEGIN IMMEDIATE", "COMMIT", ("ROLLBACK",)))


def _all_or_nothing(conn: sqlite3.Connection, ops: list[_Op], frame: tuple[str, str, tuple[str, ...]]) -> list[int]:
    begin, commit, undo = frame
    counts = []
    conn.execute(begin)
    try:
        for sql, params, many in ops:
            cursor = conn.executemany(sql, params) if many else conn.execute(sql, params)
            counts.append(cursor.rowcount)
    except BaseException:
        for statement in undo:
            conn.execute(statement)
        raise
    conn.execute(commit)
    return counts


def _utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _dec(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class _Backend(Protocol):
    """Where SQLite calls run. Every call is a plain function of the connection."""

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T: ...

    async def close(self) -> None: ...


class _WorkerThread:
    """Live runs: every call goes to aiosqlite's worker thread, so the loop never waits on disk.

    aiosqlite's public API costs a thread hop per statement; an order journal
    write is several statements, so the worker is handed one function per
    transaction instead (``Connection._execute`` is the hook aiosqlite itself
    uses for each of its calls).
    """

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await self._db._execute(fn, self._db._conn, *args)

    async def close(self) -> None:
        await self._db.close()


class _Inline:
    """Backtests: calls run right here, and writes are deferred to one transaction per flush.

    A replay has nothing else for the loop to serve, a thread hop per order
    would cost more than the order's SQL, and a backtest interrupted half way
    is simply run again, so per-order durability buys nothing. Writes are
    therefore queued (write-behind) and executed at the next flush or before
    the next read, so every read sees every earlier write. Queued statements
    run in their original order; the order journal's rows are grouped per
    table by ``_JournalBuffer``, and either way the tables end up as a live
    run's (a test compares them). A write that fails there fails the whole
    batch (rolled back) with a ``StoreError``.
    """

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self.batching = False
        self._deferred: list[_Op] = []

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return fn(self._conn, *args)

    def begin_batch(self) -> None:
        self._conn.execute("BEGIN IMMEDIATE")
        self.batching = True

    def defer(self, ops: list[_Op]) -> None:
        self._deferred.extend(ops)

    def apply_deferred(self) -> None:
        """Execute the queued writes, in order, inside the open batch transaction."""
        ops = self._deferred
        if not ops:
            return
        self._deferred = []
        conn = self._conn
        try:
            for sql, params, many in ops:
                if many:
                    conn.executemany(sql, params)
                else:
                    conn.execute(sql, params)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            self.batching = False
            raise StoreError(f"backtest store write failed, batch rolled back: {exc}") from exc

    def commit_batch(self) -> None:
        if self.batching:
            self.apply_deferred()
            self._conn.execute("COMMIT")
            self._conn.execute("BEGIN IMMEDIATE")

    async def close(self) -> None:
        if self.batching:
            self.apply_deferred()
            self._conn.execute("COMMIT")
            self.batching = False
        self._conn.close()


def _fetchall_sync(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def _checkpoint_sync(path: str) -> tuple[int, int, int]:
    """A PASSIVE checkpoint from its own connection: copies WAL pages into the database without blocking writers."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(log_pages), int(done)
    finally:
        conn.close()


def _configure(conn: sqlite3.Connection, synchronous: str) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit survives power loss; NORMAL: a killed process. Backtests (re-runnable) skip fsyncs.
    if synchronous not in ("FULL", "NORMAL", "OFF"):
        raise StoreError(f"unknown synchronous mode {synchronous!r}")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA foreign_keys=ON")


def _migrate(conn: sqlite3.Connection, path: Path) -> None:
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at TEXT)"
    )
    current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_migrations").fetchone()[0])
    if current > LATEST_VERSION:
        raise StoreError(f"{path}: schema version {current} is newer than this tradectl ({LATEST_VERSION}); upgrade")
    for version, name, sql in MIGRATIONS:
        if version <= current:
            continue
        statements = [(s.strip(), (), False) for s in sql.split(";") if s.strip()]
        record = "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)"
        statements.append((record, (version, name, _utc_now()), False))
        _run_transaction(conn, statements)


def _ensure_meta(conn: sqlite3.Connection, instance_id: str) -> dict[str, str]:
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    if "instance_id" not in meta:
        _run_transaction(
            conn,
            [
                ("INSERT INTO meta (key, value) VALUES ('instance_id', ?)", (instance_id,), False),
                ("INSERT INTO meta (key, value) VALUES ('order_seq', '0')", (), False),
            ],
        )
        meta = {"instance_id": instance_id, "order_seq": "0"}
    return meta


@dataclass
class _JournalBuffer:
    """A backtest batch's order journal rows, written as a few executemany calls.

    Orders stay rows in memory from their journaling until the batch is
    written, their updates applied to the row exactly as the live UPDATE
    would; events, fills and trades keep their call order, so the tables end
    up as a live run's. Foreign keys hold because orders are written first.
    """

    orders: dict[str, list[Any]] = field(default_factory=dict)
    events: list[tuple[Any, ...]] = field(default_factory=list)
    fills: list[tuple[Any, ...]] = field(default_factory=list)
    trades: list[tuple[Any, ...]] = field(default_factory=list)
    sequence: str | None = None

    def take(self) -> list[_Op]:
        ops: list[_Op] = []
        if self.orders:
            ops.append((_ORDER_SQL, [tuple(row) for row in self.orders.values()], True))
            self.orders = {}
        for sql, rows in ((_EVENT_SQL, self.events), (_FILL_SQL, self.fills), (_TRADE_SQL, self.trades)):
            if rows:
                ops.append((sql, list(rows), True))
                rows.clear()
        if self.sequence is not None:
            ops.append((_SEQ_SQL, (self.sequence,), False))
            self.sequence = None
        return ops


class Store:
    """Async facade over one SQLite database file."""

    def __init__(self, backend: _Backend, path: Path, flush_rows: int) -> None:
        self._backend = backend
        self.path = path
        self._flush_rows = flush_rows
        self._decisions: list[tuple[Any, ...]] = []
        # per symbol: the open run of identical plain decisions, written when it ends (see add_decision)
        self._runs: dict[str, list[Any]] = {}
        self._equity: list[tuple[Any, ...]] = []
        self._rejections: list[tuple[Any, ...]] = []
        self._risk: list[tuple[Any, ...]] = []
        self._pending = 0
        self._next_decision_id = 1
        self.run_id = 0
        self.instance_id = ""
        # One connection, many coroutines: a transaction must not interleave with
        # another coroutine's, so every write holds this lock.
        self._lock = asyncio.Lock()
        self._batch: _Inline | None = None
        # backtest batch only: journal rows waiting for the batch write, and every fill id this store wrote
        self._journal = _JournalBuffer()
        self._batch_fills: set[str] = set()
        self._fills_empty_at_open = False
        self.manual_checkpoints = False

    async def _commit(self, ops: list[_Op]) -> list[int]:
        """Run ``ops`` as one transaction (one trip to the database thread). Returns each op's rowcount.

        In a backtest batch the ops are queued instead (see ``_Inline``) and reported as applied.
        """
        batch = self._batch
        if batch is not None:
            batch.defer(ops)  # no await: nothing can interleave with the queueing
            return [1] * len(ops)
        async with self._lock:
            return await self._backend.run(_run_transaction, ops)

    # ------------------------------------------------------------------ open/close
    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        flush_rows: int = 4096,
        instance_id: str | None = None,
        durable: bool = True,
        inline: bool = False,
        synchronous: str = "full",
        batch: bool | None = None,
    ) -> Store:
        """Open (creating and migrating) the database.

        ``instance_id`` fixes the client-order-id prefix for a new database
        (backtests use a constant so that two runs journal identical ids); a
        live database gets a random one once, at creation, and keeps it.
        ``inline`` runs SQLite on the calling thread: backtests (``batch``,
        the default when also not ``durable``: writes deferred to one transaction
        per flush) and live runs with ``synchronous="normal"`` (each
        transaction committed at once; automatic checkpoints move off the loop,
        see ``checkpoint``).
        """
        batch = (inline and not durable) if batch is None else batch
        if batch and not inline:
            raise StoreError("a batched store runs inline")
        db_path = Path(path)
        if str(db_path) != ":memory:":
            db_path.parent.mkdir(parents=True, exist_ok=True)
        backend: _Backend
        if inline:
            backend = _Inline(sqlite3.connect(str(db_path), isolation_level=None))
        else:
            backend = _WorkerThread(await aiosqlite.connect(str(db_path), isolation_level=None))
        try:
            await backend.run(_configure, synchronous.upper() if durable else "OFF")
            if inline and not batch:
                # a checkpoint fsyncs: never on the loop thread, the daemon calls checkpoint() instead
                await backend.run(_fetchall_sync, "PRAGMA wal_autocheckpoint=0", ())
            await backend.run(_migrate, db_path)
            meta = await backend.run(_ensure_meta, instance_id or secrets.token_hex(3))
            store = cls(backend, db_path, flush_rows)
            store.manual_checkpoints = inline and not batch
            store.instance_id = meta["instance_id"]
            if isinstance(backend, _Inline) and batch:
                store._fills_empty_at_open = not await store._fetchall("SELECT 1 FROM fills LIMIT 1")
                backend.begin_batch()
                store._batch = backend
            row = await store._fetchone("SELECT COALESCE(MAX(id), 0) FROM decisions")
            store._next_decision_id = int(row[0]) + 1 if row else 1
        except sqlite3.DatabaseError as exc:
            await backend.close()
            raise StoreError(f"{db_path}: not a usable tradectl database: {exc}") from None
        except BaseException:
            # an open aiosqlite connection keeps a non-daemon thread alive: close it
            await backend.close()
            raise
        return store

    async def close(self) -> None:
        self._end_runs()
        await self.flush()
        await self._backend.close()

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """Fold the WAL into the database from a worker thread (inline live stores only).

        Returns SQLite's (busy, wal pages, pages checkpointed), or None when
        this store checkpoints automatically.
        """
        if not self.manual_checkpoints or str(self.path) == ":memory:":
            return None
        return await asyncio.to_thread(_checkpoint_sync, str(self.path))

    async def schema_version(self) -> int:
        row = await self._fetchone("SELECT MAX(version) FROM schema_migrations")
        return int(row[0]) if row and row[0] is not None else 0

    # ------------------------------------------------------------------ runs
    async def begin_run(self, mode: str, fingerprint: str, config: dict[str, Any]) -> int:
        await self._write(
            "INSERT INTO runs (mode, started_at, config_fingerprint, config) VALUES (?,?,?,?)",
            (mode, _utc_now(), fingerprint, json.dumps(config, sort_keys=True)),
        )
        row = await self._fetchone("SELECT MAX(id) FROM runs")
        self.run_id = int(row[0]) if row else 0
        return self.run_id

    async def end_run(self, summary: dict[str, Any]) -> None:
        self._end_runs()
        await self.flush()
        await self._write(
            "UPDATE runs SET ended_at = ?, summary = ? WHERE id = ?",
            (_utc_now(), json.dumps(summary, sort_keys=True, default=str), self.run_id),
        )

    # ------------------------------------------------------------------ orders (committed)
    async def order_sequence(self) -> int:
        row = await self._fetchone("SELECT value FROM meta WHERE key = 'order_seq'")
        return int(row[0]) if row else 0

    async def journal_order(
        self,
        client_order_id: str,
        sequence: int,
        request: OrderRequest,
        *,
        decision_id: int | None,
        ts: int,
    ) -> None:
        """Write a NEW order and its id sequence in one committed transaction.

        The decision that caused the order is buffered and written with the
        next flush (at most ``store.flush_seconds`` later in a live run).
        """
        # Only the order's own rows: buffered decisions and snapshots are left to the next
        # flush, so a burst of them never sits between a decision and the broker.
        row = [
            client_order_id, self.run_id, request.symbol, request.side.value, str(request.quantity),
            request.order_type.value, _dec(request.limit_price), request.time_in_force.value, OrderStatus.NEW.value,
            None, "0", None, request.reason, decision_id, ts, ts, "",
        ]
        event = (client_order_id, ts, None, OrderStatus.NEW.value, "journaled")
        if self._batch is not None:
            # a backtest keeps the row until the batch is written, applying its updates in memory
            if client_order_id in self._journal.orders:
                raise StoreError(f"order {client_order_id!r} is already journaled")
            self._journal.orders[client_order_id] = row
            self._journal.events.append(event)
            self._journal.sequence = str(sequence)
            return
        await self._commit(
            [(_ORDER_SQL, tuple(row), False), (_EVENT_SQL, event, False), (_SEQ_SQL, (str(sequence),), False)]
        )

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
        event = (client_order_id, ts, from_status.value, to_status.value, message)
        filled, average = _dec(filled_quantity), _dec(average_price)
        if self._batch is not None:
            self._journal.events.append(event)
            row = self._journal.orders.get(client_order_id)
            if row is not None:  # what the UPDATE below does, done to the row before it is written
                row[_O_STATUS], row[_O_UPDATED], row[_O_MESSAGE] = to_status.value, ts, message
                if broker_order_id is not None:
                    row[_O_BROKER_ID] = broker_order_id
                if filled is not None:
                    row[_O_FILLED] = filled
                if average is not None:
                    row[_O_AVERAGE] = average
                return
            self._batch.defer(
                [(_ORDER_UPDATE_SQL, (to_status.value, ts, message, broker_order_id, filled, average,
                                      client_order_id), False)]
            )
            return
        update = (
            _ORDER_UPDATE_SQL,
            (to_status.value, ts, message, broker_order_id, filled, average, client_order_id),
            False,
        )
        await self._commit([update, (_EVENT_SQL, event, False)])

    async def record_fill(self, fill: Fill, realized_pnl: Decimal) -> bool:
        """Store a fill once. Returns False when its fill id is already stored."""
        row = (
            fill.fill_id,
            fill.client_order_id,
            self.run_id,
            fill.symbol,
            fill.side.value,
            str(fill.quantity),
            str(fill.price),
            str(fill.fee),
            fill.ts,
            str(realized_pnl),
        )
        if self._batch is not None:
            if await self.has_fill(fill.fill_id):
                return False
            self._journal.fills.append(row)
            self._batch_fills.add(fill.fill_id)
            return True
        (count,) = await self._commit([(_FILL_SQL, row, False)])
        return count == 1

    async def has_fill(self, fill_id: str) -> bool:
        if self._batch is not None:
            if fill_id in self._batch_fills:
                return True
            if self._fills_empty_at_open:
                return False  # every fill in the table was written by this store, so it is in _batch_fills
        rows = await self._backend.run(_fetchall_sync, "SELECT 1 FROM fills WHERE fill_id = ?", (fill_id,))
        return bool(rows)

    async def record_trade(self, row: Sequence[Any]) -> None:
        if self._batch is not None:
            self._journal.trades.append((self.run_id, *row))
            return
        await self._write(_TRADE_SQL, (self.run_id, *row))

    async def open_orders(self) -> list[OrderRow]:
        terminal = tuple(s.value for s in OrderStatus if s.is_terminal)
        marks = ",".join("?" * len(terminal))
        rows = await self._fetchall(
            "SELECT client_order_id, symbol, side, quantity, status, filled_quantity, average_price,"
            f" broker_order_id, created_ts, reason FROM orders WHERE status NOT IN ({marks})"
            " ORDER BY created_ts, client_order_id",
            terminal,
        )
        return [
            OrderRow(
                r[0], r[1], r[2], Decimal(r[3]), OrderStatus(r[4]), Decimal(r[5]),
                Decimal(r[6]) if r[6] is not None else None, r[7], int(r[8]), r[9],
            )
            for r in rows
        ]

    # ------------------------------------------------------------------ buffered rows
    def next_decision_id(self) -> int:
        decision_id = self._next_decision_id
        self._next_decision_id += 1
        return decision_id

    def add_decision(self, row: tuple[Any, ...]) -> int:
        """Buffer one decision; returns its id.

        ``row`` is the decisions columns without ``run_id`` (and without the run
        columns), its id first: None lets the store number it. Probabilities
        (a tuple of floats) and extras (a dict) are kept as they are and
        written as JSON with the batch: encoding a few thousand of them in one
        go costs less than one at a time between the pipeline's other work. A plain decision
        (no id given, no order, verdict, confidence, probabilities or extras)
        that repeats the previous one of its symbol extends that row's run
        (``bars``, ``last_ts``) instead of adding a row: a rule-based strategy
        says "still long" on almost every bar, and a row per repetition would
        be most of a backtest's writes while adding nothing but a timestamp.
        """
        if (
            row[0] is None and row[4] is None and row[5] is None and row[7] is None and row[8] is None
            and row[9] is None and row[10] is None and row[11] is None and row[12] is None
        ):
            return self.add_plain_decision(row[1], row[2], row[3], row[6])
        self._end_run(row[1])
        decision_id = self.next_decision_id() if row[0] is None else row[0]
        self._decisions.append((decision_id, self.run_id, *row[1:], 1, None))
        self._pending += 1
        return int(decision_id)

    def add_plain_decision(self, symbol: str, ts: int, action: str, reason: str) -> int:
        """A decision with nothing but an action and a reason: it extends its symbol's run when it repeats it."""
        run = self._runs.get(symbol)
        if run is not None:
            if run[4] == action and run[7] == reason:
                run[_RUN_BARS] += 1
                run[_RUN_LAST_TS] = ts
                return int(run[0])
            self._end_run(symbol)
        decision_id = self.next_decision_id()
        self._runs[symbol] = [
            decision_id, self.run_id, symbol, ts, action, None, None, reason, None, None, None, None, None, None, 1,
            None,
        ]
        return decision_id

    def _end_runs(self) -> None:
        for symbol in list(self._runs):
            self._end_run(symbol)

    def _end_run(self, symbol: str) -> None:
        run = self._runs.pop(symbol, None)
        if run is not None:
            self._decisions.append(tuple(run))
            self._pending += 1

    def add_equity(self, ts: int, equity: float, cash: str, realized: str, unrealized: float) -> None:
        """``cash`` and ``realized`` arrive as decimal text (the portfolio keeps it current)."""
        self._equity.append((self.run_id, ts, equity, cash, realized, unrealized))
        self._pending += 1

    def add_rejection(self, ts: int | None, symbol: str, reason: str, detail: str) -> None:
        self._end_run(symbol)  # a run stands for consecutive accepted bars only
        self._rejections.append((self.run_id, ts, symbol, reason, detail))
        self._pending += 1

    def add_risk_event(self, ts: int, symbol: str | None, layer: str, kind: str, reason: str, message: str) -> None:
        self._risk.append((self.run_id, ts, symbol, layer, kind, reason, message))
        self._pending += 1

    @property
    def should_flush(self) -> bool:
        return self._pending >= self._flush_rows

    async def flush(self) -> None:
        """Write the buffered rows.

        Open decision runs are ended (written) too, except in a backtest
        batch, where they stay open until they end by themselves or the run
        does: where a run splits then does not depend on when flushes happen.
        """
        if self._batch is None:
            self._end_runs()
        if self._pending:
            await self._commit(self._take_buffers())
        if self._batch is not None:
            self._batch.defer(self._journal.take())
            self._batch.commit_batch()

    def _take_buffers(self) -> list[_Op]:
        ops: list[_Op] = []
        if self._decisions:
            ops.append((_DECISION_SQL, [_encoded_decision(row) for row in self._decisions], True))
            self._decisions.clear()
        for sql, rows in (
            (_EQUITY_SQL, self._equity),
            (_REJECTION_SQL, self._rejections),
            (_RISK_SQL, self._risk),
        ):
            if rows:
                ops.append((sql, list(rows), True))
                rows.clear()
        self._pending = 0
        return ops

    # ------------------------------------------------------------------ state flags
    async def get_state(self, key: str) -> str | None:
        row = await self._fetchone("SELECT value FROM state WHERE key = ?", (key,))
        return None if row is None else str(row[0])

    async def set_state(self, key: str, value: str, ts: int) -> None:
        await self._write(
            "INSERT INTO state (key, value, updated_ts) VALUES (?,?,?)"
            " ON CONFLICT(key) DO UPDATE SET value = excluded.value, updated_ts = excluded.updated_ts",
            (key, value, ts),
        )

    async def save_blob(self, symbol: str, model_sha256: str, ts: int, state: bytes) -> None:
        await self._write(
            "INSERT INTO recurrent_states (symbol, model_sha256, ts, state) VALUES (?,?,?,?)"
            " ON CONFLICT(symbol) DO UPDATE SET model_sha256 = excluded.model_sha256, ts = excluded.ts,"
            " state = excluded.state",
            (symbol, model_sha256, ts, state),
        )

    async def load_blobs(self) -> list[tuple[str, str, int, bytes]]:
        rows = await self._fetchall("SELECT symbol, model_sha256, ts, state FROM recurrent_states")
        return [(r[0], r[1], int(r[2]), bytes(r[3])) for r in rows]

    # ------------------------------------------------------------------ reading
    async def query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Read-only helper for reports and tests."""
        return await self._fetchall(sql, tuple(params))

    async def order_journal_text(self) -> str:
        """A canonical dump of orders, their events and fills (used to compare runs)."""
        lines: list[str] = []
        for table, order in (
            ("orders", "client_order_id"),
            ("order_events", "id"),
            ("fills", "fill_id"),
        ):
            rows = await self._fetchall(f"SELECT * FROM {table} ORDER BY {order}")
            lines.extend(f"{table}\t" + "\t".join("" if v is None else str(v) for v in row) for row in rows)
        return "\n".join(lines) + "\n"

    async def execute(self, sql: str, params: Sequence[Any] = ()) -> None:
        """One committed write statement (registry and audit writers outside this module)."""
        await self._write(sql, params)

    async def _write(self, sql: str, params: Sequence[Any]) -> None:
        await self._commit([(sql, tuple(params), False)])

    async def _fetchall(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self._batch is not None:  # a read sees every earlier write
            self._batch.defer(self._journal.take())
            self._batch.apply_deferred()
        return await self._backend.run(_fetchall_sync, sql, params)

    async def _fetchone(self, sql: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None
