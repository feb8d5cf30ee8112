"""The store's write paths: decision runs, the backtest write-behind batch, inline live commits."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import Fill, OrderRequest, OrderStatus, Side
from brokers.errors import StoreError
from daemon.store import Store

D = Decimal
REQUEST = OrderRequest("EURUSD", Side.BUY, D("1000"), reason="buy")


def _plain(symbol: str, ts: int, action: str = "BUY", reason: str = "fast_above_slow") -> tuple[object, ...]:
    return (None, symbol, ts, action, None, None, reason, None, None, None, None, None, None)


def _rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        sql = "SELECT id, symbol, ts, action, reason, bars, last_ts FROM decisions ORDER BY id"
        return conn.execute(sql).fetchall()


async def test_repeated_plain_decisions_share_one_row_with_a_bar_count(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    store = await Store.open(db)
    await store.begin_run("test", "fp", {})
    ids = [store.add_decision(_plain("EURUSD", ts)) for ts in (10, 20, 30)]
    ids.append(store.add_decision(_plain("EURUSD", 40, "SELL", "fast_below_slow")))
    # a decision with a confidence is never folded into a run
    ids.append(store.add_decision((None, "EURUSD", 50, "SELL", 0.7, "[0.1,0.2,0.7,0.0]", "", *[None] * 6)))
    ids.append(store.add_decision(_plain("EURUSD", 60, "SELL", "fast_below_slow")))
    store.add_rejection(70, "EURUSD", "gap", "")  # a rejected bar ends the run
    ids.append(store.add_decision(_plain("EURUSD", 80, "SELL", "fast_below_slow")))
    await store.flush()
    assert ids == [1, 1, 1, 2, 3, 4, 5]
    assert _rows(db) == [
        (1, "EURUSD", 10, "BUY", "fast_above_slow", 3, 30),
        (2, "EURUSD", 40, "SELL", "fast_below_slow", 1, None),
        (3, "EURUSD", 50, "SELL", "", 1, None),
        (4, "EURUSD", 60, "SELL", "fast_below_slow", 1, None),
        (5, "EURUSD", 80, "SELL", "fast_below_slow", 1, None),
    ]
    await store.close()


async def test_runs_are_kept_per_symbol_and_end_at_a_flush(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    store = await Store.open(db)
    await store.begin_run("test", "fp", {})
    for ts in (10, 20):
        store.add_decision(_plain("AAA", ts))
        store.add_decision(_plain("BBB", ts))
    await store.flush()
    store.add_decision(_plain("AAA", 30))
    await store.close()
    assert sorted(_rows(db)) == [
        (1, "AAA", 10, "BUY", "fast_above_slow", 2, 20),
        (2, "BBB", 10, "BUY", "fast_above_slow", 2, 20),
        (3, "AAA", 30, "BUY", "fast_above_slow", 1, None),
    ]


async def test_backtest_batch_defers_writes_but_every_read_sees_them(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    store = await Store.open(db, durable=False, inline=True)
    await store.begin_run("backtest", "fp", {})
    await store.journal_order("bt1-1", 1, REQUEST, decision_id=None, ts=5)
    with sqlite3.connect(db) as other:  # nothing is on disk before the batch commits
        assert other.execute("SELECT COUNT(*) FROM orders").fetchone() == (0,)
    assert [o.client_order_id for o in await store.open_orders()] == ["bt1-1"]
    fill = Fill("f1", "bt1-1", "EURUSD", Side.BUY, D("1000"), D("1.1"), D("0.02"), 6)
    assert await store.record_fill(fill, D(0)) is True
    assert await store.has_fill("f1")
    assert await store.record_fill(fill, D(0)) is False, "a deferred fill still counts as stored"
    await store.update_order("bt1-1", from_status=OrderStatus.NEW, to_status=OrderStatus.FILLED, ts=6)
    await store.flush()
    with sqlite3.connect(db) as other:
        assert other.execute("SELECT status FROM orders").fetchall() == [("filled",)]
        assert other.execute("SELECT COUNT(*) FROM fills").fetchone() == (1,)
        events = other.execute("SELECT from_status, to_status FROM order_events ORDER BY id").fetchall()
    assert events == [(None, "new"), ("new", "filled")]
    await store.close()


async def test_a_failing_deferred_write_fails_the_batch_loudly(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    store = await Store.open(db, durable=False, inline=True)
    await store.begin_run("backtest", "fp", {})
    await store.journal_order("bt1-1", 1, REQUEST, decision_id=None, ts=5)
    await store.journal_order("bt1-1", 2, REQUEST, decision_id=None, ts=6)  # the same id twice: a bug upstream
    with pytest.raises(StoreError, match="batch rolled back"):
        await store.flush()


async def test_inline_live_store_commits_at_once_and_checkpoints_off_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    store = await Store.open(db, synchronous="normal", inline=True)
    await store.begin_run("run", "fp", {})
    for seq in range(1, 40):
        await store.journal_order(f"x-{seq}", seq, REQUEST, decision_id=None, ts=seq)
        with sqlite3.connect(db) as other:  # committed before journal_order returned
            assert other.execute("SELECT COUNT(*) FROM orders").fetchone() == (seq,)
    assert (await store.query("PRAGMA wal_autocheckpoint")) == [(0,)]
    result = await store.checkpoint()
    assert result is not None
    busy, wal_pages, done = result
    assert busy == 0 and wal_pages > 0 and done == wal_pages
    await store.close()


async def test_worker_thread_store_checkpoints_by_itself(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    assert await store.checkpoint() is None
    await store.close()
