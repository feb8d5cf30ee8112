"""A wire-level fake of Alpaca's trading and market-data APIs, driven by the real alpaca-py clients.

Usage (the fake serves on the test's loop; alpaca-py REST is blocking, so call it from a worker thread)::

    async with FakeAlpaca(start_time=T0) as fake:
        rest = TradingClient(KEY_ID, SECRET_KEY, paper=True, url_override=fake.base_url)
        data = StockHistoricalDataClient(KEY_ID, SECRET_KEY, url_override=fake.base_url)
        bars = StockDataStream(KEY_ID, SECRET_KEY, url_override=fake.stock_stream_url("iex"))
        updates = TradingStream(KEY_ID, SECRET_KEY, url_override=fake.trading_stream_url)
        ...
        await fake.publish_bar("SPY", T0, o, h, l, c, v)   # T0 = the bar's OPEN time; fills, then the frame
        await asyncio.to_thread(rest.submit_order, ...)

Modules, one job each: ``market`` (account, orders, positions, matching), ``wire`` (Alpaca's JSON/msgpack
shapes), ``streams`` (the two websockets), ``faults`` (queued faults and records), ``server`` (routes and
the public ``FakeAlpaca`` API).
"""

from tests.fakes.alpaca.faults import BarFrameRecord, RequestRecord, TradeUpdateRecord
from tests.fakes.alpaca.market import ONE_MINUTE, Bar, Execution, Order, Position
from tests.fakes.alpaca.server import KEY_ID, SECRET_KEY, FakeAlpaca

__all__ = ["KEY_ID", "ONE_MINUTE", "SECRET_KEY", "Bar", "BarFrameRecord", "Execution", "FakeAlpaca", "Order",
           "Position", "RequestRecord", "TradeUpdateRecord"]
