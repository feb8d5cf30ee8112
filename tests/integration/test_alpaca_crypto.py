"""Alpaca crypto through the same adapter, against the wire-level fake: minute bars from the crypto stream
(``/v1beta3/crypto/us``), history and backfill from ``/v1beta3/crypto/us/bars``, fractional orders filled at the
venue's prices, positions in our spelling although Alpaca names them without the slash, an always-open market,
and a time in force Alpaca refuses for crypto stopped before it is sent.

(The whole broker conformance suite also runs on a crypto symbol: the ``alpaca-crypto`` harness.)
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from brokers.alpaca import AlpacaBroker
from brokers.base import Bar, OrderRequest, OrderStatus, Side, TimeInForce
from brokers.errors import ConfigError, OrderRejected
from daemon.config import TradectlConfig, load_config
from daemon.runners import LiveRunner
from daemon.venues import alpaca_settings as settings_from_config
from tests.brokers.harness import alpaca_settings
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca
from tests.waiting import until

D = Decimal
PAIR = "BTC/USD"
ROOT = Path(__file__).resolve().parents[2]


class _Venue:
    def __init__(self, fake: FakeAlpaca, broker: AlpacaBroker, t0: int) -> None:
        self.fake, self.broker, self.t0 = fake, broker, t0
        self.published = 0
        self.bars = broker.bars()

    async def publish(self, n: int = 1) -> None:
        """Trade ``n`` more minute bars of BTC/USD (fractional volumes, as crypto's are)."""
        for _ in range(n):
            i = self.published
            self.published += 1
            await self.fake.publish_bar(PAIR, datetime.fromtimestamp(self.t0 + i * 60, UTC), f"{60000 + i}.5",
                                        f"{60010 + i}", f"{59990 + i}", f"{60001 + i}.25", "0.125")

    async def take(self, n: int) -> list[Bar]:
        async with asyncio.timeout(10):
            return [await anext(self.bars) for _ in range(n)]


@pytest.fixture
async def venue() -> AsyncIterator[_Venue]:
    t0 = int(time.time()) // 60 * 60 - 3600
    # the stock market's clock says closed: crypto trades regardless
    fake = FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC), market_open=False)
    await fake.start()
    broker = AlpacaBroker(alpaca_settings(fake, symbols=(PAIR,), data_stream_url=fake.crypto_stream_url),
                          connect_timeout=10)
    try:
        await broker.connect()
        yield _Venue(fake, broker, t0)
    finally:
        await broker.close()
        await fake.close()


async def test_bars_come_from_the_crypto_stream_and_the_market_is_always_open(venue: _Venue) -> None:
    (conn,) = venue.fake.market_data.conns
    assert conn.request.path == "/v1beta3/crypto/us"
    await venue.publish(2)
    bars = await venue.take(2)
    assert [(b.symbol, b.ts) for b in bars] == [(PAIR, venue.t0 + 60), (PAIR, venue.t0 + 120)], "close-stamped"
    assert (bars[0].open, bars[0].close, bars[0].volume) == (60000.5, 60001.25, 0.125)
    status = venue.broker.feed_status()
    assert (status["asset_class"], status["feed"], status["market_open"]) == ("crypto", "crypto/us", True)
    assert status["subscribed"] == [PAIR] and status["connected"] is True


async def test_a_fractional_order_fills_at_the_venue_price_and_the_position_keeps_our_spelling(
        venue: _Venue) -> None:
    broker, fake = venue.broker, venue.fake
    await venue.publish()
    await venue.take(1)
    ack = await broker.submit("c-1", OrderRequest(PAIR, Side.BUY, D("0.0125")))
    assert ack.status is OrderStatus.ACCEPTED and fake.order("c-1").time_in_force == "gtc"
    await venue.publish()
    await venue.take(1)
    await fake.wait_until(lambda: broker.trade_updates_session.messages >= len(fake.records.trade_updates))
    fills = [u.fill for u in broker.drain_updates() if u.fill is not None]
    (execution,) = fake.executions
    assert [(f.symbol, f.quantity, f.price, f.fee) for f in fills] == [(PAIR, D("0.0125"), execution.price, D(0))]
    assert execution.price == D("60001.5"), "the next bar's open"
    raw = await broker.rest.positions()
    assert raw[0]["symbol"] == "BTCUSD", "Alpaca names crypto positions without the slash"
    (position,) = await broker.positions()
    assert (position.symbol, position.quantity, position.average_price) == (PAIR, D("0.0125"), D("60001.5"))
    assert await broker.fills_for("c-1") == fills
    assert fake.received_client_order_ids == ["c-1"]


async def test_a_day_order_is_refused_before_it_is_sent(venue: _Venue) -> None:
    await venue.publish()
    with pytest.raises(OrderRejected, match="gtc or ioc, not day; not sent"):
        await venue.broker.submit("c-day", OrderRequest(PAIR, Side.BUY, D("0.01"), time_in_force=TimeInForce.DAY))
    ack = await venue.broker.submit("c-ioc", OrderRequest(PAIR, Side.BUY, D("0.01"), time_in_force=TimeInForce.IOC))
    assert ack.status is OrderStatus.ACCEPTED
    assert venue.fake.received_client_order_ids == ["c-ioc"]


async def test_a_dropped_crypto_socket_is_backfilled_from_the_crypto_history(venue: _Venue) -> None:
    broker, fake = venue.broker, venue.fake
    await venue.publish(2)
    seen = await venue.take(2)
    assert await fake.drop_market_data(stay_down=True) == 1
    await venue.publish(3)  # traded while we are away
    await fake.wait_until(lambda: not broker.feed_status()["connected"], what="the adapter noticed the drop")
    fake.restore_streams()
    seen += await venue.take(3)  # the backfill, before any live bar
    await fake.wait_subscribed(PAIR)
    await venue.publish(1)
    seen += await venue.take(1)
    assert [b.ts for b in seen] == [venue.t0 + 60 * (i + 1) for i in range(6)], "every bar once, in order"
    assert [b.close for b in seen] == [60001.25 + i for i in range(6)]
    history = [r for r in fake.records.requests if r.path.endswith("/bars")]
    assert [r.path for r in history] == ["/v1beta3/crypto/us/bars"]
    assert "feed" not in history[0].query and history[0].query["symbols"] == PAIR
    assert broker.feed_status()["counts"]["backfilled_bars"] == 3


async def test_warm_up_history_pages_through_the_crypto_endpoint(venue: _Venue) -> None:
    venue.fake.bars_page_size = 2
    await venue.publish(5)
    await venue.take(5)
    bars = await venue.broker.historical_bars(PAIR, venue.t0 + 60, venue.t0 + 300)
    assert [b.ts for b in bars] == [venue.t0 + 60 * (i + 1) for i in range(5)]
    assert len([r for r in venue.fake.records.requests if r.path == "/v1beta3/crypto/us/bars"]) == 3


def test_crypto_pairs_and_stocks_in_one_adapter_are_a_one_line_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADECTL_ALPACA__KEY_ID", KEY_ID)
    monkeypatch.setenv("TRADECTL_ALPACA__SECRET_KEY", SECRET_KEY)
    config = TradectlConfig(broker={"kind": "alpaca", "alpaca": {"symbols": ["BTC/USD", "SPY"]}},
                            data={"symbol": "SPY", "bar_seconds": 60})
    with pytest.raises(ConfigError, match=r"^broker.alpaca: symbols mix crypto pairs \['BTC/USD'\] and stocks"):
        settings_from_config(config)
    config = TradectlConfig(broker={"kind": "alpaca", "alpaca": {"symbols": ["btc/usd"]}},
                            data={"symbol": "btc/usd", "bar_seconds": 60})
    with pytest.raises(ConfigError, match="not BASE/QUOTE in capitals"):
        settings_from_config(config)
    config = TradectlConfig(broker={"kind": "alpaca", "alpaca": {"symbols": ["ETH/USD"]}},
                            data={"symbol": "ETH/USD", "bar_seconds": 60})
    assert settings_from_config(config).bars_stream == "wss://stream.data.alpaca.markets/v1beta3/crypto/us"


async def test_the_example_crypto_config_trades_btc_through_the_daemon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``config/alpaca-crypto-paper.yaml`` pointed at the fake: a LiveRunner trades BTC/USD bars from the crypto
    stream with the SMA cross (long only), fractional gtc orders, fills booked equal to the venue's."""
    monkeypatch.setenv("TRADECTL_ALPACA__KEY_ID", KEY_ID)
    monkeypatch.setenv("TRADECTL_ALPACA__SECRET_KEY", SECRET_KEY)
    t0 = int(time.time()) // 60 * 60 - 50 * 60
    closes = [60000 + 10 * i for i in range(25)] + [60240 - 15 * i for i in range(1, 21)]  # up, then down
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC), market_open=False) as fake:
        doc = yaml.safe_load((ROOT / "config" / "alpaca-crypto-paper.yaml").read_text())
        doc["broker"]["alpaca"].update(
            trading_url=fake.base_url, data_url=fake.base_url, data_stream_url=fake.crypto_stream_url,
            trading_stream_url=fake.trading_stream_url, backoff_floor_seconds=0.05, backoff_cap_seconds=0.3)
        doc["strategy"]["sma_cross"].update(fast=3, slow=8)
        doc.update(api={"enabled": False}, store={"path": str(tmp_path / "live.db"), "synchronous": "normal"})
        doc["risk"]["stale_data"] = {"max_age_seconds": 7200}
        (tmp_path / "crypto.yaml").write_text(yaml.safe_dump(doc))
        runner = await LiveRunner.open(load_config(tmp_path / "crypto.yaml"), bars=[])
        trading = asyncio.create_task(runner.run(install_signals=False))
        try:
            await fake.wait_subscribed(PAIR, seconds=30)
            await fake.wait_listening(seconds=30)
            for i, c in enumerate(closes):
                await fake.publish_bar(PAIR, datetime.fromtimestamp(t0 + i * 60, UTC), c, c + 5, c - 20, c, "0.5")
                await until(lambda n=i + 1: runner.daemon.pipeline.counts.bars == n, 10, f"bar {i} traded")
            await until(lambda: runner.daemon.pipeline.counts.fills == len(fake.executions) == 2, 10, "two fills")
        finally:
            runner.daemon.request_stop()
            await asyncio.wait_for(trading, 30)
    orders = sorted(fake.orders, key=lambda o: o.created_at)
    assert [(o.side, o.qty, o.time_in_force) for o in orders] == [("buy", D("0.01"), "gtc"), ("sell", D("0.01"), "gtc")]
    assert fake.positions() == {}, "long, then flat: never short"
    with sqlite3.connect(tmp_path / "live.db") as db:
        fills = sorted((cid, D(q), D(p)) for cid, q, p in db.execute(
            "SELECT client_order_id, quantity, price FROM fills"))
    assert fills == sorted((e.client_order_id, e.qty, e.price) for e in fake.executions)
