"""The fake Alpaca (tests/fakes/alpaca) driven by the REAL alpaca-py 0.44 clients over 127.0.0.1.

Every body the fake sends must parse in alpaca-py's models, and every number must be exactly what the
fake's own accounting holds. The REST clients are synchronous (requests), so they run in worker threads;
the streams' ``_run_forever`` coroutine runs as a task in the test's loop (``run()`` would call asyncio.run).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import aiohttp
import pytest
import requests
from alpaca.common.exceptions import APIError
from alpaca.data.enums import DataFeed
from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
from alpaca.data.live import CryptoDataStream, StockDataStream
from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest
from alpaca.data.timeframe import TimeFrame
from alpaca.trading.client import TradingClient
from alpaca.trading.enums import OrderSide, OrderStatus, QueryOrderStatus, TimeInForce
from alpaca.trading.models import TradeUpdate
from alpaca.trading.requests import (
    ClosePositionRequest,
    GetCalendarRequest,
    GetOrdersRequest,
    LimitOrderRequest,
    MarketOrderRequest,
)
from alpaca.trading.stream import TradingStream

from tests.fakes.alpaca import KEY_ID, ONE_MINUTE, SECRET_KEY, Bar, FakeAlpaca

T0 = datetime(2026, 10, 1, 13, 30, tzinfo=UTC)  # a Thursday, 09:30 New York
T = TypeVar("T")


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlpaca]:
    async with FakeAlpaca(start_time=T0) as f:
        yield f


def trading(fake: FakeAlpaca, key: str = KEY_ID, secret: str = SECRET_KEY) -> TradingClient:
    return TradingClient(key, secret, paper=True, url_override=fake.base_url)


async def call(fn: Callable[..., T], *args: Any) -> T:
    """A blocking alpaca-py REST call off the loop the fake serves on."""
    return await asyncio.to_thread(fn, *args)


def market(symbol: str, qty: float, side: OrderSide, cid: str) -> MarketOrderRequest:
    return MarketOrderRequest(symbol=symbol, qty=qty, side=side, time_in_force=TimeInForce.DAY, client_order_id=cid)


@contextlib.asynccontextmanager
async def running(stream: StockDataStream | CryptoDataStream | TradingStream) -> AsyncIterator[None]:
    task = asyncio.create_task(stream._run_forever())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stream.close()


async def until(check: Callable[[], bool], what: str, seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.005)


# ---------------------------------------------------------------------------------------------- REST trading
async def test_account_clock_calendar_and_asset_parse(fake: FakeAlpaca) -> None:
    client = trading(fake)
    account = await call(client.get_account)
    assert account.account_number == "PA3FAKE00001"
    assert (Decimal(account.cash), Decimal(account.buying_power), Decimal(account.equity)) == (Decimal(100_000),) * 3
    assert account.status.value == "ACTIVE"

    clock = await call(client.get_clock)
    assert clock.timestamp == T0 and clock.is_open
    assert clock.next_close == datetime(2026, 10, 1, 20, 0, tzinfo=UTC)  # 16:00 New York (EDT)
    assert clock.next_open == datetime(2026, 10, 2, 13, 30, tzinfo=UTC)

    days = await call(client.get_calendar, GetCalendarRequest(start=date(2026, 11, 25), end=date(2026, 11, 30)))
    assert [d.date for d in days] == [date(2026, 11, 25), date(2026, 11, 27), date(2026, 11, 30)]  # Thanksgiving
    assert days[1].close == datetime(2026, 11, 27, 13, 0)  # the early close, New York time as Alpaca sends it
    assert days[0].open == datetime(2026, 11, 25, 9, 30)

    asset = await call(client.get_asset, "SPY")
    assert asset.symbol == "SPY" and asset.tradable


async def test_clock_follows_the_calendar_when_asked() -> None:
    saturday = datetime(2026, 10, 3, 15, 0, tzinfo=UTC)
    async with FakeAlpaca(start_time=saturday, market_open=None) as fake:
        clock = await call(trading(fake).get_clock)
    assert not clock.is_open
    assert clock.next_open == datetime(2026, 10, 5, 13, 30, tzinfo=UTC)


async def test_market_order_fills_at_next_bar_open_and_books_exactly(fake: FakeAlpaca) -> None:
    client = trading(fake)
    await fake.publish_bar("SPY", T0, "500.10", "500.50", "499.90", "500.20", 1200)  # before the order: no fill
    order = await call(client.submit_order, market("SPY", 10, OrderSide.BUY, "cid-1"))
    assert (order.client_order_id, order.status, order.filled_qty, order.qty) == ("cid-1", OrderStatus.ACCEPTED,
                                                                                   "0", "10")
    assert order.created_at == T0 + ONE_MINUTE  # market time: the close of the latest published bar

    with pytest.raises(APIError) as dup:
        await call(client.submit_order, market("SPY", 10, OrderSide.BUY, "cid-1"))
    assert (dup.value.status_code, dup.value.code) == (422, 40010001)
    assert fake.received_client_order_ids == ["cid-1", "cid-1"]
    assert len(fake.orders) == 1

    await fake.publish_bar("SPY", T0 + ONE_MINUTE, "500.31", "501", "500.01", "500.75", 900)
    got = await call(client.get_order_by_client_id, "cid-1")
    assert got.id == order.id and got.status == OrderStatus.FILLED
    assert (got.filled_qty, got.filled_avg_price) == ("10", "500.31")
    assert got.filled_at == T0 + ONE_MINUTE  # the instant the next bar opened
    by_id = await call(client.get_order_by_id, order.id)
    assert by_id.status == OrderStatus.FILLED

    positions = await call(client.get_all_positions)
    assert [(p.symbol, p.qty, p.avg_entry_price, p.side.value) for p in positions] == [("SPY", "10", "500.31", "long")]
    spy = await call(client.get_open_position, "SPY")
    assert (spy.cost_basis, spy.current_price, spy.market_value) == ("5003.1", "500.75", "5007.5")
    account = await call(client.get_account)
    assert Decimal(account.cash) == Decimal(100_000) - Decimal("5003.10")
    assert Decimal(account.equity) == Decimal(account.cash) + Decimal("5007.5")

    with pytest.raises(APIError) as missing:
        await call(client.get_open_position, "QQQ")
    assert (missing.value.status_code, missing.value.code) == (404, 40410000)


async def test_limit_orders_partial_fills_and_position_arithmetic(fake: FakeAlpaca) -> None:
    client = trading(fake)
    fake.set_max_fill_qty("lim-1", 4)
    limit = LimitOrderRequest(symbol="AAPL", qty=10, side=OrderSide.BUY, time_in_force=TimeInForce.GTC,
                              limit_price=200.5, client_order_id="lim-1")
    await call(client.submit_order, limit)
    await fake.publish_bar("AAPL", T0, "201", "202", "200.6", "201.5")  # low above the limit: nothing
    assert fake.order("lim-1").filled_qty == 0
    await fake.publish_bar("AAPL", T0 + ONE_MINUTE, "201", "201", "200", "200.2")  # crosses: 4 at the limit
    await fake.publish_bar("AAPL", T0 + 2 * ONE_MINUTE, "199.25", "200", "199", "199.5")  # opened through: 4 at open
    mid = await call(client.get_order_by_client_id, "lim-1")
    assert (mid.status, mid.filled_qty) == (OrderStatus.PARTIALLY_FILLED, "8")
    assert Decimal(mid.filled_avg_price) == (4 * Decimal("200.5") + 4 * Decimal("199.25")) / 8
    await fake.publish_bar("AAPL", T0 + 3 * ONE_MINUTE, "199.1", "199.2", "199", "199.1")
    done = await call(client.get_order_by_client_id, "lim-1")
    assert (done.status, done.filled_qty) == (OrderStatus.FILLED, "10")
    cost = 4 * Decimal("200.5") + 4 * Decimal("199.25") + 2 * Decimal("199.1")
    assert Decimal(done.filled_avg_price) == cost / 10
    position = await call(client.get_open_position, "AAPL")
    assert Decimal(position.avg_entry_price) == cost / 10 and position.qty == "10"

    # selling 15 closes the long (entry unchanged for what is left) and opens 5 short at the fill price
    await call(client.submit_order, market("AAPL", 15, OrderSide.SELL, "flip-1"))
    await fake.publish_bar("AAPL", T0 + 4 * ONE_MINUTE, "198", "198.5", "197.5", "198.2")
    short = await call(client.get_open_position, "AAPL")
    assert (short.qty, short.side.value, short.avg_entry_price) == ("-5", "short", "198")
    assert fake.cash == Decimal(100_000) - cost + 15 * Decimal(198)


async def test_cancel_list_and_cancel_filled(fake: FakeAlpaca) -> None:
    client = trading(fake)
    resting = await call(client.submit_order, LimitOrderRequest(
        symbol="SPY", qty=1, side=OrderSide.BUY, time_in_force=TimeInForce.DAY, limit_price=1, client_order_id="r"))
    filled = await call(client.submit_order, market("SPY", 2, OrderSide.BUY, "f"))
    await fake.publish_bar("SPY", T0, 500, 501, 499, 500)
    open_orders = await call(client.get_orders, GetOrdersRequest(status=QueryOrderStatus.OPEN, nested=True))
    assert [o.client_order_id for o in open_orders] == ["r"]
    closed = await call(client.get_orders, GetOrdersRequest(status=QueryOrderStatus.CLOSED, limit=10))
    assert [o.client_order_id for o in closed] == ["f"]

    assert await call(client.cancel_order_by_id, resting.id) is None  # 204, no body
    assert fake.order("r").status == "canceled"
    everything = await call(client.get_orders, GetOrdersRequest(status=QueryOrderStatus.ALL))
    assert {o.client_order_id: o.status for o in everything} == {"r": OrderStatus.CANCELED, "f": OrderStatus.FILLED}
    for order_id in (filled.id, resting.id):
        with pytest.raises(APIError) as refused:
            await call(client.cancel_order_by_id, order_id)
        assert (refused.value.status_code, refused.value.code) == (422, 42210000)
    assert ("DELETE", f"/v2/orders/{filled.id}", 422) in fake.records.responses


async def test_close_position_cancel_all_and_immediate_or_cancel(fake: FakeAlpaca) -> None:
    client = trading(fake)
    await call(client.submit_order, market("SPY", 10, OrderSide.BUY, "open"))
    await fake.publish_bar("SPY", T0, 50, 51, 49, 50)
    closing = await call(client.close_position, "SPY", ClosePositionRequest(percentage="40"))
    assert (closing.side, closing.qty, closing.status) == (OrderSide.SELL, "4", OrderStatus.ACCEPTED)
    ioc = LimitOrderRequest(symbol="SPY", qty=3, side=OrderSide.BUY, time_in_force=TimeInForce.IOC, limit_price=40,
                            client_order_id="ioc")
    await call(client.submit_order, ioc)
    await call(client.submit_order, LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, limit_price=1,
                                                      time_in_force=TimeInForce.GTC, client_order_id="rest"))
    await fake.publish_bar("SPY", T0 + ONE_MINUTE, 52, 52, 51, 51)
    assert fake.positions()["SPY"].qty == 6  # the close filled at 52; the IOC limit was not reached
    assert fake.order("ioc").status == "canceled" and fake.order("ioc").filled_qty == 0
    cancelled = await call(client.cancel_orders)
    assert [(str(c.id), c.status) for c in cancelled] == [(fake.order("rest").id, 200)]
    assert fake.order("rest").status == "canceled"


@pytest.mark.parametrize("status", [401, 403])
async def test_bad_key_is_refused_with_alpacas_error_body(status: int) -> None:
    async with FakeAlpaca(bad_key_status=status) as fake:
        with pytest.raises(APIError) as refused:
            await call(trading(fake, secret="wrong").get_account)
        ok = await call(trading(fake).get_account)
    assert refused.value.status_code == status
    assert refused.value.code == (40110000 if status == 401 else 40310000)
    assert ok.account_number


async def test_buying_power_and_synchronous_rejection(fake: FakeAlpaca) -> None:
    client = trading(fake)
    await fake.publish_bar("SPY", T0, 500, 500, 500, 500)
    with pytest.raises(APIError) as poor:
        await call(client.submit_order, market("SPY", 1000, OrderSide.BUY, "too-big"))
    assert (poor.value.status_code, poor.value.code, poor.value.message) == (403, 40310000,
                                                                             "insufficient buying power")
    fake.reject_next_order("asset SPY is not tradable")
    with pytest.raises(APIError) as rejected:
        await call(client.submit_order, market("SPY", 1, OrderSide.BUY, "nope"))
    assert rejected.value.message == "asset SPY is not tradable"
    assert fake.orders == [] and fake.received_client_order_ids == ["too-big", "nope"]


# ---------------------------------------------------------------------------------------------- market-data REST
def _bars(symbol: str, n: int, start: datetime = T0, base: int = 100) -> list[Bar]:
    return [Bar.make(symbol, start + i * ONE_MINUTE, base + i, base + i + 1, base + i - 1, Decimal(base + i) + Decimal(
        "0.5"), 1000 + i, trade_count=10 + i, vwap=Decimal(base + i) + Decimal("0.25")) for i in range(n)]


async def test_stock_bars_paginate_across_pages() -> None:
    async with FakeAlpaca(start_time=T0 + timedelta(hours=1), bars_page_size=7) as fake:
        fake.add_history(_bars("SPY", 10) + _bars("AAPL", 10, base=200))
        client = StockHistoricalDataClient(KEY_ID, SECRET_KEY, url_override=fake.base_url)
        request = StockBarsRequest(symbol_or_symbols=["SPY", "AAPL"], timeframe=TimeFrame.Minute, start=T0,
                                   end=T0 + 9 * ONE_MINUTE, feed=DataFeed.IEX)
        barset = await call(client.get_stock_bars, request)
        pages = [r for r in fake.records.requests if r.path == "/v2/stocks/bars"]
        limited = await call(client.get_stock_bars, StockBarsRequest(
            symbol_or_symbols="SPY", timeframe=TimeFrame.Minute, start=T0 + 2 * ONE_MINUTE, limit=5))
        with pytest.raises(APIError) as bad:
            await call(client.get_stock_bars, StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Hour))
    assert len(pages) == 3 and pages[0].query["feed"] == "iex" and pages[0].query["timeframe"] == "1Min"
    assert pages[1].query["page_token"] and "page_token" not in pages[0].query
    spy = barset.data["SPY"]
    assert [b.timestamp for b in spy] == [T0 + i * ONE_MINUTE for i in range(10)]  # open times, UTC
    assert (spy[3].open, spy[3].high, spy[3].low, spy[3].close, spy[3].volume, spy[3].trade_count,
            spy[3].vwap) == (103, 104, 102, 103.5, 1003, 13, 103.25)
    assert [b.open for b in barset.data["AAPL"]] == [200 + i for i in range(10)]
    assert [b.timestamp for b in limited.data["SPY"]] == [T0 + i * ONE_MINUTE for i in range(2, 7)]
    assert bad.value.status_code == 400


async def test_crypto_bars(fake: FakeAlpaca) -> None:
    fake.add_history([Bar.make("BTC/USD", T0, "60000.5", "60010", "59990", "60001.25", "0.125")])
    client = CryptoHistoricalDataClient(KEY_ID, SECRET_KEY, url_override=fake.base_url)
    barset = await call(client.get_crypto_bars, CryptoBarsRequest(symbol_or_symbols="BTC/USD",
                                                                  timeframe=TimeFrame.Minute, start=T0))
    (bar,) = barset.data["BTC/USD"]
    assert (bar.timestamp, bar.open, bar.close, bar.volume) == (T0, 60000.5, 60001.25, 0.125)
    assert fake.records.requests[-1].path == "/v1beta3/crypto/us/bars"


# ---------------------------------------------------------------------------------------------- market-data stream
async def test_market_data_stream_sends_msgpack_bars_alpaca_py_parses(fake: FakeAlpaca) -> None:
    got: list[Any] = []

    async def on_bar(bar: Any) -> None:
        got.append(bar)

    stream = StockDataStream(KEY_ID, SECRET_KEY, url_override=fake.stock_stream_url("iex"))
    stream.subscribe_bars(on_bar, "SPY", "AAPL")
    async with running(stream):
        await fake.wait_subscribed("SPY")
        await fake.publish_bar("SPY", T0, "500.25", "501", "499.5", "500.75", 1234, trade_count=42, vwap="500.4")
        await fake.publish_bar("QQQ", T0, 400, 401, 399, 400)  # not subscribed: not sent
        await fake.publish_bars([Bar.make("AAPL", T0 + ONE_MINUTE, 200, 201, 199, 200.5),
                                 Bar.make("SPY", T0 + ONE_MINUTE, "500.75", 502, 500, 501)])
        await until(lambda: len(got) == 3, "three bars")
    assert [(b.symbol, b.timestamp) for b in got] == [("SPY", T0), ("AAPL", T0 + ONE_MINUTE),
                                                      ("SPY", T0 + ONE_MINUTE)]
    first = got[0]
    assert (first.open, first.high, first.low, first.close, first.volume, first.trade_count, first.vwap) == (
        500.25, 501, 499.5, 500.75, 1234, 42, 500.4)
    assert first.timestamp.tzinfo is not None
    frames = fake.records.bar_frames
    assert [f.receivers for f in frames] == [1, 0, 1] and frames[2].symbols == ("AAPL", "SPY")
    assert frames[0].sent_ns < frames[2].sent_ns


async def test_market_data_drop_reconnects_and_bars_missed_while_down_are_in_history(fake: FakeAlpaca) -> None:
    got: list[Any] = []

    async def on_bar(bar: Any) -> None:
        got.append(bar)

    stream = StockDataStream(KEY_ID, SECRET_KEY, url_override=fake.stock_stream_url("sip"))
    stream._reconnect_min_backoff = 0.05  # alpaca-py waits 0.5-1 s before its first reconnect by default
    stream.subscribe_bars(on_bar, "SPY")
    async with running(stream):
        await fake.wait_subscribed("SPY")
        await fake.publish_bar("SPY", T0, 1, 1, 1, 1)
        await until(lambda: len(got) == 1, "first bar")
        assert await fake.drop_market_data(stay_down=True) == 1
        await fake.publish_bar("SPY", T0 + ONE_MINUTE, 2, 2, 2, 2)  # nobody is connected: lost to the stream
        assert fake.records.bar_frames[-1].receivers == 0
        fake.restore_streams()
        await fake.wait_subscribed("SPY")
        assert fake.market_data.connections_total >= 2
        await fake.publish_bar("SPY", T0 + 2 * ONE_MINUTE, 3, 3, 3, 3)
        await until(lambda: len(got) == 2, "bar after reconnect")
    assert [b.open for b in got] == [1, 3]
    history = await call(StockHistoricalDataClient(KEY_ID, SECRET_KEY, url_override=fake.base_url).get_stock_bars,
                         StockBarsRequest(symbol_or_symbols="SPY", timeframe=TimeFrame.Minute, start=T0))
    assert [b.open for b in history.data["SPY"]] == [1, 2, 3]


async def test_market_data_bad_key_gets_error_frame(fake: FakeAlpaca, caplog: pytest.LogCaptureFixture) -> None:
    async def on_bar(bar: Any) -> None:
        raise AssertionError("no bar expected")

    stream = StockDataStream(KEY_ID, "wrong", url_override=fake.stock_stream_url())
    stream.subscribe_bars(on_bar, "SPY")
    with caplog.at_level(logging.ERROR, logger="alpaca.data.live.websocket"):
        async with running(stream):
            await until(lambda: "auth failed" in caplog.text, "alpaca-py logs the auth failure")
    assert fake.market_data.subscribed("SPY") == 0


# ---------------------------------------------------------------------------------------------- trade updates
def _trading_stream(fake: FakeAlpaca, updates: list[TradeUpdate]) -> TradingStream:
    async def on_update(update: TradeUpdate) -> None:
        updates.append(update)

    stream = TradingStream(KEY_ID, SECRET_KEY, paper=True, url_override=fake.trading_stream_url)
    stream._reconnect_min_backoff = 0.05
    stream.subscribe_trade_updates(on_update)
    return stream


async def test_trade_updates_new_and_fill_agree_with_rest(fake: FakeAlpaca) -> None:
    updates: list[TradeUpdate] = []
    client = trading(fake)
    async with running(_trading_stream(fake, updates)):
        await fake.wait_listening()
        order = await call(client.submit_order, market("SPY", 3, OrderSide.BUY, "tu-1"))
        await until(lambda: len(updates) == 1, "new")
        await fake.publish_bar("SPY", T0, "412.37", 413, 412, "412.5")
        await until(lambda: len(updates) == 2, "fill")
    new, fill = updates
    assert (new.event, new.order.id, new.order.status) == ("new", order.id, OrderStatus.NEW)
    assert (fill.event, fill.order.client_order_id, fill.order.status) == ("fill", "tu-1", OrderStatus.FILLED)
    assert (fill.price, fill.qty, fill.position_qty, fill.timestamp) == (412.37, 3, 3, T0)
    assert fill.execution_id is not None
    rest = await call(client.get_order_by_id, order.id)
    assert (rest.filled_avg_price, rest.filled_qty) == (fill.order.filled_avg_price, fill.order.filled_qty)
    assert [e.execution_id for e in fake.executions] == [str(fill.execution_id)]
    assert fake.records.trade_updates[-1].receivers == 1


async def test_trade_updates_partial_fills_duplicated_and_out_of_order(fake: FakeAlpaca) -> None:
    updates: list[TradeUpdate] = []
    async with running(_trading_stream(fake, updates)):
        await fake.wait_listening()
        fake.set_max_fill_qty("p-1", 2)
        await call(trading(fake).submit_order, market("SPY", 3, OrderSide.BUY, "p-1"))
        await until(lambda: len(updates) == 1, "new")
        fake.reorder_next_trade_updates(2)
        fake.duplicate_next_trade_updates(1)  # the next one SENT: after reordering, the fill
        await fake.publish_bar("SPY", T0, 100, 100, 100, 100)  # partial_fill 2: held
        assert len(updates) == 1
        await fake.publish_bar("SPY", T0 + ONE_MINUTE, 101, 101, 101, 101)  # fill 1: both go out, reversed
        await until(lambda: len(updates) == 4, "the fill twice, then the partial fill")
    events = [(u.event, u.qty, u.price, u.position_qty) for u in updates[1:]]
    assert events == [("fill", 1, 101, 3), ("fill", 1, 101, 3), ("partial_fill", 2, 100, 2)]
    assert updates[1].execution_id == updates[2].execution_id != updates[3].execution_id
    assert updates[1].order.filled_avg_price == str((2 * Decimal(100) + Decimal(101)) / 3)


async def test_trade_updates_drop_async_reject_expire_and_cancel(fake: FakeAlpaca) -> None:
    updates: list[TradeUpdate] = []
    client = trading(fake)
    async with running(_trading_stream(fake, updates)):
        await fake.wait_listening()
        assert await fake.drop_trade_updates(stay_down=True) == 1
        # while the socket is down, a fill happens: the stream never sends it, REST has it
        await call(client.submit_order, market("SPY", 1, OrderSide.BUY, "missed"))
        await fake.publish_bar("SPY", T0, 10, 10, 10, 10)
        assert fake.records.trade_updates[-1].receivers == 0
        fake.restore_streams()
        await fake.wait_listening()  # alpaca-py reconnected by itself
        assert fake.trade_updates.connections_total >= 2
        assert (await call(client.get_order_by_client_id, "missed")).status == OrderStatus.FILLED

        fake.reject_next_order("order rejected by risk check", asynchronous=True)
        accepted = await call(client.submit_order, market("SPY", 1, OrderSide.BUY, "rej"))
        await call(client.submit_order, LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, limit_price=1,
                                                          time_in_force=TimeInForce.DAY, client_order_id="day"))
        await call(client.submit_order, LimitOrderRequest(symbol="SPY", qty=1, side=OrderSide.BUY, limit_price=2,
                                                          time_in_force=TimeInForce.GTC, client_order_id="gtc"))
        await fake.expire_day_orders()
        await fake.cancel_by_venue("gtc")
        await until(lambda: len(updates) == 6, "six updates")
    seen = [(u.event, u.order.client_order_id) for u in updates]
    assert seen == [("new", "rej"), ("rejected", "rej"), ("new", "day"), ("new", "gtc"), ("expired", "day"),
                    ("canceled", "gtc")]
    assert accepted.status == OrderStatus.ACCEPTED
    assert updates[1].order.status == OrderStatus.REJECTED and updates[1].order.failed_at is not None
    assert fake.order("day").status == "expired" and fake.order("gtc").status == "canceled"


# ---------------------------------------------------------------------------------------------- REST faults
async def test_429_burst_is_visible_and_carries_the_reset(fake: FakeAlpaca) -> None:
    strict = trading(fake)
    strict._retry = 0  # alpaca-py retries 429 itself (3 times, time.sleep(3) between) unless told not to
    fake.rate_limit_next(2, reset_in_seconds=30)
    with pytest.raises(APIError) as limited:
        await call(strict.get_account)
    err = limited.value
    assert (err.status_code, err.code) == (429, 42910000)
    headers = err.response.headers
    assert (headers["X-RateLimit-Limit"], headers["X-RateLimit-Remaining"]) == ("200", "0")
    assert time.time() + 25 < int(headers["X-RateLimit-Reset"]) <= time.time() + 31  # epoch seconds

    retrying = trading(fake)
    retrying._retry_wait = 0  # the constructor ignores 0; the default is a 3 s blocking sleep per 429
    assert (await call(retrying.get_account)).account_number
    assert [s for _, p, s in fake.records.responses if p == "/v2/account"] == [429, 429, 200]


async def test_rate_limit_per_minute_is_enforced_over_a_sliding_window() -> None:
    async with FakeAlpaca(rate_limit_per_minute=3) as fake:
        client = trading(fake)
        client._retry = 0
        for _ in range(3):
            await call(client.get_clock)
        with pytest.raises(APIError) as limited:
            await call(client.get_clock)
    assert limited.value.status_code == 429
    assert [s for _, _, s in fake.records.responses] == [200, 200, 200, 429]


async def test_500_refuses_without_acting_and_slow_responses_are_slow(fake: FakeAlpaca) -> None:
    client = trading(fake)
    fake.fail_next(1, 500, path_prefix="/v2/orders")
    await call(client.get_account)  # another path: not affected
    with pytest.raises(APIError) as failed:
        await call(client.submit_order, market("SPY", 1, OrderSide.BUY, "five-hundred"))
    assert (failed.value.status_code, failed.value.code) == (500, 50010000)
    assert fake.orders == [] and fake.received_client_order_ids == ["five-hundred"]

    fake.delay_next(0.3, 1)
    started = time.monotonic()
    await call(client.get_clock)
    assert time.monotonic() - started >= 0.3
    assert fake.faults.delays == []


async def test_outage_refuses_connections_and_keeps_the_venues_state(fake: FakeAlpaca) -> None:
    client = trading(fake)
    await call(client.submit_order, market("SPY", 1, OrderSide.BUY, "before"))
    port = fake.port
    await fake.go_away()
    with pytest.raises(requests.exceptions.ConnectionError):
        await call(client.get_account)
    await fake.come_back()
    assert fake.port == port
    assert (await call(client.get_order_by_client_id, "before")).qty == "1"
    with pytest.raises(APIError) as unknown:
        await call(client.get, "/no/such/route")
    assert (unknown.value.status_code, unknown.value.code) == (404, 40410000)


async def test_lost_submit_response_leaves_the_order_on_the_venue(fake: FakeAlpaca) -> None:
    updates: list[TradeUpdate] = []
    client = trading(fake)
    async with running(_trading_stream(fake, updates)):
        await fake.wait_listening()
        fake.lose_next_submit_response()
        with pytest.raises(requests.exceptions.ConnectionError):
            await call(client.submit_order, market("SPY", 5, OrderSide.SELL, "lost-1"))
        await until(lambda: len(updates) == 1, "the new event still goes out")
    assert fake.order("lost-1") is not None
    found = await call(client.get_order_by_client_id, "lost-1")
    assert (found.status, found.qty, updates[0].order.id) == (OrderStatus.NEW, "5", found.id)
    assert fake.received_client_order_ids == ["lost-1"]
    assert ("POST", "/v2/orders", 0) in fake.records.responses  # 0: no answer reached the client


async def test_records_time_bar_frames_and_order_arrivals_on_one_clock(fake: FakeAlpaca) -> None:
    """What bench/broker_latency.py measures: bar frame sent → order request received, in monotonic ns."""
    client = trading(fake)

    async def on_bar(bar: Any) -> None:
        await asyncio.to_thread(client.submit_order, market("SPY", 1, OrderSide.BUY, f"lat-{bar.open:g}"))

    stream = StockDataStream(KEY_ID, SECRET_KEY, url_override=fake.stock_stream_url())
    stream.subscribe_bars(on_bar, "SPY")
    async with running(stream):
        await fake.wait_subscribed("SPY")
        for i in range(3):
            await fake.publish_bar("SPY", T0 + i * ONE_MINUTE, 10 + i, 10 + i, 10 + i, 10 + i)
            await until(lambda i=i: len(fake.received_client_order_ids) == i + 1, "order for the bar")
    arrivals = {r.client_order_id: r.arrived_ns for r in fake.records.requests if r.client_order_id}
    frames = fake.records.bar_frames
    assert list(arrivals) == ["lat-10", "lat-11", "lat-12"]
    for frame, cid in zip(frames, arrivals, strict=True):
        assert frame.sent_ns < arrivals[cid]
    # each order fills at the next bar's open: the first two are filled, the last is waiting
    assert [fake.order(c).status for c in arrivals] == ["filled", "filled", "new"]
    assert fake.positions()["SPY"].avg_entry_price == Decimal("11.5")


# ---------------------------------------------------------------------------------------------- raw protocol
async def test_protocol_details_other_clients_rely_on(fake: FakeAlpaca) -> None:
    """Without alpaca-py: JSON market data for clients that do not ask for msgpack, the subscription answer,
    the trading stream's acks, and its binary frames (Alpaca's paper endpoint sends JSON in binary frames)."""
    async with aiohttp.ClientSession() as session:
        async with session.ws_connect(fake.stock_stream_url()) as ws:
            assert await ws.receive_json() == [{"T": "success", "msg": "connected"}]
            await ws.send_json({"action": "subscribe", "bars": ["SPY"]})
            assert (await ws.receive_json())[0]["code"] == 401  # not authenticated yet
            await ws.send_json({"action": "auth", "key": KEY_ID, "secret": SECRET_KEY})
            assert await ws.receive_json() == [{"T": "success", "msg": "authenticated"}]
            await ws.send_json({"action": "subscribe", "bars": ["SPY"], "trades": ["AAPL"]})
            (sub,) = await ws.receive_json()
            assert (sub["T"], sub["bars"], sub["trades"], sub["quotes"]) == ("subscription", ["SPY"], ["AAPL"], [])
            await fake.publish_bar("SPY", T0, "1.5", 2, 1, "1.75", 7)
            (bar,) = await ws.receive_json()
            assert bar == {"T": "b", "S": "SPY", "o": 1.5, "h": 2.0, "l": 1.0, "c": 1.75, "v": 7,
                           "t": "2026-10-01T13:30:00Z", "n": 1, "vw": 1.5625}

        async with session.ws_connect(fake.trading_stream_url) as ws:
            await ws.send_json({"action": "authenticate", "data": {"key_id": KEY_ID, "secret_key": SECRET_KEY}})
            auth = await ws.receive()
            assert auth.type == aiohttp.WSMsgType.BINARY
            assert json.loads(auth.data)["data"] == {"action": "authenticate", "status": "authorized"}
            await ws.send_json({"action": "listen", "data": {"streams": ["trade_updates"]}})
            assert json.loads((await ws.receive()).data) == {"stream": "listening",
                                                             "data": {"streams": ["trade_updates"]}}
            await call(trading(fake).submit_order, market("SPY", 1, OrderSide.BUY, "raw"))
            update = json.loads((await ws.receive()).data)
            assert (update["stream"], update["data"]["event"], update["data"]["order"]["qty"]) == (
                "trade_updates", "new", "1")


async def test_text_frames_on_request_and_crypto_stream() -> None:
    async with FakeAlpaca(start_time=T0, trade_updates_binary=False) as fake:
        async with aiohttp.ClientSession() as session, session.ws_connect(fake.trading_stream_url) as ws:
            await ws.send_json({"action": "authenticate", "data": {"key_id": KEY_ID, "secret_key": "bad"}})
            refused = await ws.receive()
            assert refused.type == aiohttp.WSMsgType.TEXT
            assert json.loads(refused.data)["data"]["status"] == "unauthorized"

        got: list[Any] = []

        async def on_bar(bar: Any) -> None:
            got.append(bar)

        stream = CryptoDataStream(KEY_ID, SECRET_KEY, url_override=fake.crypto_stream_url)
        stream.subscribe_bars(on_bar, "BTC/USD")
        async with running(stream):
            await fake.wait_subscribed("BTC/USD")
            await fake.publish_bar("BTC/USD", T0, "60000", "60100", "59900", "60050.5", "1.25")
            await until(lambda: len(got) == 1, "crypto bar")
    assert (got[0].symbol, got[0].timestamp, got[0].close, got[0].volume) == ("BTC/USD", T0, 60050.5, 1.25)
