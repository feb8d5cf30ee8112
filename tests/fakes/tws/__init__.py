"""A wire-level fake of TWS / IB Gateway's API socket, driven by the real ib_async 2.1 client.

Usage (the fake serves on the test's loop; ib_async runs on the same loop)::

    async with FakeTws() as tws:
        ib = IB()
        await ib.connectAsync("127.0.0.1", tws.port, clientId=7)
        [spy] = await ib.qualifyContractsAsync(Stock("SPY", "SMART", "USD"))
        bars = ib.reqRealTimeBars(spy, 5, "TRADES", False)
        await tws.publish_bar("SPY", ts_open, o, h, l, c, v)   # 5-second bar stamped at its OPEN; fills first

Modules, one job each: ``wire`` (framing and the message layouts at server version 176), ``venue``
(contracts, account, orders, executions, matching, history), ``server`` (the socket, the requests served and
the fault injection).
"""

from tests.fakes.tws.server import FakeTws
from tests.fakes.tws.venue import ACCOUNT, DEFAULT_INSTRUMENTS, Bar5, Execution, Order, ib_commission
from tests.fakes.tws.wire import SERVER_VERSION, Instrument

__all__ = ["ACCOUNT", "DEFAULT_INSTRUMENTS", "SERVER_VERSION", "Bar5", "Execution", "FakeTws", "Instrument", "Order",
           "ib_commission"]
