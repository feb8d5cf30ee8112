"""The Alpaca adapter against the wire-level fake: reconnect with backfill, lost submit answers, 429 bursts.

Each test ends by comparing what the adapter reported with what the fake holds
and with every client order id the fake received (never one sent twice).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from brokers.base import Bar, OrderRequest, OrderStatus, Side
from brokers.errors import OrderRejected, UnknownOrderOutcome
from tests.brokers.harness import AlpacaHarness, alpaca_harness

D = Decimal


@pytest.fixture
async def venue() -> AsyncIterator[AlpacaHarness]:
    harness = await alpaca_harness()
    try:
        yield harness
    finally:
        await harness.close()


async def _publish(venue: AlpacaHarness, n: int) -> None:
    """Trade ``n`` more minute bars on the fake without waiting for the adapter to deliver them."""
    for _ in range(n):
        ts_open = datetime.fromtimestamp(venue.t0 + venue.published * 60, UTC)
        venue.published += 1
        await venue.fake.publish_bar(venue.symbol, ts_open, 1.10, 1.11, 1.09, 1.105, 100)


async def _take(bars: AsyncIterator[Bar], n: int) -> list[Bar]:
    async with asyncio.timeout(10):
        return [await anext(bars) for _ in range(n)]


async def test_a_dropped_market_data_socket_is_backfilled_without_a_duplicate_or_missing_bar(
        venue: AlpacaHarness) -> None:
    broker, fake = venue.broker, venue.fake
    bars = broker.bars()
    await _publish(venue, 3)
    seen = await _take(bars, 3)
    assert await fake.drop_market_data(stay_down=True) == 1
    await _publish(venue, 4)  # traded while we are away: history only, no frame reaches us
    await fake.wait_until(lambda: not broker.feed_status()["connected"], what="the adapter noticed the drop")
    down = broker.feed_status()
    assert down["state"] == "reconnecting" and down["market_data"]["state"] == "reconnecting"
    assert down["connected"] is False and down["disconnected_seconds"] >= 0
    fake.restore_streams()
    seen += await _take(bars, 4)  # the backfill, delivered before any live bar
    await fake.wait_subscribed(venue.symbol)
    await _publish(venue, 2)
    seen += await _take(bars, 2)
    expected = [venue.t0 + i * 60 + 60 for i in range(9)]
    assert [b.ts for b in seen] == expected, "every bar once, in order, stamped at its close"
    status = broker.feed_status()
    assert status["connected"] is True and status["reconnects"] == 1
    assert status["counts"]["backfilled_bars"] == 4 and status["counts"]["bars"] == 9
    assert broker.drain_updates() == []


async def test_a_lost_submit_answer_is_found_by_client_id_and_never_sent_again(venue: AlpacaHarness) -> None:
    broker, fake = venue.broker, venue.fake
    await venue.next_bar()
    fake.lose_next_submit_response()
    started = time.monotonic()
    ack = await broker.submit("lost-1", OrderRequest(venue.symbol, Side.BUY, D(10)))
    assert ack.status is OrderStatus.ACCEPTED and ack.broker_order_id == fake.order("lost-1").id
    assert time.monotonic() - started < 3
    await venue.next_bar()
    fills = [u.fill for u in await venue.updates() if u.fill is not None]
    assert [(f.client_order_id, f.quantity) for f in fills] == [("lost-1", D(10))]
    assert fake.received_client_order_ids == ["lost-1"]
    assert fake.records.duplicate_client_order_ids() == {}
    (position,) = await broker.positions()
    assert (position.symbol, position.quantity) == (venue.symbol, fake.positions()[venue.symbol].qty)


async def test_an_order_the_venue_never_shows_in_time_is_unknown_not_resent(venue: AlpacaHarness) -> None:
    broker, fake = venue.broker, venue.fake
    await venue.next_bar()
    fake.lose_next_submit_response()
    fake.delay_next(3.0, n=None, path_prefix="/v2/orders:by_client_order_id")  # every look-up times out (2 s)
    with pytest.raises(UnknownOrderOutcome, match="unk-1"):
        await broker.submit("unk-1", OrderRequest(venue.symbol, Side.BUY, D(5)))
    fake.clear_delays()
    found = await broker.get_order("unk-1")
    assert found is not None and found.status is OrderStatus.ACCEPTED, "it was placed: the manager's look-up finds it"
    assert fake.received_client_order_ids == ["unk-1"]


async def test_a_429_burst_pauses_every_caller_until_the_reset_and_refuses_the_order_it_hit(
        venue: AlpacaHarness) -> None:
    broker, fake = venue.broker, venue.fake
    await venue.next_bar()
    fake.rate_limit_next(1, reset_in_seconds=0.5, path_prefix="/v2/orders")
    with pytest.raises(OrderRejected, match="rate limited"):
        await broker.submit("burst-0", OrderRequest(venue.symbol, Side.BUY, D(1)))
    assert broker.rest.limiter.throttled == 1

    fake.rate_limit_next(2, reset_in_seconds=0.5, path_prefix="/v2/account")
    first = len(fake.records.requests)
    accounts = await asyncio.gather(*(broker.account() for _ in range(5)))
    assert all(a.cash == fake.cash for a in accounts), "every caller got its answer after the reset"
    calls = [r for r in fake.records.requests[first:] if r.path == "/v2/account"]
    answers = [s for (_, path, s) in fake.records.responses if path == "/v2/account"][-len(calls):]
    assert answers == [429, 429, 200, 200, 200, 200, 200], "one request per closed window, then the backlog"
    for refused, following in ((calls[0], calls[1]), (calls[1], calls[2])):
        gap = (following.arrived_ns - refused.arrived_ns) / 1e9
        assert gap >= 0.45, f"nothing was sent before the venue's reset (next request after {gap:.3f} s)"
    assert broker.rest.limiter.throttled == 3
    assert fake.received_client_order_ids == ["burst-0"], "the refused order was not sent again"


async def test_updates_missed_while_the_trade_stream_was_down_are_recovered_once(venue: AlpacaHarness) -> None:
    broker, fake = venue.broker, venue.fake
    await venue.next_bar()
    await broker.submit("gap-1", OrderRequest(venue.symbol, Side.BUY, D(7)))
    await venue.updates()
    await fake.drop_trade_updates(stay_down=True)
    await venue.next_bar()  # it fills while nobody listens
    assert [u.fill for u in broker.drain_updates() if u.fill is not None] == []
    fake.restore_streams()
    await fake.wait_until(lambda: broker.trade_updates.connected and broker.trade_updates.reconnects == 1,
                          what="the trade-updates stream is back")
    updates = broker.drain_updates()
    fills = [u.fill for u in updates if u.fill is not None]
    assert [(f.client_order_id, f.quantity) for f in fills] == [("gap-1", D(7))]
    assert fills[0].price == fake.executions[-1].price
    assert updates[-1].status is OrderStatus.FILLED
    assert broker.feed_status()["counts"]["recovered_updates"] == 1
