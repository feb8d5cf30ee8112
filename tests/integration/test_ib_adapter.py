"""The IB adapter (real ib_async 2.1) against the fake TWS: connectivity faults, refusals, fees, pacing.

No mocks: the adapter's own ``IB`` object speaks the TWS socket protocol to
``tests/fakes/tws`` on 127.0.0.1; the fee test books through the real order
manager, pipeline and SQLite store (``build_rig``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import Bar, OrderRequest, OrderStatus, OrderType, Side
from brokers.errors import BrokerError, OrderRejected
from brokers.ib import ContractSpec, IbBroker
from brokers.ib.bars import Aggregator
from tests.brokers.harness import IB_SYMBOL, ib_settings
from tests.fakes.tws import FakeTws
from tests.integration.fakes.rig import build_rig

D = Decimal
T0 = int(time.time()) // 60 * 60 - 3600  # an hour ago: published bars are history at once


@pytest.fixture
async def tws() -> AsyncIterator[FakeTws]:
    async with FakeTws() as fake:
        yield fake


async def _connected(tws: FakeTws, **overrides: object) -> IbBroker:
    broker = IbBroker(ib_settings(tws, **overrides))
    await broker.connect()
    return broker


async def _publish(tws: FakeTws, k: int, *, price: float = 100.0) -> None:
    """The k-th 5-second bar after T0 (a small deterministic walk)."""
    p = price + k * 0.25
    await tws.publish_bar(IB_SYMBOL, T0 + 5 * k, p, p + 0.5, p - 0.5, p + 0.1, 100)


async def _take(stream: AsyncIterator[Bar], n: int) -> list[Bar]:
    async with asyncio.timeout(5):
        return [await anext(stream) for _ in range(n)]


async def test_1101_renews_the_subscription_and_backfills_every_missed_bar_once(tws: FakeTws) -> None:
    broker = await _connected(tws)
    stream = broker.bars()
    try:
        for k in range(3):
            await _publish(tws, k)
        await _take(stream, 3)
        await tws.connectivity_lost()
        for k in range(3, 6):
            await _publish(tws, k)  # TWS cannot reach IB's data farm: history only
        await tws.connectivity_restored(data_lost=True)  # 1101: every subscription is gone
        await tws.wait_until(lambda: tws.subscribed(IB_SYMBOL) == 1, what="the adapter renewed its subscription")
        for k in range(6, 8):
            await _publish(tws, k)
        got = await _take(stream, 5)
        assert [b.ts for b in got] == [T0 + 5 * (k + 1) for k in range(3, 8)], "each missed bar once, in order"
        assert broker.counts["resubscribed"] == 1 and broker.counts["backfilled_bars"] == 3
        assert broker.feed_status()["connected"] is True
    finally:
        await broker.close()


async def test_1100_blocks_orders_until_1102_and_the_feed_says_disconnected(tws: FakeTws) -> None:
    broker = await _connected(tws)
    try:
        await tws.connectivity_lost()
        await tws.wait_until(lambda: not broker.link.up, what="1100 seen")
        status = broker.feed_status()
        assert (status["connected"], status["state"]) == (False, "venue_link_lost")
        with pytest.raises(OrderRejected, match="lost its connection to IB"):
            await broker.submit("tc-e1", OrderRequest(IB_SYMBOL, Side.BUY, D(10)))
        assert tws.records.order_refs == [], "nothing was sent while TWS had no link to IB"
        await tws.connectivity_restored(data_lost=False)  # 1102: data kept
        await tws.wait_until(lambda: broker.link.up, what="1102 seen")
        ack = await broker.submit("tc-e2", OrderRequest(IB_SYMBOL, Side.BUY, D(10), OrderType.LIMIT, D("0.5")))
        assert ack.status is OrderStatus.ACCEPTED and tws.records.order_refs == ["tc-e2"]
    finally:
        await broker.close()


async def test_a_dropped_socket_reconnects_the_same_ib_object_and_recovers_bars_and_a_fill(tws: FakeTws) -> None:
    broker = await _connected(tws)
    ib = broker.ib
    stream = broker.bars()
    try:
        await _publish(tws, 0)
        await _take(stream, 1)
        await broker.submit("tc-d1", OrderRequest(IB_SYMBOL, Side.BUY, D(100)))
        await tws.go_away()  # socket closed, connections refused for a while
        for k in range(1, 4):
            await _publish(tws, k)  # the order fills on bar 1 while nobody listens
        await tws.come_back()
        await tws.wait_until(lambda: broker.supervisor.connected and broker.supervisor.reconnects == 1, seconds=10,
                             what="reconnected")
        await _publish(tws, 4)
        got = await _take(stream, 4)
        assert [b.ts for b in got] == [T0 + 5 * (k + 1) for k in range(1, 5)]
        assert broker.ib is ib, "the same IB object reconnected"
        updates = broker.drain_updates()
        fills = [u.fill for u in updates if u.fill is not None]
        assert [(f.client_order_id, f.quantity) for f in fills] == [("tc-d1", D(100))], "the missed fill, once"
        assert fills[0].fee == D("1.00") and updates[-1].status is OrderStatus.FILLED
        assert tws.records.duplicate_order_refs() == {}
    finally:
        await broker.close()


async def test_a_commission_after_its_execution_completes_the_fee_and_books_no_second_fill(
        tws: FakeTws, tmp_path: Path) -> None:
    broker = IbBroker(ib_settings(tws))
    rig = await build_rig(tmp_path / "ib.db", broker, fresh_account=True)  # type: ignore[arg-type]
    try:
        cash = rig.portfolio.cash
        tws.hold_commissions(1)
        order = await rig.orders.submit(OrderRequest(IB_SYMBOL, Side.BUY, D(400)), ts=T0)
        await _publish(tws, 0)
        await tws.wait_until(lambda: len(broker._fees_due) == 1, what="the fill delivered, its fee still due")
        await rig.settle()
        assert rig.portfolio.cash == cash - D(400) * D(100), "booked at once, fee not known yet"
        await tws.release_commissions()
        await tws.wait_until(lambda: broker.counts["fee_completions"] == 1, what="the fee completion")
        await rig.settle()
        rows = await rig.store.query("SELECT fill_id, quantity, fee FROM fills")
        assert [(D(q), D(f)) for _, q, f in rows] == [(D(400), D(2))], "one fill, its fee completed"
        assert rig.portfolio.cash == cash - D(400) * D(100) - D(2) == tws.venue.cash, "the venue's cash, exactly"
        assert rig.portfolio.fees == D(2) and rig.orders.counts["fee_corrections"] == 1
        assert rig.orders.get(order.client_order_id).status is OrderStatus.FILLED  # type: ignore[union-attr]
    finally:
        await rig.close()


async def test_a_client_id_in_use_is_refused_with_one_clear_line(tws: FakeTws) -> None:
    first = await _connected(tws)
    second = IbBroker(ib_settings(tws, connect_timeout_seconds=5.0))
    try:
        started = time.monotonic()
        with pytest.raises(BrokerError, match=r"client id 11 is already in use .* set broker.ib.client_id"):
            await second.connect()
        assert time.monotonic() - started < 2, "refused at once, not after the handshake timeout"
    finally:
        await second.close()
        await first.close()


async def test_refused_connection_read_only_session_and_unknown_contract_each_say_what_is_wrong() -> None:
    async with FakeTws() as tws:
        port = tws.port
    with pytest.raises(BrokerError, match=f"connection refused at 127.0.0.1:{port}.*API enabled"):
        await IbBroker(ib_settings(tws, port=port)).connect()
    async with FakeTws(read_only=True) as tws:
        with pytest.raises(BrokerError, match=r"read-only .*untick 'Read-Only API'"):
            await IbBroker(ib_settings(tws)).connect()
        looker = await _connected(tws, allow_read_only=True)
        try:
            with pytest.raises(OrderRejected, match="read-only"):
                await looker.submit("tc-ro", OrderRequest(IB_SYMBOL, Side.BUY, D(1)))
        finally:
            await looker.close()
    async with FakeTws() as tws:
        bad = (ContractSpec("ZZZZ", "STK", "ZZZZ"),)
        with pytest.raises(BrokerError, match=r"ZZZZ .* does not qualify: No security definition .*IB error 200"):
            await IbBroker(ib_settings(tws, contracts=bad)).connect()
        fx_and_future = (ContractSpec("EURUSD", "CASH", "EUR", exchange="IDEALPRO"),
                         ContractSpec("ES", "FUT", "ES", exchange="CME", expiry="202503"))
        broker = await _connected(tws, contracts=fx_and_future)
        try:
            assert {k: c.conId for k, c in broker.contracts.items()} == {"EURUSD": 12087792, "ES": 637533641}
        finally:
            await broker.close()


async def test_a_rejected_order_is_refused_with_the_venues_reason(tws: FakeTws) -> None:
    broker = await _connected(tws)
    try:
        tws.reject_next_order("Insufficient buying power")
        with pytest.raises(OrderRejected, match="Insufficient buying power"):
            await broker.submit("tc-rej", OrderRequest(IB_SYMBOL, Side.BUY, D(10)))
        found = await broker.get_order("tc-rej")
        assert found is not None and found.status in (OrderStatus.REJECTED, OrderStatus.CANCELLED)
    finally:
        await broker.close()


async def test_requests_stay_within_fifty_messages_a_second(tws: FakeTws) -> None:
    broker = await _connected(tws)
    try:
        tws.records.messages.clear()
        await asyncio.gather(*(broker.positions() for _ in range(80)))
        times = [t for _, t in tws.records.messages]
        busiest = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
        assert len(times) == 80 and busiest <= 50
    finally:
        await broker.close()


async def test_minute_bars_are_summed_from_five_second_bars_and_stamped_at_the_close(tws: FakeTws) -> None:
    start = T0 - T0 % 60 + 60
    broker = await _connected(tws, bar_seconds=60)
    stream = broker.bars()
    try:
        for k in range(-3, 24):  # joins a minute three bars in: that minute comes from history
            p = 100 + k
            await tws.publish_bar(IB_SYMBOL, start + 5 * k, p, p + 2, p - 1, p + 1, 10)
        got = await _take(stream, 3)
        assert [b.ts for b in got] == [start, start + 60, start + 120]
        assert got[1] == Bar(IB_SYMBOL, start + 60, 100.0, 113.0, 99.0, 112.0, 120.0)
        history = await broker.historical_bars(IB_SYMBOL, start, start + 120)
        assert history == got, "live minutes equal the venue's own history"
    finally:
        await broker.close()


def test_the_aggregator_marks_a_bucket_joined_mid_way_and_skips_late_bars() -> None:
    agg = Aggregator("X", 15)
    assert agg.add(5, 1, 2, 0.5, 1.5, 1) == []
    (first,) = agg.add(10, 1.5, 3, 1, 2, 1)
    assert first.partial and first.bar.ts == 15 and first.bar.high == 3
    assert agg.add(15, 2, 2, 2, 2, 1) == [] and agg.add(20, 2, 4, 2, 3, 1) == []
    (second,) = agg.add(30, 3, 3, 3, 3, 1)  # the bucket's last bar (25) never came
    assert not second.partial and second.bar == Bar("X", 30, 2.0, 4.0, 2.0, 3.0, 2.0)
    assert agg.add(25, 9, 9, 9, 9, 1) == [], "a late bar of a bucket already handed on is dropped"


async def test_broker_check_reports_the_account_through_the_adapters_own_start_up(tws: FakeTws) -> None:
    from daemon.broker_check import check, render
    from daemon.config import TradectlConfig

    config = TradectlConfig(broker={"kind": "ib", "ib": {"port": tws.port, "client_id": 5, "bar_seconds": 5}},
                            data={"symbol": "SPY", "bar_seconds": 5})
    report = await check(config)
    assert report["account"]["number"] == "DU1234567" and report["account"]["cash"] == "1000000"
    assert report["positions"] == [] and report["open_orders"] == []
    text = render(report)
    assert "ib (client id 5) at 127.0.0.1:" in text and "SPY (conId 756733)" in text
    await tws.wait_until(lambda: all(s.client_id != 5 for s in tws.sessions), what="the check disconnected")
    bad = TradectlConfig(broker={"kind": "ib", "ib": {"port": tws.port, "bar_seconds": 5,
                                                      "contracts": [{"symbol": "QQQQ"}]}},
                         data={"symbol": "QQQQ", "bar_seconds": 5})
    with pytest.raises(BrokerError, match=r"QQQQ .* does not qualify"):
        await check(bad)
