"""A wire-level fake of Alpaca's trading and market-data APIs for tests; see ``server.FakeAlpaca``."""

from tests.fakes.alpaca.faults import BarFrameRecord, RequestRecord, TradeUpdateRecord
from tests.fakes.alpaca.market import ONE_MINUTE, Bar, Execution, Order, Position
from tests.fakes.alpaca.server import KEY_ID, SECRET_KEY, FakeAlpaca

__all__ = ["KEY_ID", "ONE_MINUTE", "SECRET_KEY", "Bar", "BarFrameRecord", "Execution", "FakeAlpaca", "Order",
           "Position", "RequestRecord", "TradeUpdateRecord"]
