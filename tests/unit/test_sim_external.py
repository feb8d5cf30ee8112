"""The simulated broker as an external party: its own file, kept across daemon restarts.

A "restart" is a new ``SimBroker`` over the same bars and state file, without
``close`` having run on the old one (a killed process closes nothing).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import Bar, OrderRequest, OrderType, Side
from brokers.costs import CostModel
from brokers.errors import DataError, OrderRejected
from brokers.history import load_bundled
from brokers.sim import SimBroker
from brokers.sim.replay import ReplayFeed
from brokers.sim.state import StateFile

D = Decimal
BARS: list[Bar] = load_bundled()[:60]
SYM = BARS[0].symbol


def _broker(path: Path | None, **kwargs: object) -> SimBroker:
    return SimBroker(ReplayFeed(BARS), CostModel(), state_file=path, state_fsync=False, **kwargs)  # type: ignore[arg-type]


def _files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def _trade(broker: SimBroker, bars: int) -> None:
    """A busy script: a market order every 3 bars, a resting limit every 5, a cancel every 7."""
    iterator = broker.bars()
    for _ in range(bars):
        bar = await anext(iterator)
        i = broker.feed.position
        if i % 3 == 0:
            await broker.submit(f"m{i}", OrderRequest(SYM, Side.BUY if i % 2 else Side.SELL, D(7000)))
        if i % 5 == 0:
            price = broker.cost_model.round_price(bar.close * 0.998)
            await broker.submit(f"l{i}", OrderRequest(SYM, Side.BUY, D(3000), OrderType.LIMIT, price))
        if i % 7 == 0 and f"l{i - 2}" in broker.state.orders:
            await broker.cancel(f"l{i - 2}")


async def test_a_restarted_broker_is_the_broker_as_it_last_answered(tmp_path: Path) -> None:
    path = tmp_path / "broker.json"
    first = _broker(path, max_fill_quantity=D(4000))
    await first.connect()
    await _trade(first, 40)
    expected = first.state.to_json()
    assert first.state.fills and first.state.orders
    # killed: no close(); the journal holds everything since the connect-time snapshot
    assert (tmp_path / "broker.json.journal").read_text().count("\n") == first.persist_count

    second = _broker(path, max_fill_quantity=D(4000))
    await second.connect()
    assert second.state.to_json() == expected
    assert second.feed.position == first.feed.position
    assert await second.open_orders() == await first.open_orders()
    assert await second.fills_for("m3") == await first.fills_for("m3") != []
    assert (tmp_path / "broker.json.journal").read_text() == ""  # folded into the snapshot at connect


async def test_bars_without_order_events_do_not_write(tmp_path: Path) -> None:
    broker = _broker(tmp_path / "b.json")
    await broker.connect()
    iterator = broker.bars()
    for _ in range(10):
        await anext(iterator)
    assert broker.persist_count == 0
    await broker.submit("a", OrderRequest(SYM, Side.BUY, D(1000)))
    assert broker.persist_count == 1
    await anext(iterator)  # the fill
    assert broker.persist_count == 2
    await anext(iterator)
    assert broker.persist_count == 2


async def test_every_submit_is_logged_even_a_refused_duplicate(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    broker = _broker(path)
    await broker.connect()
    await anext(broker.bars())
    await broker.submit("x", OrderRequest(SYM, Side.BUY, D(1000)))
    with pytest.raises(OrderRejected, match="duplicate"):
        await broker.submit("x", OrderRequest(SYM, Side.BUY, D(1000)))
    again = _broker(path)
    await again.connect()
    assert again.state.submits == ["x", "x"]


async def test_a_torn_last_journal_line_is_a_call_that_never_returned(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    broker = _broker(path)
    await broker.connect()
    await anext(broker.bars())
    await broker.submit("kept", OrderRequest(SYM, Side.BUY, D(1000)))
    await broker.submit("torn", OrderRequest(SYM, Side.BUY, D(1000)))
    journal = tmp_path / "b.json.journal"
    text = journal.read_text()
    journal.write_text(text[: len(text) - 40])  # the process died while writing the second line
    again = _broker(path)
    await again.connect()
    assert list(again.state.orders) == ["kept"]

    lines = text.splitlines()
    journal.write_text("{broken\n" + lines[0] + "\n")
    with pytest.raises(DataError, match="line 1"):
        StateFile(path).load()


async def test_a_kill_between_new_snapshot_and_journal_reset_applies_nothing_twice(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    broker = _broker(path)
    await broker.connect()
    await anext(broker.bars())
    await broker.submit("a", OrderRequest(SYM, Side.BUY, D(1000)))
    stale_journal = (tmp_path / "b.json.journal").read_text()
    broker._file.snapshot(broker.state)  # type: ignore[union-attr]  # generation + 1 ...
    (tmp_path / "b.json.journal").write_text(stale_journal)  # ... and the old journal not yet emptied
    state = StateFile(path).load()
    assert state.submits == ["a"] and len(state.orders) == 1


async def test_journal_is_compacted_so_a_write_does_not_grow_with_history(tmp_path: Path) -> None:
    path = tmp_path / "b.json"
    broker = _broker(path)
    broker._file.compact_every = 5  # type: ignore[union-attr]
    await broker.connect()
    await anext(broker.bars())
    for i in range(12):
        await broker.submit(f"o{i}", OrderRequest(SYM, Side.BUY, D(1000), OrderType.LIMIT, D("0.5")))
    assert (tmp_path / "b.json.journal").read_text().count("\n") < 5
    assert json.loads(path.read_text())["generation"] >= 3
    again = _broker(path)
    await again.connect()
    assert again.state.to_json() == broker.state.to_json()


async def test_external_trade_moves_the_account_without_telling_the_daemon(tmp_path: Path) -> None:
    broker = _broker(tmp_path / "b.json")
    await broker.connect()
    await anext(broker.bars())
    fill = broker.external_trade(SYM, Side.SELL, D(2500))
    assert (await broker.positions())[0].quantity == D(-2500)
    assert broker.drain_updates() == []
    assert broker.state.submits == []  # not an order the daemon sent
    broker.external_trade(SYM, Side.BUY, D(500), notify=True)
    assert [u.client_order_id for u in broker.drain_updates()] == ["external-2"]
    assert fill.client_order_id == "external-1"


async def test_without_a_state_file_nothing_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    broker = _broker(None)
    await broker.connect()
    await _trade(broker, 20)
    await broker.close()
    assert broker.persist_count == 0 and _files(tmp_path) == []
