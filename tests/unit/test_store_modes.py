"""The store's two writers: decision runs and write-behind in the backtest batch, commits and flushes when live."""

from __future__ import annotations

import asyncio
import json
import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import Fill, OrderRequest, OrderStatus, Side
from brokers.errors import StoreError
from daemon.portfolio import ClosedTrade
from daemon.store import BarRejection, DecisionRow, Store
from daemon.store.writer import LIVE_CHUNK_ROWS

D = Decimal
REQUEST = OrderRequest("EURUSD", Side.BUY, D("1000"), reason="buy")


def _plain(symbol: str, ts: int, action: str = "BUY", reason: str = "fast_above_slow") -> DecisionRow:
    return DecisionRow(symbol, ts, action, reason)


def _rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        sql = "SELECT id, symbol, ts, action, reason, bars, last_ts FROM decisions ORDER BY id"
        return conn.execute(sql).fetchall()


async def test_repeated_plain_decisions_share_one_row_with_a_bar_count_in_a_backtest(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    store = await Store.open(db, batched=True)
    await store.begin_run("test", "fp", {})
    ids = [store.record_decision(_plain("EURUSD", ts)) for ts in (10, 20, 30)]
    ids.append(store.record_decision(_plain("EURUSD", 40, "SELL", "fast_below_slow")))
    # a decision with a confidence is never folded into a run
    extras = {"obs_hash": "ab", "regime_score": 0.25}
    ids.append(store.record_decision(
        DecisionRow("EURUSD", 50, "SELL", confidence=0.7, probabilities=(0.1, 0.2, 0.7, 0.0), extras=extras)
    ))
    ids.append(store.record_decision(_plain("EURUSD", 60, "SELL", "fast_below_slow")))
    store.record_rejection(BarRejection(70, "EURUSD", "gap"))  # a rejected bar ends the run
    ids.append(store.record_decision(_plain("EURUSD", 80, "SELL", "fast_below_slow")))
    await store.flush()
    assert (1, "EURUSD", 10, "BUY", "fast_above_slow", 3, 30) in _rows(db)
    assert len(_rows(db)) == 4, "the last run is still open: runs end by themselves, not at a flush"
    await store.close()
    assert ids == [1, 1, 1, 2, 3, 4, 5]
    assert _rows(db) == [
        (1, "EURUSD", 10, "BUY", "fast_above_slow", 3, 30),
        (2, "EURUSD", 40, "SELL", "fast_below_slow", 1, None),
        (3, "EURUSD", 50, "SELL", "", 1, None),
        (4, "EURUSD", 60, "SELL", "fast_below_slow", 1, None),
        (5, "EURUSD", 80, "SELL", "fast_below_slow", 1, None),
    ]
    with sqlite3.connect(db) as conn:  # written as JSON with the batch, exactly as json.dumps writes them
        stored = conn.execute("SELECT probabilities, extras FROM decisions WHERE id = 3").fetchone()
    assert stored == (json.dumps((0.1, 0.2, 0.7, 0.0)), json.dumps(extras, sort_keys=True))


async def test_runs_are_kept_per_symbol_across_flushes(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    store = await Store.open(db, batched=True)
    await store.begin_run("test", "fp", {})
    for ts in (10, 20):
        store.record_decision(_plain("AAA", ts))
        store.record_decision(_plain("BBB", ts))
    await store.flush()
    store.record_decision(_plain("AAA", 30))
    await store.close()
    assert sorted(_rows(db)) == [
        (1, "AAA", 10, "BUY", "fast_above_slow", 3, 30),
        (2, "BBB", 10, "BUY", "fast_above_slow", 2, 20),
    ]


async def test_a_live_store_writes_a_row_per_decision_in_chunks(tmp_path: Path) -> None:
    db = tmp_path / "d.db"
    store = await Store.open(db)
    await store.begin_run("test", "fp", {})
    total = 2 * LIVE_CHUNK_ROWS + 3
    ids = [store.record_decision(_plain("AAA", ts)) for ts in range(total)]
    assert ids == list(range(1, total + 1))
    await store.flush()
    rows = _rows(db)
    assert len(rows) == total and {r[5] for r in rows} == {1}
    await store.close()


async def test_backtest_batch_defers_writes_but_every_read_sees_them(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    store = await Store.open(db, batched=True)
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
    store = await Store.open(db, batched=True)
    await store.begin_run("backtest", "fp", {})
    await store.journal_order("bt1-1", 1, REQUEST, decision_id=None, ts=5)
    # the same id twice is a bug upstream: the database refuses it and the whole batch fails
    await store.journal_order("bt1-1", 2, REQUEST, decision_id=None, ts=6)
    with pytest.raises(StoreError, match="batch rolled back"):
        await store.flush()


async def test_inline_live_store_commits_at_once_and_checkpoints_off_the_loop(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    store = await Store.open(db, synchronous="normal")
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


async def test_full_live_store_checkpoints_off_the_commit_path_too(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "w.db")
    await store.begin_run("run", "fp", {})
    assert (await store.query("PRAGMA wal_autocheckpoint")) == [(0,)]
    result = await store.checkpoint()
    assert result is not None and result[0] == 0
    await store.close()


async def test_a_backtest_store_leaves_checkpoints_to_sqlite(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "b.db", batched=True)
    assert await store.checkpoint() is None
    await store.close()


async def _journal_script(store: Store) -> None:
    """Orders through their lives, with reads in between, as the order manager and pipeline call the store."""
    await store.begin_run("script", "fp", {})
    for n in range(1, 6):
        cid = f"bt-{n}"
        await store.journal_order(cid, n, REQUEST, decision_id=n * 10, ts=n)
        await store.update_order(cid, from_status=OrderStatus.NEW, to_status=OrderStatus.ACCEPTED, ts=n,
                                 broker_order_id=f"sim-{n}")
        if n == 3:
            await store.open_orders()  # a read in the middle writes the batch out
        fill = Fill(f"f{n}", cid, "EURUSD", Side.BUY, D("1000"), D("1.1"), D("0.02"), n + 1)
        await store.record_fill(fill, D(n))
        status = OrderStatus.FILLED if n % 2 else OrderStatus.PARTIALLY_FILLED
        await store.update_order(cid, from_status=OrderStatus.ACCEPTED, to_status=status, ts=n + 1,
                                 filled_quantity=D("1000"), average_price=D("1.1"), message="filled")
        await store.record_trade(
            ClosedTrade("EURUSD", 1, D("1000"), n, n + 1, D("1.1"), D("1.2"), D("0.04"), D("99.96"), "buy", "sell")
        )
    # an order written out before its last update (the batch was read in between)
    await store.update_order("bt-2", from_status=OrderStatus.PARTIALLY_FILLED, to_status=OrderStatus.CANCELLED,
                             ts=9, message="cancelled")
    await store.close()


async def test_the_backtest_batch_writes_the_same_journal_as_committed_transactions(tmp_path: Path) -> None:
    await _journal_script(await Store.open(tmp_path / "live.db", instance_id="x"))
    await _journal_script(await Store.open(tmp_path / "batch.db", instance_id="x", batched=True))
    dumps = []
    for name in ("live.db", "batch.db"):
        with sqlite3.connect(tmp_path / name) as conn:
            dumps.append({
                table: conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()
                for table in ("orders", "order_events", "fills", "trades", "meta")
            })
    assert dumps[0]["orders"][1][8] == "cancelled"
    assert len(dumps[0]["order_events"]) == 16
    assert dumps[0] == dumps[1]


async def test_commits_made_together_land_in_one_transaction_but_an_order_journal_does_not_wait(
    tmp_path: Path,
) -> None:
    db = tmp_path / "t.db"
    store = await Store.open(db, synchronous="normal")
    await store.begin_run("run", "fp", {})

    def on_disk(table: str) -> int:
        with sqlite3.connect(db) as other:
            return int(other.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    go = asyncio.Event()

    async def other_task() -> None:
        await go.wait()
        await store.set_state("k", "v", 6)

    other = asyncio.get_running_loop().create_task(other_task())  # started outside the scope
    fill = Fill("f1", "x-1", "EURUSD", Side.BUY, D("1000"), D("1.1"), D("0.02"), 6)
    async with store.together():
        await store.journal_order("x-1", 1, REQUEST, decision_id=None, ts=5)
        assert on_disk("orders") == 1, "an order journal is committed at once, scope or not"
        assert await store.record_fill(fill, D(0)) is True
        await store.update_order("x-1", from_status=OrderStatus.NEW, to_status=OrderStatus.FILLED, ts=6)
        go.set()
        await other  # another task's commit does not wait for this scope
        assert on_disk("state") == 1
        assert on_disk("fills") == 0 and on_disk("order_events") == 1
    assert on_disk("fills") == 1 and on_disk("order_events") == 2
    assert await store.record_fill(fill, D(0)) is False
    await store.close()
