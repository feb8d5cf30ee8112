"""What the broker conformance suite needs from a venue under test, and the simulator's harness.

Every ``Broker`` (the simulator now; Alpaca, IB and OANDA against their
wire-level fakes next) passes the same suite, ``test_conformance.py``. A venue
joins by adding a factory to ``HARNESSES`` that returns a ``VenueHarness``:
the connected broker plus the means to move its market one bar and to wait
until the updates it streams have arrived.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

from brokers.base import Bar, Broker, OrderUpdate
from brokers.costs import CostModel
from brokers.sim import ReplayFeed, SimBroker

D = Decimal
SYMBOL = "EURUSD"
T0 = 1483344000  # 2017-01-02T08:00:00Z, a Monday
HOUR = 3600
# (open, high, low, close): a small hand-made series, so the suite's expectations are exact
_OHLC = [
    (1.1000, 1.1050, 1.0950, 1.1010),
    (1.1020, 1.1100, 1.1000, 1.1080),
    (1.1090, 1.1120, 1.1040, 1.1050),
    (1.1060, 1.1080, 1.1030, 1.1070),
    (1.1070, 1.1090, 1.1060, 1.1065),
    (1.1066, 1.1075, 1.1040, 1.1050),
    (1.1050, 1.1060, 1.1020, 1.1030),
    (1.1030, 1.1070, 1.1025, 1.1060),
]
SERIES = [Bar(SYMBOL, T0 + i * HOUR, o, h, lo, c, 100.0) for i, (o, h, lo, c) in enumerate(_OHLC)]


class VenueHarness(Protocol):
    broker: Broker
    symbol: str
    # a limit buy below this price cannot fill in the harness's market (for cancel and open-order tests)
    unreachable_bid: Decimal

    async def next_bar(self) -> Bar:
        """Let the market produce its next bar and return it (as the broker's stream delivered it)."""
        ...

    async def updates(self) -> list[OrderUpdate]:
        """Wait until the updates the venue has sent so far have arrived; return them, oldest first."""
        ...

    async def close(self) -> None: ...


@dataclass
class SimHarness:
    broker: SimBroker
    symbol: str = SYMBOL
    unreachable_bid: Decimal = Decimal("0.5000")

    def __post_init__(self) -> None:
        self._bars = self.broker.bars()

    async def next_bar(self) -> Bar:
        return await anext(self._bars)

    async def updates(self) -> list[OrderUpdate]:
        return self.broker.drain_updates()  # the simulator delivers synchronously

    async def close(self) -> None:
        await self.broker.close()


async def sim_harness(*, max_fill_quantity: Decimal | None = None) -> SimHarness:
    costs = CostModel(
        spread_bps=D(2), slippage_bps=D(1), commission_bps=D(1), price_increment=D("0.0001"), fee_increment=D("0.01")
    )
    broker = SimBroker(ReplayFeed(SERIES), costs, max_fill_quantity=max_fill_quantity)
    await broker.connect()
    return SimHarness(broker)


HarnessFactory = Callable[..., Awaitable[VenueHarness]]
HARNESSES: dict[str, HarnessFactory] = {"sim": sim_harness}
