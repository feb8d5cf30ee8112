"""The fake OANDA speaks v20 well enough for the real oandapyV20 0.7.2 client: every endpoint class the adapter
uses accepts the fake's status and body, errors arrive as ``V20Error`` with v20's body, and the pricing stream
yields PRICE and HEARTBEAT lines."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from typing import Any

import oandapyV20.endpoints.accounts as accounts
import oandapyV20.endpoints.instruments as instruments
import oandapyV20.endpoints.orders as orders
import oandapyV20.endpoints.positions as positions
import oandapyV20.endpoints.pricing as pricing
import oandapyV20.endpoints.transactions as transactions
import pytest
from oandapyV20 import API
from oandapyV20.exceptions import V20Error
from oandapyV20.oandapyV20 import TRADING_ENVIRONMENTS

from tests.fakes.oanda import ACCOUNT_ID, TOKEN, FakeOanda

T0 = 1483344000  # 2017-01-02T08:00:00Z
ENV = "fake-oanda-test"


@pytest.fixture
async def fake() -> AsyncIterator[FakeOanda]:
    async with FakeOanda(start_time=T0) as f:
        TRADING_ENVIRONMENTS[ENV] = {"api": f.base_url, "stream": f.base_url}
        yield f


def _api(token: str = TOKEN) -> API:
    return API(access_token=token, environment=ENV, request_params={"timeout": 5})


async def _call(endpoint: Any, token: str = TOKEN) -> Any:
    return await asyncio.to_thread(_api(token).request, endpoint)


def _order(cid: str, units: str, kind: str = "MARKET", price: str | None = None) -> dict[str, Any]:
    order: dict[str, Any] = {"type": kind, "instrument": "EUR_USD", "units": units, "clientExtensions": {"id": cid}}
    if price is not None:
        order.update(price=price, timeInForce="GTC")
    return {"order": order}


async def test_every_endpoint_the_adapter_uses_parses(fake: FakeOanda) -> None:
    fake.price("EUR_USD", T0 + 1, "1.1000", "1.1002")
    assert (await _call(accounts.AccountList()))["accounts"][0]["id"] == ACCOUNT_ID
    summary = await _call(accounts.AccountSummary(ACCOUNT_ID))
    assert summary["account"]["balance"] == "100000" and summary["account"]["currency"] == "USD"
    created = await _call(orders.OrderCreate(ACCOUNT_ID, data=_order("c-1", "-1000")))  # oandapyV20 wants 201
    assert created["orderCreateTransaction"]["type"] == "MARKET_ORDER"
    await _call(orders.OrderCreate(ACCOUNT_ID, data=_order("c-2", "500", "LIMIT", "1.0000")))
    fake.price("EUR_USD", T0 + 2, "1.1001", "1.1003")  # the market order fills at the bid
    order = (await _call(orders.OrderDetails(ACCOUNT_ID, orderID="@c-1")))["order"]
    assert (order["state"], order["units"], order["clientExtensions"]["id"]) == ("FILLED", "-1000", "c-1")
    pending = (await _call(orders.OrdersPending(ACCOUNT_ID)))["orders"]
    assert [o["clientExtensions"]["id"] for o in pending] == ["c-2"]
    cancelled = await _call(orders.OrderCancel(ACCOUNT_ID, orderID="@c-2"))
    assert cancelled["orderCancelTransaction"]["reason"] == "CLIENT_REQUEST"
    (position,) = (await _call(positions.OpenPositions(ACCOUNT_ID)))["positions"]
    assert (position["short"]["units"], position["short"]["averagePrice"], position["long"]["units"]) == (
        "-1000", "1.1001", "0")
    since = await _call(transactions.TransactionsSinceID(ACCOUNT_ID, params={"id": "0"}))
    kinds = [t["type"] for t in since["transactions"]]
    assert kinds == ["MARKET_ORDER", "LIMIT_ORDER", "ORDER_FILL", "ORDER_CANCEL"]
    fill = since["transactions"][2]
    assert (fill["units"], fill["price"], fill["clientOrderID"]) == ("-1000", "1.1001", "c-1")
    fake.heartbeat(T0 + 60)
    candles = await _call(instruments.InstrumentsCandles("EUR_USD", params={
        "granularity": "M1", "price": "MBA", "from": "2017-01-02T08:00:00.000000000Z", "count": 10}))
    (candle,) = candles["candles"]
    assert candle["complete"] is True and candle["volume"] == 2
    assert (candle["mid"]["o"], candle["bid"]["h"], candle["ask"]["c"]) == ("1.1001", "1.1001", "1.1003")


async def test_refusals_arrive_as_v20_errors_with_the_venue_body(fake: FakeOanda) -> None:
    with pytest.raises(V20Error) as refused:
        await _call(accounts.AccountSummary(ACCOUNT_ID), token="wrong")
    assert refused.value.code == 401
    await _call(orders.OrderCreate(ACCOUNT_ID, data=_order("d-1", "100")))
    with pytest.raises(V20Error) as duplicate:
        await _call(orders.OrderCreate(ACCOUNT_ID, data=_order("d-1", "100")))
    body = json.loads(duplicate.value.msg)
    assert duplicate.value.code == 400
    assert body["orderRejectTransaction"]["rejectReason"] == "CLIENT_ORDER_ID_ALREADY_EXISTS"
    with pytest.raises(V20Error) as missing:
        await _call(orders.OrderDetails(ACCOUNT_ID, orderID="@nope"))
    assert missing.value.code == 404 and json.loads(missing.value.msg)["errorCode"] == "ORDER_DOESNT_EXIST"
    fake.rate_limit_next()
    with pytest.raises(V20Error) as limited:
        await _call(positions.OpenPositions(ACCOUNT_ID))
    assert limited.value.code == 429
    assert fake.records.duplicate_client_ids() == {"d-1": 2}


async def test_the_pricing_stream_yields_heartbeats_and_prices(fake: FakeOanda) -> None:
    got: list[dict[str, Any]] = []
    done = threading.Event()

    def read() -> None:
        stream = pricing.PricingStream(ACCOUNT_ID, params={"instruments": "EUR_USD"})
        for message in _api().request(stream):
            got.append(message)
            if len(got) == 3:
                done.set()
                return

    reader = asyncio.to_thread(read)
    task = asyncio.ensure_future(reader)
    await fake.wait_streaming()
    fake.price("EUR_USD", T0 + 5, "1.2000", "1.2002")
    fake.heartbeat(T0 + 10)
    await asyncio.wait_for(task, 5)
    assert done.is_set()
    assert [m["type"] for m in got] == ["HEARTBEAT", "PRICE", "HEARTBEAT"]
    assert got[1]["bids"][0]["price"] == "1.2000" and got[2]["time"] == "2017-01-02T08:00:10.000000000Z"
