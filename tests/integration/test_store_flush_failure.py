"""A live flush that fails (another process holds SQLite's write lock) loses no row and keeps their order."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from brokers.errors import StoreError
from daemon.store import EquitySnapshot, Store


async def test_rows_of_a_failed_flush_are_written_by_the_next_one_in_order(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    store = await Store.open(db, synchronous="full")
    try:
        await store.begin_run("run", "fp", {})
        for ts in range(1, 41):  # more than one flush chunk
            store.record_equity(EquitySnapshot(ts, 100.0 + ts, "100", "0", 0.0))
        other = sqlite3.connect(str(db), isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock (SQLite waits 5 s, then gives up)
        try:
            with pytest.raises((sqlite3.OperationalError, StoreError)):
                await store.flush()
        finally:
            other.execute("ROLLBACK")
            other.close()
        store.record_equity(EquitySnapshot(41, 141.0, "100", "0", 0.0))  # buffered after the failure
        await store.flush()
        rows = await store.query("SELECT ts FROM equity_snapshots ORDER BY rowid")
        assert [ts for (ts,) in rows] == list(range(1, 42)), "every row once, in the order it was recorded"
    finally:
        await store.close()
