"""The OANDA adapter against the wire-level fake, fault by fault: a silent stream, a dropped stream, rejects,
a lost submit answer, a 429 on submit, partial fills with fees, financing, and the FX weekend.

Every test ends with no client order id sent twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from brokers.base import Bar, OrderRequest, OrderStatus, OrderType, Side
from brokers.errors import OrderRejected
from brokers.oanda import OandaBroker
from daemon.bar_guard import BarGuard
from daemon.config import TradectlConfig
from daemon.venues import oanda_settings as settings_from_config
from tests.brokers.harness import OANDA_INSTRUMENT, oanda_settings, publish_oanda_bar
from tests.fakes.oanda import ACCOUNT_ID, TOKEN, FakeOanda

D = Decimal
T0 = 1483344000  # 2017-01-02T08:00:00Z, a Monday
SYMBOL = "EURUSD"
LIMIT = 1.0  # heartbeat limit (seconds) in these tests


def _ohlc(i: int) -> tuple[float, float, float, float]:
    base = 1.1 + 0.001 * (i % 7)
    return base, base + 0.0005, base - 0.0005, base + 0.0002


class _Venue:
    def __init__(self, fake: FakeOanda, broker: OandaBroker) -> None:
        self.fake, self.broker = fake, broker
        self.bars = broker.bars()
        self.published = 0

    async def bar(self) -> Bar:
        start = T0 + self.published * 60
        publish_oanda_bar(self.fake, start, _ohlc(self.published))
        self.published += 1
        async with asyncio.timeout(5):
            return await anext(self.bars)

    def publish_only(self) -> None:
        publish_oanda_bar(self.fake, T0 + self.published * 60, _ohlc(self.published))
        self.published += 1


@pytest.fixture
async def venue() -> AsyncIterator[_Venue]:
    async with FakeOanda(start_time=T0, commission="0.25", heartbeat_every=0.2) as fake:
        broker = OandaBroker(oanda_settings(fake, heartbeat_limit_seconds=LIMIT), connect_timeout=10)
        await broker.connect()
        try:
            yield _Venue(fake, broker)
        finally:
            await broker.close()
        assert fake.records.duplicate_client_ids() == {}, "no client order id sent twice"


async def test_a_silent_stream_is_detected_within_the_heartbeat_limit_and_backfilled(venue: _Venue) -> None:
    first = [await venue.bar() for _ in range(2)]
    venue.fake.go_silent()
    silent_at = time.monotonic()
    venue.publish_only()  # bars the dead connection never carries
    venue.publish_only()
    await venue.fake.wait_until(lambda: venue.broker.stream.silent_disconnects >= 1, seconds=5,
                                what="the adapter declares the stream dead")
    detected = time.monotonic() - silent_at
    assert detected <= LIMIT + 0.5, f"silence detected after {detected:.2f} s (limit {LIMIT} s)"
    backfilled = [await anext(venue.bars) for _ in range(2)]  # from candles, once reconnected
    live = await venue.bar()
    times = [b.ts for b in first + backfilled + [live]]
    assert times == [T0 + 60 * (i + 1) for i in range(5)], "every bar once, in order, none missing"
    assert venue.broker.counts["backfilled_bars"] == 2
    status = venue.broker.feed_status()
    assert status["connected"] is True and status["reconnects"] == 1 and status["silent_disconnects"] == 1
    assert "no message for 1 s" in status["pricing"]["last_error"]
    history = await venue.broker.historical_bars(SYMBOL, times[0], times[-1])
    assert history == first + backfilled + [live], "stream-built bars equal the venue's candles"


async def test_a_dropped_stream_reconnects_and_backfills_with_no_duplicate_bar(venue: _Venue) -> None:
    before = await venue.bar()
    # half of the next bar arrives live, then the connection drops and the rest of the bar happens meanwhile
    start = T0 + venue.published * 60
    venue.fake.price(OANDA_INSTRUMENT, start + 5, "1.2000", "1.2002")
    await asyncio.sleep(0.05)
    await venue.fake.drop_stream(stay_down=True)
    venue.fake.price(OANDA_INSTRUMENT, start + 30, "1.2100", "1.2102")
    venue.fake.heartbeat(start + 60)
    venue.published += 1
    venue.publish_only()
    venue.fake.restore_stream()
    recovered = [await anext(venue.bars) for _ in range(2)]
    after = await venue.bar()
    assert [b.ts for b in [before, *recovered, after]] == [T0 + 60 * i for i in range(1, 5)]
    assert (recovered[0].open, recovered[0].high, recovered[0].volume) == (1.2001, 1.2101, 2.0), "the whole bar"
    assert venue.broker.counts["bars"] == 4 and venue.broker.counts["backfilled_bars"] == 2
    assert venue.broker.feed_status()["reconnects"] == 1


async def test_the_bar_in_progress_at_a_reconnect_is_finished_whole(venue: _Venue) -> None:
    await venue.bar()
    start = T0 + venue.published * 60
    venue.fake.price(OANDA_INSTRUMENT, start + 5, "1.3000", "1.3002")  # only the dropped connection saw it
    await asyncio.sleep(0.05)
    await venue.fake.drop_stream()
    await venue.fake.wait_streaming(1, seconds=5)
    await venue.fake.wait_until(lambda: venue.broker.pricing.connected, what="reconnected")
    venue.fake.price(OANDA_INSTRUMENT, start + 50, "1.2900", "1.2902")
    venue.fake.heartbeat(start + 60)
    bar = await anext(venue.bars)
    assert (bar.ts, bar.open, bar.low, bar.close, bar.volume) == (start + 60, 1.3001, 1.2901, 1.2901, 2.0)
    assert venue.broker.counts["seeded_bars"] == 1


async def test_a_margin_reject_is_mapped_to_our_reason_code(venue: _Venue) -> None:
    await venue.bar()
    venue.fake.reject_next_order("INSUFFICIENT_MARGIN")
    with pytest.raises(OrderRejected, match="insufficient_margin: OANDA INSUFFICIENT_MARGIN"):
        await venue.broker.submit("rej-1", OrderRequest(SYMBOL, Side.BUY, D(1000)))
    venue.fake.reject_next_order("INSUFFICIENT_MARGIN", cancel_after_create=True)  # 201, created and cancelled
    with pytest.raises(OrderRejected, match="insufficient_margin"):
        await venue.broker.submit("rej-2", OrderRequest(SYMBOL, Side.BUY, D(1000)))
    await venue.broker.poll_transactions()
    assert venue.broker.drain_updates() == [], "a refused order's cancel is not news"
    assert venue.fake.order("rej-2").state == "CANCELLED" and venue.fake.order("rej-1") is None


async def test_a_duplicate_client_id_of_the_same_order_is_already_sent(venue: _Venue) -> None:
    await venue.bar()
    request = OrderRequest(SYMBOL, Side.SELL, D(500), OrderType.LIMIT, D("1.5000"))
    first = await venue.broker.submit("dup-1", request)
    again = await venue.broker.submit("dup-1", request)  # an earlier copy arrived: reported, not re-placed
    assert again.broker_order_id == first.broker_order_id
    assert len([o for o in venue.fake.orders if o.client_id == "dup-1"]) == 1
    venue.fake.records.client_ids.remove("dup-1")  # sent twice on purpose here


async def test_a_lost_submit_answer_is_found_by_client_id_and_not_sent_again(venue: _Venue) -> None:
    await venue.bar()
    venue.fake.lose_next_submit_response()
    update = await venue.broker.submit("lost-1", OrderRequest(SYMBOL, Side.BUY, D(1000)))
    assert update.status is OrderStatus.ACCEPTED and update.broker_order_id == venue.fake.order("lost-1").id
    assert venue.fake.records.client_ids.count("lost-1") == 1


async def test_a_429_on_submit_rejects_the_order_and_pauses_every_caller(venue: _Venue) -> None:
    await venue.bar()
    venue.fake.rate_limit_next(1, path_prefix=f"/v3/accounts/{ACCOUNT_ID}/orders")
    with pytest.raises(OrderRejected, match="rate_limited"):
        await venue.broker.submit("rl-1", OrderRequest(SYMBOL, Side.BUY, D(1000)))
    assert venue.fake.order("rl-1") is None
    assert venue.broker.rest.limiter.throttled == 1
    venue.fake.rate_limit_next(1, path_prefix=f"/v3/accounts/{ACCOUNT_ID}/summary")
    account = await venue.broker.account()  # a read is asked again after the pause
    assert account.cash == D(100_000)


async def test_partial_fills_carry_the_venue_fee_and_add_up(venue: _Venue) -> None:
    await venue.bar()
    venue.fake.market.max_fill_units = D(300)
    await venue.broker.submit("part-1", OrderRequest(SYMBOL, Side.BUY, D(1000)))
    await venue.bar()  # four ticks: at most 300 units each
    await venue.broker.poll_transactions()
    updates = [u for u in venue.broker.drain_updates() if u.fill is not None]
    assert [u.fill.quantity for u in updates] == [D(300), D(300), D(300), D(100)]
    assert [u.status for u in updates] == [OrderStatus.PARTIALLY_FILLED] * 3 + [OrderStatus.FILLED]
    assert [u.filled_quantity for u in updates] == [D(300), D(600), D(900), D(1000)]
    assert all(u.fill.fee == D("0.25") for u in updates), "commission is the fill's fee, exactly"
    fake_fills = [(tx["id"], D(tx["units"]), D(tx["price"])) for tx in venue.fake.fills]
    assert [(u.fill.fill_id, u.fill.quantity, u.fill.price) for u in updates] == fake_fills
    assert await venue.broker.fills_for("part-1") == [u.fill for u in updates]
    (position,) = await venue.broker.positions()
    assert position.quantity == D(1000)


async def test_fills_missed_before_a_restart_come_from_the_history(venue: _Venue) -> None:
    await venue.bar()
    await venue.broker.submit("hist-1", OrderRequest(SYMBOL, Side.SELL, D(700)))
    await venue.bar()
    fresh = OandaBroker(oanda_settings(venue.fake), connect_timeout=10)  # a restarted process: nothing in memory
    try:
        fills = await fresh.fills_for("hist-1")
        order = await fresh.get_order("hist-1")
    finally:
        await fresh.close()
    assert [(f.side, f.quantity, f.fee) for f in fills] == [(Side.SELL, D(700), D("0.25"))]
    assert order is not None and order.status is OrderStatus.FILLED and order.filled_quantity == D(700)


async def test_daily_financing_is_counted_and_a_foreign_order_is_not_ours(venue: _Venue) -> None:
    await venue.bar()
    venue.fake.market.financing(D("-1.2345"))
    await venue.broker.poll_transactions()
    assert venue.broker.feed_status()["financing"] == "-1.2345"
    assert venue.broker.drain_updates() == []


async def test_no_bars_over_the_fx_weekend_and_the_gap_is_judged_like_a_replay() -> None:
    friday = 1483736400 - 60  # 2017-01-06 20:59 UTC: the FX week (risk.window) closes at 21:00 UTC
    sunday = friday + 60 + 2 * 86400  # 2017-01-08 21:00 UTC: it opens again
    config = TradectlConfig(broker={"kind": "oanda", "oanda": {"account_id": ACCOUNT_ID, "granularity": "M1"}},
                            data={"symbol": SYMBOL, "bar_seconds": 60}, oanda={"token": TOKEN})
    session_open = settings_from_config(config).session_open
    assert session_open is not None
    async with FakeOanda(start_time=friday - 60) as fake:
        broker = OandaBroker(oanda_settings(fake, session_open=session_open), connect_timeout=10)
        await broker.connect()
        bars = broker.bars()
        try:
            publish_oanda_bar(fake, friday - 60, _ohlc(0))  # Friday 20:58-20:59
            publish_oanda_bar(fake, friday, _ohlc(1))  # 20:59-21:00: the last minute of the week
            for hour in range(0, 48, 6):  # stray weekend ticks: no bar
                publish_oanda_bar(fake, friday + 60 + hour * 3600, _ohlc(2))
            publish_oanda_bar(fake, sunday + 60, _ohlc(3))  # Sunday 21:01: the week is open again
            got = [await anext(bars) for _ in range(3)]
            assert [b.ts for b in got] == [friday, friday + 60, sunday + 120]
            assert broker.feed_status()["session_closed_ticks"] == 8 * 4
        finally:
            await broker.close()
    guard = BarGuard(config.guard.max_gap_seconds)
    verdicts = [guard.check(b) for b in got]
    assert [v.accepted for v in verdicts] == [True, True, True], "a weekend is not a gap under the 3-day rule"
    short = BarGuard(24 * 3600)  # the same bars under a shorter gap rule: the Sunday bar starts a new episode
    assert [short.check(b).reason for b in got][-1] == "gap"
