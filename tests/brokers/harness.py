"""What the broker conformance suite needs from a venue under test, and the simulator's harness.

Every ``Broker`` (the simulator now; Alpaca, IB and OANDA against their
wire-level fakes next) passes the same suite, ``test_conformance.py``. A venue
joins by adding a factory to ``HARNESSES`` that returns a ``VenueHarness``:
the connected broker plus the means to move its market one bar and to wait
until the updates it streams have arrived.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Protocol

from brokers.alpaca import AlpacaBroker, AlpacaSettings
from brokers.base import Bar, Broker, OrderUpdate
from brokers.costs import CostModel
from brokers.ib import ContractSpec, IbBroker, IbSettings
from brokers.oanda import OandaBroker, OandaSettings
from brokers.sim import ReplayFeed, SimBroker
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca
from tests.fakes.oanda import ACCOUNT_ID as OANDA_ACCOUNT
from tests.fakes.oanda import TOKEN as OANDA_TOKEN
from tests.fakes.oanda import FakeOanda
from tests.fakes.tws import FakeTws

D = Decimal
SYMBOL = "EURUSD"
T0 = 1483344000  # 2017-01-02T08:00:00Z, a Monday
HOUR = 3600
ALPACA_SYMBOL = "SPY"
ALPACA_CRYPTO_SYMBOL = "BTC/USD"
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


class _OnAFake:
    """What the live harnesses share: the adapter's bar stream opened once, each bar awaited with a deadline,
    the adapter then its fake closed."""

    broker: Any
    fake: Any

    def __post_init__(self) -> None:
        self._bars = self.broker.bars()

    async def _delivered(self) -> Bar:
        async with asyncio.timeout(5):
            return await anext(self._bars)

    async def close(self) -> None:
        try:
            await self.broker.close()
        finally:
            await self.fake.close()


@dataclass
class AlpacaHarness(_OnAFake):
    """The Alpaca adapter against the wire-level fake (tests/fakes/alpaca): one minute bar per ``next_bar``."""

    broker: AlpacaBroker
    fake: FakeAlpaca
    t0: int
    symbol: str = ALPACA_SYMBOL
    unreachable_bid: Decimal = Decimal("0.5000")
    published: int = 0

    async def next_bar(self) -> Bar:
        o, h, lo, c = _OHLC[self.published % len(_OHLC)]
        ts_open = datetime.fromtimestamp(self.t0 + self.published * 60, UTC)
        self.published += 1
        await self.fake.publish_bar(self.symbol, ts_open, o, h, lo, c, 100)
        return await self._delivered()

    async def updates(self) -> list[OrderUpdate]:
        session = self.broker.trade_updates_session
        await self.fake.wait_until(lambda: session.messages >= len(self.fake.records.trade_updates),
                                   what="the adapter received every trade update sent")
        return self.broker.drain_updates()


def alpaca_settings(fake: FakeAlpaca, **overrides: object) -> AlpacaSettings:
    """Settings that point the adapter at ``fake``, with short backoff and deadlines for tests."""
    values: dict[str, object] = dict(
        key_id=KEY_ID, secret_key=SECRET_KEY, symbols=(ALPACA_SYMBOL,), trading_url=fake.base_url,
        data_url=fake.base_url, data_stream_url=fake.stock_stream_url("iex"),
        trading_stream_url=fake.trading_stream_url, backoff_floor_seconds=0.05, backoff_cap_seconds=0.5,
        in_flight_deadline_seconds=2.0, request_timeout_seconds=2.0, seed=7,
    )
    values.update(overrides)
    return AlpacaSettings(**values)  # type: ignore[arg-type]


async def alpaca_harness(*, max_fill_quantity: Decimal | None = None, symbol: str = ALPACA_SYMBOL) -> AlpacaHarness:
    """The adapter on a fresh fake; a ``BASE/QUOTE`` symbol trades crypto over the crypto stream and endpoints."""
    t0 = int(time.time()) // 60 * 60 - 3600  # an hour ago: every bar is history once published, none ahead
    fake = FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC), max_fill_qty_per_bar=max_fill_quantity)
    await fake.start()
    try:
        stream = fake.crypto_stream_url if "/" in symbol else fake.stock_stream_url("iex")
        broker = AlpacaBroker(alpaca_settings(fake, symbols=(symbol,), data_stream_url=stream), connect_timeout=10)
        await broker.connect()
    except BaseException:
        await fake.close()
        raise
    return AlpacaHarness(broker, fake, t0, symbol=symbol)


# ---------------------------------------------------------------------- OANDA
OANDA_INSTRUMENT = "EUR_USD"


@dataclass
class OandaHarness(_OnAFake):
    """The OANDA adapter against the wire-level fake (tests/fakes/oanda): one M1 bar per ``next_bar``.

    A bar is four ticks (open, high, low, close as mids, 0.0001 either side) and a heartbeat at its close;
    market orders fill at the next tick. ``updates`` polls the transactions once, then drains.
    """

    broker: OandaBroker
    fake: FakeOanda
    t0: int
    symbol: str = SYMBOL
    unreachable_bid: Decimal = Decimal("0.5000")
    published: int = 0

    async def next_bar(self) -> Bar:
        o, h, lo, c = _OHLC[self.published % len(_OHLC)]
        start = self.t0 + self.published * 60
        self.published += 1
        publish_oanda_bar(self.fake, start, (o, h, lo, c))
        return await self._delivered()

    async def updates(self) -> list[OrderUpdate]:
        await self.broker.poll_transactions()
        return self.broker.drain_updates()


def publish_oanda_bar(fake: FakeOanda, start: int, ohlc: tuple[float, float, float, float],
                      instrument: str = OANDA_INSTRUMENT, step: int = 60) -> None:
    """Ticks at the bar's open, high, low and close (mids, a 2-pip spread), then a heartbeat at its close."""
    for offset, mid in zip((1, step // 3, 2 * step // 3, step - 1), ohlc, strict=True):
        m = Decimal(str(mid))
        fake.price(instrument, start + offset, m - Decimal("0.0001"), m + Decimal("0.0001"))
    fake.heartbeat(start + step)


def oanda_settings(fake: FakeOanda, **overrides: object) -> OandaSettings:
    """Settings that point the adapter at ``fake``, with short backoff, deadlines and heartbeat limit."""
    values: dict[str, object] = dict(
        token=OANDA_TOKEN, account_id=OANDA_ACCOUNT, instruments=(OANDA_INSTRUMENT,), api_url=fake.base_url,
        stream_url=fake.base_url, backoff_floor_seconds=0.05, backoff_cap_seconds=0.5,
        in_flight_deadline_seconds=2.0, request_timeout_seconds=2.0, heartbeat_limit_seconds=2.0,
        transactions_poll_seconds=0.2, granularity="M1", seed=7,
    )
    values.update(overrides)
    return OandaSettings(**values)  # type: ignore[arg-type]


async def oanda_harness(*, max_fill_quantity: Decimal | None = None) -> OandaHarness:
    fake = FakeOanda(start_time=T0, max_fill_units=max_fill_quantity)
    await fake.start()
    try:
        broker = OandaBroker(oanda_settings(fake), connect_timeout=10)
        await broker.connect()
    except BaseException:
        await fake.close()
        raise
    return OandaHarness(broker, fake, T0)


HarnessFactory = Callable[..., Awaitable[VenueHarness]]
HARNESSES: dict[str, HarnessFactory] = {
    "sim": sim_harness,
    "alpaca": alpaca_harness,
    "alpaca-crypto": functools.partial(alpaca_harness, symbol=ALPACA_CRYPTO_SYMBOL),
}
HARNESSES["oanda"] = oanda_harness


# ---------------------------------------------------------------------- Interactive Brokers (fake TWS)
IB_SYMBOL = "SPY"


@dataclass
class IbHarness(_OnAFake):
    """The IB adapter (ib_async) against the fake TWS (tests/fakes/tws): one 5-second bar per ``next_bar``."""

    broker: IbBroker
    fake: FakeTws
    t0: int
    symbol: str = IB_SYMBOL
    unreachable_bid: Decimal = Decimal("0.5000")
    published: int = 0

    async def next_bar(self) -> Bar:
        o, h, lo, c = _OHLC[self.published % len(_OHLC)]
        ts_open = self.t0 + self.published * 5
        self.published += 1
        await self.fake.publish_bar(self.symbol, ts_open, o, h, lo, c, 100)
        return await self._delivered()

    async def updates(self) -> list[OrderUpdate]:
        await self.fake.wait_until(lambda: self.broker.ib.client.isReady(), what="the adapter's socket is up")
        await asyncio.sleep(0.05)  # the fake wrote its reports before returning; the loop reads them meanwhile
        return self.broker.drain_updates()


def ib_settings(fake: FakeTws, **overrides: object) -> IbSettings:
    """Settings that point the adapter at ``fake``: SPY in 5-second bars, short backoff and deadlines."""
    values: dict[str, object] = dict(
        contracts=(ContractSpec(IB_SYMBOL, "STK", IB_SYMBOL),), port=fake.port, client_id=11, bar_seconds=5,
        backoff_floor_seconds=0.05, backoff_cap_seconds=0.5, ack_timeout_seconds=2.0, request_timeout_seconds=3.0,
        connect_timeout_seconds=5.0, seed=7,
    )
    values.update(overrides)
    return IbSettings(**values)  # type: ignore[arg-type]


async def ib_harness(*, max_fill_quantity: Decimal | None = None) -> IbHarness:
    t0 = int(time.time()) // 60 * 60 - 3600  # an hour ago: every bar is history once published, none ahead
    fake = FakeTws(max_fill_qty_per_bar=max_fill_quantity)
    await fake.start()
    try:
        broker = IbBroker(ib_settings(fake))
        await broker.connect()
    except BaseException:
        await fake.close()
        raise
    return IbHarness(broker, fake, t0)


HARNESSES["ib"] = ib_harness
