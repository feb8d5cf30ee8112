"""A live flush that fails (another process holds SQLite's write lock) loses no row and keeps their order."""

from __future__ import annotations

import asyncio
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


async def test_a_write_waiting_for_another_process_lock_leaves_the_loop_free(tmp_path: Path) -> None:
    """``synchronous=normal`` runs SQLite on the loop: the wait for a lock must happen on the loop, not in SQLite."""
    db = tmp_path / "live.db"
    store = await Store.open(db, synchronous="normal")
    other = sqlite3.connect(str(db), isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        write = asyncio.create_task(store.set_state("probe", "written", 1))
        loop = asyncio.get_running_loop()
        ticks, started = 0, loop.time()
        while loop.time() - started < 0.5:
            await asyncio.sleep(0.01)
            ticks += 1
        assert not write.done(), "the write waits for the lock"
        assert ticks >= 25, f"the loop kept running while the write waited ({ticks} ticks of 10 ms in 0.5 s)"
        other.execute("ROLLBACK")
        await asyncio.wait_for(write, 1.0)
        assert await store.get_state("probe") == "written"
    finally:
        other.close()
        await store.close()
