"""A wire-level fake of OANDA's v20 REST API and pricing stream, driven by the real oandapyV20 client.

Usage (the fake serves on the test's loop; oandapyV20 is blocking, so call it from a worker thread)::

    async with FakeOanda(start_time=T0) as fake:
        TRADING_ENVIRONMENTS["fake"] = {"api": fake.base_url, "stream": fake.base_url}
        api = API(access_token=TOKEN, environment="fake")
        fake.price("EUR_USD", T0 + 1, "1.1000", "1.1002")   # fills first, then the PRICE line
        fake.heartbeat(T0 + 60)                             # the venue clock moves: the bar is complete
        await asyncio.to_thread(api.request, orders.OrderCreate(ACCOUNT_ID, data={...}))

Modules: ``market`` (account, orders, FIFO trades, transactions, candles), ``server`` (routes, the stream,
faults, records).
"""

from tests.fakes.oanda.market import Market, Order, Tick, rfc3339
from tests.fakes.oanda.server import ACCOUNT_ID, TOKEN, FakeOanda

__all__ = ["ACCOUNT_ID", "TOKEN", "FakeOanda", "Market", "Order", "Tick", "rfc3339"]
