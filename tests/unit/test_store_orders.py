"""The real SQLite store and the order manager: journal before send, ids across restarts."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import AccountSnapshot, Bar, Fill, OrderRequest, OrderStatus, OrderUpdate, Position, Side
from brokers.errors import OrderRejected, OrderStateError, StoreError
from daemon.orders import OrderManager, check_transition
from daemon.store import LATEST_VERSION, Store, Synchronous

D = Decimal


class RecordingBroker:
    """A minimal broker written for these tests: it records what it was sent and
    checks, at the moment of each submit, that the order is already committed in
    the database file (read through a second, independent SQLite connection)."""

    name = "recording"

    def __init__(self, db_path: Path, reject: bool = False) -> None:
        self.db_path = db_path
        self.sent: list[str] = []
        self.committed_before_send: list[bool] = []
        self.reject = reject

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        with sqlite3.connect(self.db_path) as other:
            row = other.execute("SELECT status FROM orders WHERE client_order_id = ?", (client_order_id,)).fetchone()
        self.committed_before_send.append(row is not None and row[0] == "new")
        self.sent.append(client_order_id)
        if self.reject:
            raise OrderRejected("insufficient buying power")
        return OrderUpdate(client_order_id, OrderStatus.ACCEPTED, 1, broker_order_id=f"b-{len(self.sent)}")

    async def get_order(self, client_order_id: str) -> OrderUpdate | None:
        return None

    async def cancel(self, client_order_id: str) -> OrderUpdate:
        return OrderUpdate(client_order_id, OrderStatus.CANCELLED, 2)

    def drain_updates(self) -> list[OrderUpdate]:
        return []

    async def positions(self) -> list[Position]:
        return []

    async def account(self) -> AccountSnapshot:
        return AccountSnapshot(D(0), D(0))

    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]:
        return []


async def _manager(store: Store, broker: RecordingBroker, fills: list[Fill]) -> OrderManager:
    async def on_fill(fill: Fill, order: object) -> None:
        await store.record_fill(fill, D(0))
        fills.append(fill)

    async def on_anomaly(kind: str, message: str, order: object) -> None:
        fills.append(kind)  # type: ignore[arg-type]

    return await OrderManager.create(store, broker, on_fill=on_fill, on_anomaly=on_anomaly)  # type: ignore[arg-type]


REQUEST = OrderRequest("EURUSD", Side.BUY, D("1000"), reason="buy")


@pytest.mark.parametrize(
    "synchronous", ["full", "normal"], ids=["thread-full", "loop-normal"]
)
async def test_orders_are_committed_before_they_are_sent(tmp_path: Path, synchronous: Synchronous) -> None:
    db = tmp_path / "t.db"
    store = await Store.open(db, synchronous=synchronous)
    await store.begin_run("test", "fp", {})
    broker = RecordingBroker(db)
    manager = await _manager(store, broker, [])
    for ts in range(3):
        await manager.submit(REQUEST, ts=ts)
    assert broker.committed_before_send == [True, True, True]
    await store.close()


async def test_client_order_ids_continue_across_restarts(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    seen: list[str] = []
    for _restart in range(3):
        store = await Store.open(db)
        await store.begin_run("test", "fp", {})
        broker = RecordingBroker(db)
        manager = await _manager(store, broker, [])
        for ts in range(4):
            await manager.submit(REQUEST, ts=ts)
        seen.extend(broker.sent)
        await store.close()
    assert len(seen) == 12
    assert len(set(seen)) == 12, "a client order id was reused after a restart"
    prefixes = {cid.rsplit("-", 1)[0] for cid in seen}
    assert len(prefixes) == 1, "the id prefix belongs to the database, not to the run"


async def test_rejected_submit_is_recorded_not_retried(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = await Store.open(db)
    await store.begin_run("test", "fp", {})
    broker = RecordingBroker(db, reject=True)
    manager = await _manager(store, broker, [])
    order = await manager.submit(REQUEST, ts=5)
    assert order.status is OrderStatus.REJECTED
    assert len(broker.sent) == 1
    rows = await store.query("SELECT status, message FROM orders")
    assert rows == [("rejected", "insufficient buying power")]
    await store.close()


async def test_fills_are_deduplicated_by_fill_id(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = await Store.open(db)
    await store.begin_run("test", "fp", {})
    booked: list[Fill] = []
    manager = await _manager(store, RecordingBroker(db), booked)
    order = await manager.submit(REQUEST, ts=1)
    fill = Fill("x-1", order.client_order_id, "EURUSD", Side.BUY, D("400"), D("1.1"), D("0.01"), 2)
    partial = OrderUpdate(order.client_order_id, OrderStatus.PARTIALLY_FILLED, 2, fill=fill, filled_quantity=D("400"))
    await manager.apply(partial)
    await manager.apply(partial)  # the same report again
    assert [f.fill_id for f in booked] == ["x-1"]
    assert order.filled_quantity == D("400")
    assert manager.pending_quantity("EURUSD") == D("600")
    rest = Fill("x-2", order.client_order_id, "EURUSD", Side.BUY, D("600"), D("1.2"), D("0.01"), 3)
    await manager.apply(OrderUpdate(order.client_order_id, OrderStatus.FILLED, 3, fill=rest))
    assert order.status is OrderStatus.FILLED
    assert order.average_price == (D("400") * D("1.1") + D("600") * D("1.2")) / D("1000")
    assert manager.pending_quantity("EURUSD") == 0
    events = await store.query("SELECT to_status FROM order_events ORDER BY id")
    assert [e[0] for e in events] == ["new", "submitted", "accepted", "partially_filled", "filled"]
    await store.close()


async def test_overfill_is_reported_as_an_anomaly(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = await Store.open(db)
    await store.begin_run("test", "fp", {})
    seen: list[object] = []
    manager = await _manager(store, RecordingBroker(db), seen)  # type: ignore[arg-type]
    order = await manager.submit(REQUEST, ts=1)
    big = Fill("y-1", order.client_order_id, "EURUSD", Side.BUY, D("1500"), D("1.1"), D("0"), 2)
    await manager.apply(OrderUpdate(order.client_order_id, OrderStatus.FILLED, 2, fill=big))
    assert "overfill" in seen
    await store.close()


def test_order_state_machine_refuses_illegal_transitions() -> None:
    check_transition(OrderStatus.NEW, OrderStatus.SUBMITTED)
    check_transition(OrderStatus.ACCEPTED, OrderStatus.PARTIALLY_FILLED)
    for current, new in (
        (OrderStatus.NEW, OrderStatus.FILLED),
        (OrderStatus.FILLED, OrderStatus.CANCELLED),
        (OrderStatus.CANCELLED, OrderStatus.ACCEPTED),
        (OrderStatus.REJECTED, OrderStatus.SUBMITTED),
    ):
        with pytest.raises(OrderStateError):
            check_transition(current, new)


async def test_migrations_apply_once_and_refuse_newer_schema(tmp_path: Path) -> None:
    db = tmp_path / "t.db"
    store = await Store.open(db)
    assert await store.schema_version() == LATEST_VERSION
    await store.close()
    store = await Store.open(db)  # re-open: nothing re-applied
    assert await store.schema_version() == LATEST_VERSION
    await store.close()
    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (999, 'future', 'x')")
    with pytest.raises(StoreError, match="newer than this tradectl"):
        await Store.open(db)


async def test_corrupt_database_file_is_a_clear_error(tmp_path: Path) -> None:
    db = tmp_path / "garbage.db"
    db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable tradectl database"):
        await Store.open(db)
