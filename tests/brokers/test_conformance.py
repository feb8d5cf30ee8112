"""The broker conformance suite: what every ``Broker`` must do, whatever the venue.

Parametrised by the venue harnesses in ``harness.HARNESSES``; the simulator
runs it now, each live adapter runs it against its wire-level fake. The
expectations are the daemon's: client order ids are the key, a duplicate is
refused, an order whose submit answer was lost can be found by its client id,
fills carry unique ids and add up, and positions, open orders, the account
and history agree with the fills.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from brokers.base import ZERO, Broker, Fill, OrderRequest, OrderStatus, OrderType, OrderUpdate, Side
from brokers.errors import OrderRejected
from tests.brokers.harness import HARNESSES, VenueHarness

D = Decimal
QTY = D(1000)

# the order a status may move in; an update never goes back
_RANK = {
    OrderStatus.NEW: 0, OrderStatus.SUBMITTED: 1, OrderStatus.ACCEPTED: 2, OrderStatus.PARTIALLY_FILLED: 3,
    OrderStatus.CANCEL_PENDING: 3, OrderStatus.FILLED: 4, OrderStatus.CANCELLED: 4, OrderStatus.REJECTED: 4,
    OrderStatus.EXPIRED: 4,
}


@pytest.fixture(params=sorted(HARNESSES))
async def venue(request: pytest.FixtureRequest) -> AsyncIterator[VenueHarness]:
    harness = await HARNESSES[request.param]()
    try:
        await harness.next_bar()  # a price to trade on
        yield harness
    finally:
        await harness.close()


@pytest.fixture(params=sorted(HARNESSES))
async def partial_venue(request: pytest.FixtureRequest) -> AsyncIterator[VenueHarness]:
    """A venue that fills at most 400 units per execution (the fake's fault injection; the sim's cap)."""
    harness = await HARNESSES[request.param](max_fill_quantity=D(400))
    try:
        await harness.next_bar()
        yield harness
    finally:
        await harness.close()


def _market(venue: VenueHarness, side: Side = Side.BUY, quantity: Decimal = QTY) -> OrderRequest:
    return OrderRequest(venue.symbol, side, quantity)


def _resting_bid(venue: VenueHarness) -> OrderRequest:
    return OrderRequest(venue.symbol, Side.BUY, QTY, OrderType.LIMIT, venue.unreachable_bid)


def _fills(updates: list[OrderUpdate]) -> list[Fill]:
    return [u.fill for u in updates if u.fill is not None]


async def _filled(venue: VenueHarness, request: OrderRequest, cid: str) -> list[OrderUpdate]:
    """Submit a market order and move the market until the venue reports it filled; its updates."""
    await venue.broker.submit(cid, request)
    seen: list[OrderUpdate] = []
    for _ in range(3):
        await venue.next_bar()
        seen += [u for u in await venue.updates() if u.client_order_id == cid]
        if seen and seen[-1].status is OrderStatus.FILLED:
            return seen
    raise AssertionError(f"{cid} not filled after 3 bars: {[u.status for u in seen]}")


def test_the_venue_speaks_the_protocol(venue: VenueHarness) -> None:
    assert isinstance(venue.broker, Broker)
    assert venue.broker.name


async def test_submit_answers_for_the_client_order_id(venue: VenueHarness) -> None:
    update = await venue.broker.submit("conf-1", _resting_bid(venue))
    assert update.client_order_id == "conf-1"
    assert update.status in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED)
    assert update.broker_order_id, "the venue's own id is reported"
    assert update.filled_quantity == ZERO


async def test_a_duplicate_client_order_id_is_refused_and_the_first_order_stands(venue: VenueHarness) -> None:
    first = await venue.broker.submit("conf-dup", _resting_bid(venue))
    with pytest.raises(OrderRejected, match="conf-dup"):
        await venue.broker.submit("conf-dup", _market(venue))
    again = await venue.broker.get_order("conf-dup")
    assert again is not None
    assert (again.broker_order_id, again.status) == (first.broker_order_id, first.status)
    assert [o.client_order_id for o in await venue.broker.open_orders()] == ["conf-dup"]


async def test_an_order_whose_answer_was_lost_is_found_by_its_client_order_id(venue: VenueHarness) -> None:
    sent = await venue.broker.submit("conf-lost", _resting_bid(venue))  # pretend this answer never arrived
    found = await venue.broker.get_order("conf-lost")
    assert found is not None
    assert found.broker_order_id == sent.broker_order_id
    assert found.symbol == venue.symbol
    assert await venue.broker.get_order("conf-never-sent") is None, "unknown is not an order"


async def test_cancel_ends_a_working_order_and_reports_it(venue: VenueHarness) -> None:
    await venue.broker.submit("conf-cxl", _resting_bid(venue))
    await venue.updates()
    answer = await venue.broker.cancel("conf-cxl")
    assert answer.status in (OrderStatus.CANCEL_PENDING, OrderStatus.CANCELLED)
    await venue.next_bar()
    final = await venue.broker.get_order("conf-cxl")
    assert final is not None and final.status is OrderStatus.CANCELLED
    streamed = [u.status for u in await venue.updates() if u.client_order_id == "conf-cxl"]
    assert streamed and streamed[-1] is OrderStatus.CANCELLED
    assert await venue.broker.open_orders() == []


async def test_cancelling_a_filled_order_changes_nothing(venue: VenueHarness) -> None:
    await _filled(venue, _market(venue), "conf-done")
    answer = await venue.broker.cancel("conf-done")
    assert answer.status is OrderStatus.FILLED
    assert answer.filled_quantity == QTY


async def test_a_market_order_fills_in_full_with_positions_and_cash_that_agree(venue: VenueHarness) -> None:
    before = await venue.broker.account()
    updates = await _filled(venue, _market(venue), "conf-buy")
    (fill,) = _fills(updates)
    assert (fill.client_order_id, fill.symbol, fill.side, fill.quantity) == ("conf-buy", venue.symbol, Side.BUY, QTY)
    assert fill.price > 0 and fill.fee >= 0
    assert updates[-1].filled_quantity == QTY and updates[-1].average_price == fill.price
    (position,) = await venue.broker.positions()
    assert (position.symbol, position.quantity) == (venue.symbol, QTY)
    after = await venue.broker.account()
    assert after.cash == before.cash - fill.quantity * fill.price - fill.fee, "cash moves by notional and fee exactly"


async def test_partial_fills_add_up_to_the_order_and_are_reported_in_order(partial_venue: VenueHarness) -> None:
    venue = partial_venue
    await venue.broker.submit("conf-part", _market(venue))
    updates: list[OrderUpdate] = []
    for _ in range(4):
        await venue.next_bar()
        updates += [u for u in await venue.updates() if u.client_order_id == "conf-part"]
    fills = _fills(updates)
    assert [f.quantity for f in fills] == [D(400), D(400), D(200)]
    assert sum((f.quantity for f in fills), ZERO) == QTY
    # a live venue also streams its acknowledgement ("new"); besides that, each update is one fill
    with_fill = [u for u in updates if u.fill is not None]
    assert all(u.status in (OrderStatus.SUBMITTED, OrderStatus.ACCEPTED) for u in updates if u.fill is None)
    assert [u.status for u in with_fill] == [
        OrderStatus.PARTIALLY_FILLED, OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED,
    ]
    assert [u.filled_quantity for u in with_fill] == [D(400), D(800), D(1000)], "cumulative, never backwards"
    notional = sum((f.quantity * f.price for f in fills), ZERO)
    assert abs(updates[-1].average_price - notional / QTY) < D("1e-20")


async def test_fill_ids_are_unique_and_the_execution_report_repeats_none(partial_venue: VenueHarness) -> None:
    venue = partial_venue
    await venue.broker.submit("conf-ids", _market(venue))
    streamed: list[Fill] = []
    for _ in range(4):
        await venue.next_bar()
        streamed += _fills(await venue.updates())
    reported = await venue.broker.fills_for("conf-ids")
    assert len({f.fill_id for f in streamed}) == len(streamed) == 3
    assert reported == streamed, "the execution report is the streamed fills, each once, oldest first"
    assert await venue.broker.fills_for("conf-unknown") == []


async def test_updates_of_one_order_only_move_forward(venue: VenueHarness) -> None:
    await venue.broker.submit("conf-fwd", _market(venue))
    await venue.broker.submit("conf-rest", _resting_bid(venue))
    await venue.broker.cancel("conf-rest")
    seen: dict[str, list[OrderUpdate]] = {}
    for _ in range(2):
        await venue.next_bar()
        for update in await venue.updates():
            seen.setdefault(update.client_order_id, []).append(update)
    for cid, updates in seen.items():
        ranks = [_RANK[u.status] for u in updates]
        assert ranks == sorted(ranks), f"{cid}: {[u.status for u in updates]}"
        assert [u.ts for u in updates] == sorted(u.ts for u in updates), f"{cid}: time goes back"
        filled = [u.filled_quantity for u in updates]
        assert filled == sorted(filled), f"{cid}: filled quantity goes back"


async def test_open_orders_list_exactly_the_working_orders(venue: VenueHarness) -> None:
    await venue.broker.submit("conf-open", _resting_bid(venue))
    await _filled(venue, _market(venue), "conf-closed")
    assert [o.client_order_id for o in await venue.broker.open_orders()] == ["conf-open"]


async def test_a_round_trip_leaves_no_position(venue: VenueHarness) -> None:
    await _filled(venue, _market(venue, Side.BUY), "conf-rt-buy")
    await _filled(venue, _market(venue, Side.SELL), "conf-rt-sell")
    assert await venue.broker.positions() == []


async def test_history_holds_what_was_delivered_and_nothing_ahead(venue: VenueHarness) -> None:
    delivered = [await venue.next_bar() for _ in range(3)]
    now = venue.broker.now()
    assert now >= delivered[-1].ts
    history = await venue.broker.historical_bars(venue.symbol, delivered[0].ts, now)
    assert [b.ts for b in history] == [b.ts for b in delivered]
    assert history == delivered
    assert await venue.broker.historical_bars(venue.symbol, now + 1, now + 10 * 86_400) == [], "no look-ahead"


async def test_the_clock_never_goes_back(venue: VenueHarness) -> None:
    times = [venue.broker.now()]
    for _ in range(3):
        await venue.next_bar()
        times.append(venue.broker.now())
    assert times == sorted(times)


def test_the_feed_reports_its_state_as_json_values(venue: VenueHarness) -> None:
    import json

    status = venue.broker.feed_status()
    assert json.loads(json.dumps(status)) == status


async def test_stop_bars_ends_the_stream_promptly(venue: VenueHarness) -> None:
    import asyncio

    venue.broker.stop_bars()
    async with asyncio.timeout(5):
        with pytest.raises(StopAsyncIteration):
            await venue.next_bar()
