"""How the store's writes reach the file: one interface, two implementations chosen when the store opens.

* ``LiveWriter`` — **commit before send.** ``commit`` returns once the
  transaction is on disk (with ``synchronous=full``, fsynced), so an order is
  durable before the broker sees it. Everything a bar produces besides orders
  (decisions, equity snapshots, rejections, risk events) is buffered and
  written by ``flush`` in small transactions that yield to any commit waiting
  (see ``LiveWriter`` for why the journal's latency depends on that).
* ``BatchWriter`` — **backtests.** Writes are queued in call order and
  executed in one transaction per flush; reads first execute the queue, so
  every read sees every earlier write. A replay interrupted half way is simply
  run again, so per-order durability would buy nothing; this writer also folds
  runs of identical plain decisions into one row (``decisions.bars``).

Both leave the same rows in the orders, order_events, fills and trades
tables (a test compares them).
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import aiosqlite

from brokers.errors import StoreError
from daemon.store.rows import BarRejection, DecisionRow, EquitySnapshot, RiskEvent
from daemon.store.schema import Op, run_transaction
from daemon.store.tables import (
    DECISION_SQL,
    EQUITY_SQL,
    FILL_EXISTS_SQL,
    FILL_SQL,
    REJECTION_SQL,
    RISK_SQL,
    decision_params,
    equity_params,
    rejection_params,
    risk_params,
)

_T = TypeVar("_T")
Rows = list[tuple[Any, ...]]

# Rows per background transaction of a live flush: a commit that arrives meanwhile waits for one of these.
LIVE_CHUNK_ROWS = 32
# With synchronous=full, flush chunks are committed without an fsync; the WAL is fsynced after this many.
LIVE_SYNC_EVERY_CHUNKS = 8
# A live writer folds the WAL into the database (off the commit path) after this many transactions (a few
# pages each). Counted, not read off the WAL's size: the file keeps its size when SQLite starts it over.
CHECKPOINT_EVERY_TRANSACTIONS = 1000


class Writer(Protocol):
    """What the store asks of its writer; reads go through it too, so a read sees every earlier write."""

    async def commit(self, ops: Sequence[Op], *, now: bool = False) -> None:
        """One all-or-nothing transaction (live: on disk when this returns; batch: queued in order).

        Inside ``together`` a live commit joins that scope's transaction,
        unless ``now``: an order journal is on disk before the broker hears of
        it, whatever scope it is made in.
        """
        ...

    def together(self) -> AbstractAsyncContextManager[None]:
        """Commits this task makes inside the scope become one transaction at its end (one fsync)."""
        ...

    async def insert_fill(self, fill_id: str, params: tuple[Any, ...]) -> bool:
        """Store a fill unless its id is stored already; True when it was new."""
        ...

    async def has_fill(self, fill_id: str) -> bool:
        """Whether a fill with this id is stored (or queued to be)."""
        ...

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...

    def next_decision_id(self) -> int: ...

    def add_decision(self, run_id: int, row: DecisionRow) -> int: ...

    def add_equity(self, run_id: int, row: EquitySnapshot) -> None: ...

    def add_rejection(self, run_id: int, row: BarRejection) -> None: ...

    def add_risk_event(self, run_id: int, row: RiskEvent) -> None: ...

    @property
    def should_flush(self) -> bool: ...

    async def flush(self, *, final: bool = False) -> None:
        """Write the buffered rows (``final``: the run is ending, nothing stays open)."""
        ...

    async def checkpoint(self) -> tuple[int, int, int] | None: ...

    async def close(self) -> None: ...


def fetch_all(conn: sqlite3.Connection, sql: str, params: Sequence[Any]) -> Rows:
    return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def _checkpoint(path: str) -> tuple[int, int, int]:
    """A PASSIVE checkpoint from its own connection: copies WAL pages into the database without blocking writers."""
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        busy, log_pages, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(busy), int(log_pages), int(done)
    finally:
        conn.close()


class _Buffers:
    """Rows a bar produces besides orders, kept until the writer's next flush."""

    _decisions: list[Any]
    _equity: Rows
    _rejections: Rows
    _risk: Rows

    def __init__(self, flush_rows: int, first_decision_id: int) -> None:
        self._flush_rows = flush_rows
        self._next_id = first_decision_id
        self._decisions: list[Any] = []
        self._equity: Rows = []
        self._rejections: Rows = []
        self._risk: Rows = []
        self._pending = 0

    def next_decision_id(self) -> int:
        decision_id = self._next_id
        self._next_id += 1
        return decision_id

    def add_equity(self, run_id: int, row: EquitySnapshot) -> None:
        self._equity.append(equity_params(run_id, row))
        self._pending += 1

    def add_rejection(self, run_id: int, row: BarRejection) -> None:
        self._rejections.append(rejection_params(run_id, row))
        self._pending += 1

    def add_risk_event(self, run_id: int, row: RiskEvent) -> None:
        self._risk.append(risk_params(run_id, row))
        self._pending += 1

    @property
    def should_flush(self) -> bool:
        return self._pending >= self._flush_rows

    def _take(self, decisions: Rows) -> list[tuple[str, Rows]]:
        """The buffered rows per statement, buffers emptied; ``decisions`` as the subclass encoded them."""
        taken = [(DECISION_SQL, decisions), (EQUITY_SQL, self._equity), (REJECTION_SQL, self._rejections),
                 (RISK_SQL, self._risk)]
        self._decisions, self._equity, self._rejections, self._risk = [], [], [], []
        self._pending = 0
        return [(sql, rows) for sql, rows in taken if rows]

    def _put_back(self, unwritten: list[tuple[str, Rows]]) -> None:
        """A flush that failed (the store locked, the disk full) leaves its rows for the next one, ahead of
        rows buffered since, so nothing is lost and the order is kept."""
        for sql, rows in unwritten:
            name = _BUFFER_OF[sql]
            setattr(self, name, [*rows, *getattr(self, name)])
            self._pending += len(rows)


_BUFFER_OF = {DECISION_SQL: "_decisions", EQUITY_SQL: "_equity", REJECTION_SQL: "_rejections", RISK_SQL: "_risk"}

# ---------------------------------------------------------------------------- live


class _Runner(Protocol):
    """Where a live writer's SQLite calls run."""

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T: ...

    async def close(self) -> None: ...


class OnThread:
    """``synchronous=full``: a commit waits for an fsync (milliseconds), so SQLite runs on aiosqlite's thread.

    The thread is handed one function per transaction (``Connection._execute``
    is the hook aiosqlite uses for each of its own calls): its public API would
    cost a thread hop per statement.
    """

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        return await self._db._execute(fn, self._db._conn, *args)

    async def close(self) -> None:
        await self._db.close()


class OnLoop:
    """``synchronous=normal`` (and backtests): a commit appends to the WAL in the page cache, tens of
    microseconds, less than the hop to a thread, so SQLite runs right here.

    Here SQLite must not wait for a lock itself: its busy handler sleeps in the
    calling thread, and another process holding the write lock (a backup, a
    forgotten ``sqlite3`` shell) would stop the loop for the whole busy
    timeout. A live connection is opened with ``timeout=0``
    (``repository._connect_on_loop``) and a busy answer is retried here,
    sleeping on the loop, for up to ``busy_seconds``. A retry is safe: every
    call is one transaction that either did nothing (``BEGIN IMMEDIATE`` was
    refused) or was rolled back whole (``run_transaction``); a busy answer
    that left a transaction open is not retried.
    """

    def __init__(self, conn: sqlite3.Connection, *, busy_seconds: float = 0.0) -> None:
        self.conn = conn
        self._busy_seconds = busy_seconds

    async def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_seconds
        pause = 0.002
        while True:
            try:
                return fn(self.conn, *args)
            except sqlite3.OperationalError as exc:
                busy = exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY and not self.conn.in_transaction
                if not busy or loop.time() + pause > deadline:
                    raise
            await asyncio.sleep(pause)
            pause = min(pause * 2, 0.1)

    async def close(self) -> None:
        self.conn.close()


def _background_transaction(conn: sqlite3.Connection, ops: Sequence[Op]) -> None:
    """A flush chunk on a ``synchronous=full`` connection, committed without an fsync of its own (see LiveWriter)."""
    conn.execute("PRAGMA synchronous=NORMAL")
    try:
        run_transaction(conn, ops)
    finally:
        conn.execute("PRAGMA synchronous=FULL")


def _sync_wal(conn: sqlite3.Connection, wal: str) -> None:
    """fsync the WAL: the flush chunks written since the last one become power-loss safe."""
    try:
        fd = os.open(wal, os.O_RDONLY)
    except FileNotFoundError:
        return  # an in-memory database, or a WAL a checkpoint has just truncated: nothing to sync
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class _Together:
    """The commits of one ``together`` scope, made by the task that opened it (or tasks it started)."""

    ops: list[Op] = field(default_factory=list)
    open: bool = True


# per task (contextvars): a concurrent task's commits never wait for another task's scope
_TOGETHER: ContextVar[_Together | None] = ContextVar("store_together", default=None)


def _open_scope() -> _Together | None:
    scope = _TOGETHER.get()
    return scope if scope is not None and scope.open else None


class LiveWriter(_Buffers):
    """Commit before send: orders, order updates, fills and flags are on disk when ``commit`` returns.

    Where the time of a durable commit goes, and what this writer does about it:

    * **Queueing behind a flush.** One connection, one thread: a commit queued
      behind a background flush of thousands of buffered rows (and that
      flush's own fsync) waited for all of it — most of the order path's p99.
      Flushes are therefore written in transactions of ``LIVE_CHUNK_ROWS``
      rows, each queued only while no commit waits (``_urgent``), so a commit
      waits for one such job at most. The chunks are committed without an
      fsync (``_background_transaction``) and the WAL is fsynced after every
      ``LIVE_SYNC_EVERY_CHUNKS`` of them (``_sync_wal``): an fsync per chunk
      kept the thread busy (and a commit waiting) a twentieth of the time at
      full replay speed, while one per flush left up to 2 MB of a flush's
      pages for the next order's own fsync (3-4 ms).
    * **Encoding on the loop.** Decisions are encoded (JSON) as they arrive,
      a few µs each, not thousands at once in the flush while an order's
      commit is in flight.
    * **WAL checkpoints.** SQLite's automatic checkpoint runs inside whichever
      commit crosses the threshold, copying megabytes and fsyncing the database
      file on the order path. It is off; this writer checkpoints from its own
      connection on another thread (``checkpoint``) every
      ``CHECKPOINT_EVERY_TRANSACTIONS``, and the daemon calls it periodically.

    What is left is the disk: the transaction's WAL frames, one fsync, and the
    hop to SQLite's thread and back. A broker report (a fill, the trade it
    closes, the order's new state) is one such commit too (``together``).
    """

    def __init__(self, runner: _Runner, path: Path, *, flush_rows: int, first_decision_id: int,
                 fsyncs: bool) -> None:
        super().__init__(flush_rows, first_decision_id)
        self._runner = runner
        self._path = path
        self._fsyncs = fsyncs  # synchronous=full: flush chunks skip their fsync, _sync_wal does it
        self._urgent = 0
        self._no_urgent = asyncio.Event()
        self._no_urgent.set()
        self._flushing = asyncio.Lock()
        self._checkpointing: asyncio.Task[tuple[int, int, int] | None] | None = None
        self._transactions = 0  # since the last checkpoint

    async def _now(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Run ahead of any flush chunk not yet queued."""
        self._urgent += 1
        self._no_urgent.clear()
        self._transactions += 1
        try:
            return await self._runner.run(fn, *args)
        finally:
            self._urgent -= 1
            if not self._urgent:
                self._no_urgent.set()

    async def commit(self, ops: Sequence[Op], *, now: bool = False) -> None:
        scope = None if now else _open_scope()
        if scope is not None:
            scope.ops.extend(ops)
            return
        await self._now(run_transaction, ops)

    @asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        if _open_scope() is not None:
            yield  # nested: the outer scope commits
            return
        scope = _Together()
        token = _TOGETHER.set(scope)
        try:
            yield
        finally:
            # committed even when the body raised: what it recorded happened (as if committed one by one)
            scope.open = False
            _TOGETHER.reset(token)
            if scope.ops:
                await self._now(run_transaction, scope.ops)

    async def insert_fill(self, fill_id: str, params: tuple[Any, ...]) -> bool:
        scope = _open_scope()
        if scope is not None:
            # OR IGNORE still refuses a stored id; callers ask ``has_fill`` before booking a fill
            scope.ops.append((FILL_SQL, params, False))
            return True
        (count,) = await self._now(run_transaction, [(FILL_SQL, params, False)])
        return count == 1

    async def has_fill(self, fill_id: str) -> bool:
        return bool(await self.fetch(FILL_EXISTS_SQL, (fill_id,)))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return await self._now(fetch_all, sql, tuple(params))

    def add_decision(self, run_id: int, row: DecisionRow) -> int:
        """One row per decision (a live run decides once a bar, minutes apart: nothing to fold)."""
        decision_id = self.next_decision_id() if row.id is None else row.id
        self._decisions.append(decision_params(decision_id, run_id, row))
        self._pending += 1
        return decision_id

    async def flush(self, *, final: bool = False) -> None:
        async with self._flushing:
            write = _background_transaction if self._fsyncs else run_transaction
            unsynced = 0
            taken = self._take(self._decisions)
            for index, (sql, rows) in enumerate(taken):
                for start in range(0, len(rows), LIVE_CHUNK_ROWS):
                    chunk: list[Op] = [(sql, rows[start : start + LIVE_CHUNK_ROWS], True)]
                    try:
                        await self._after_urgent(write, chunk)
                    except BaseException:
                        self._put_back([(sql, rows[start:]), *taken[index + 1 :]])
                        raise
                    unsynced += 1
                    if self._fsyncs and unsynced == LIVE_SYNC_EVERY_CHUNKS:
                        await self._after_urgent(_sync_wal, f"{self._path}-wal")
                        unsynced = 0
            if self._fsyncs and unsynced:
                await self._after_urgent(_sync_wal, f"{self._path}-wal")
        if not final:
            self._checkpoint_if_due()

    async def _after_urgent(self, fn: Callable[..., _T], *args: Any) -> _T:
        """Queue background work only while no commit waits, so a commit waits for one such job at most."""
        while self._urgent:
            await self._no_urgent.wait()
        self._transactions += 1
        return await self._runner.run(fn, *args)

    def _checkpoint_if_due(self) -> None:
        if self._transactions < CHECKPOINT_EVERY_TRANSACTIONS:
            return
        if self._checkpointing is None or self._checkpointing.done():
            self._checkpointing = asyncio.get_running_loop().create_task(self.checkpoint())

    async def checkpoint(self) -> tuple[int, int, int] | None:
        """Fold the WAL into the database from another thread; SQLite's (busy, wal pages, pages checkpointed)."""
        if str(self._path) == ":memory:":
            return None
        self._transactions = 0
        return await asyncio.to_thread(_checkpoint, str(self._path))

    async def close(self) -> None:
        try:
            await self.flush(final=True)
            if self._checkpointing is not None:
                await asyncio.gather(self._checkpointing, return_exceptions=True)
        finally:
            await self._runner.close()


# ---------------------------------------------------------------------------- backtests


@dataclass(slots=True)
class _DecisionRun:
    """Consecutive identical plain decisions of one symbol, written as one row when the run ends."""

    decision_id: int
    run_id: int
    row: DecisionRow
    bars: int = 1
    last_ts: int | None = None


class BatchWriter(_Buffers):
    """Backtests: every write queued in call order, executed in one transaction per flush.

    A thread hop per order would cost more than the order's SQL, so SQLite
    runs on the loop. A write that fails when its batch executes fails the
    whole batch (rolled back) with a ``StoreError``.

    Repeated plain decisions (``DecisionRow.plain``: nothing but an action and
    a reason) of one symbol extend one row (``bars``, ``last_ts``): a rule
    strategy says "still long" on almost every bar, and a row per repetition
    would be most of a backtest's writes while adding only a timestamp. A run
    ends at a different decision, a rejected bar of its symbol, or the end of
    the run (not at a flush, so where runs split does not depend on flushes).
    """

    def __init__(self, conn: sqlite3.Connection, *, flush_rows: int, first_decision_id: int) -> None:
        super().__init__(flush_rows, first_decision_id)
        self._conn = conn
        self._queued: list[Op] = []
        self._queued_fills: set[str] = set()  # fill ids in ``_queued``
        self._runs: dict[str, _DecisionRun] = {}
        conn.execute("BEGIN IMMEDIATE")

    async def commit(self, ops: Sequence[Op], *, now: bool = False) -> None:
        self._queued.extend(ops)

    @asynccontextmanager
    async def together(self) -> AsyncIterator[None]:
        yield  # every write is queued in call order and executed in one batch anyway

    async def insert_fill(self, fill_id: str, params: tuple[Any, ...]) -> bool:
        if await self.has_fill(fill_id):
            return False
        self._queued.append((FILL_SQL, params, False))
        self._queued_fills.add(fill_id)
        return True

    async def has_fill(self, fill_id: str) -> bool:
        # queued, or already executed into the table: asking the table does not need the queue run first,
        # and only the queued ids are kept in memory, so memory stays flat over a long backtest
        return fill_id in self._queued_fills or bool(fetch_all(self._conn, FILL_EXISTS_SQL, (fill_id,)))

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        self._execute_queued()
        return fetch_all(self._conn, sql, tuple(params))

    def add_decision(self, run_id: int, row: DecisionRow) -> int:
        symbol = row.symbol
        run = self._runs.get(symbol)
        if row.plain:
            if run is not None:
                if run.row.action == row.action and run.row.reason == row.reason:
                    run.bars += 1
                    run.last_ts = row.ts
                    return run.decision_id
                self._end_run(symbol)
            decision_id = self.next_decision_id()
            self._runs[symbol] = _DecisionRun(decision_id, run_id, row)
            return decision_id
        if run is not None:
            self._end_run(symbol)
        decision_id = self.next_decision_id() if row.id is None else row.id
        self._decisions.append((decision_id, run_id, row, 1, None))
        self._pending += 1
        return decision_id

    def add_rejection(self, run_id: int, row: BarRejection) -> None:
        self._end_run(row.symbol)  # a run stands for consecutive accepted bars only
        super().add_rejection(run_id, row)

    def _end_run(self, symbol: str) -> None:
        run = self._runs.pop(symbol, None)
        if run is not None:
            self._decisions.append((run.decision_id, run.run_id, run.row, run.bars, run.last_ts))
            self._pending += 1

    async def flush(self, *, final: bool = False) -> None:
        if final:
            for symbol in list(self._runs):
                self._end_run(symbol)
        # (id, run_id, row, bars, last_ts): encoded here, a batch at a time, not on the bar path
        decisions = [decision_params(*d) for d in self._decisions]
        self._queued.extend((sql, rows, True) for sql, rows in self._take(decisions))
        self._execute_queued()
        self._conn.execute("COMMIT")
        self._conn.execute("BEGIN IMMEDIATE")

    def _execute_queued(self) -> None:
        """Execute the queued writes, in order, inside the open batch transaction."""
        ops, self._queued = self._queued, []
        self._queued_fills.clear()
        conn = self._conn
        try:
            for sql, params, many in ops:
                if many:
                    conn.executemany(sql, params)
                else:
                    conn.execute(sql, params)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            raise StoreError(f"backtest store write failed, batch rolled back: {exc}") from exc

    async def checkpoint(self) -> tuple[int, int, int] | None:
        return None  # SQLite checkpoints a backtest's WAL by itself: nothing waits on its commits

    async def close(self) -> None:
        try:
            await self.flush(final=True)
            self._conn.execute("COMMIT")
        finally:
            self._conn.close()
