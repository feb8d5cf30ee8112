"""A venue's outage reaches the operator: the real Alpaca adapter on its wire-level fake, the real
python-telegram-bot client on the fake Bot API, a real LiveRunner. The fake's market-data socket is dropped
and kept down: one "broker disconnected" alert; once the fake takes connections again and the adapter is
back: one "broker reconnected" alert, in that order, to every chat."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from daemon.config import TradectlConfig
from daemon.runners import LiveRunner
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca
from tests.fakes.telegram import FakeBotApi
from tests.waiting import until

TOKEN = "123456:VENUE-alerts-token"
OPS, WATCHER = 111, 222


@pytest.fixture
async def bot() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as api:
        yield api


async def test_a_venue_outage_is_one_disconnected_and_one_reconnected_alert(
    tmp_path: Path, bot: FakeBotApi, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TRADECTL_ALPACA__KEY_ID", KEY_ID)
    monkeypatch.setenv("TRADECTL_ALPACA__SECRET_KEY", SECRET_KEY)
    t0 = int(time.time()) // 60 * 60 - 30 * 60
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        config = TradectlConfig(
            broker={"kind": "alpaca", "alpaca": {
                "trading_url": fake.base_url, "data_url": fake.base_url,
                "data_stream_url": fake.stock_stream_url("iex"), "trading_stream_url": fake.trading_stream_url,
                "backoff_floor_seconds": 0.1, "backoff_cap_seconds": 0.5,
            }},
            data={"symbol": "SPY", "bar_seconds": 60},
            strategy={"kind": "sma_cross"},
            api={"enabled": False},
            store={"path": str(tmp_path / "live.db"), "synchronous": "normal"},
            telegram={
                "enabled": True, "token": TOKEN, "base_url": bot.base_url, "chat_ids": [OPS, WATCHER],
                "poll_timeout_seconds": 1, "send_interval_seconds": 0, "bot_send_interval_seconds": 0,
                "retry_seconds": 0.05,
            },
        )
        runner = await LiveRunner.open(config, bars=[])
        trading = asyncio.create_task(runner.run(install_signals=False))
        try:
            await fake.wait_subscribed("SPY", seconds=30)
            await fake.wait_listening(seconds=30)
            await until(lambda: any(t.startswith("▶️ started") for t in bot.texts(OPS)), 15, "the start alert")
            for i in range(5):
                await fake.publish_bar("SPY", datetime.fromtimestamp(t0 + i * 60, UTC), 100, 100.2, 99.8, 100.1)
            await fake.drop_market_data(stay_down=True)
            await until(lambda: any(t.startswith("🔌 broker disconnected") for t in bot.texts(OPS)), 15,
                        "the disconnected alert")
            await asyncio.sleep(1.5)  # still down: no second alert for the same outage
            fake.restore_streams()
            await until(lambda: any(t.startswith("🔌 broker reconnected") for t in bot.texts(OPS)), 20,
                        "the reconnected alert")
        finally:
            runner.daemon.request_stop()
            await asyncio.wait_for(trading, 30)
    for chat in (OPS, WATCHER):
        venue_alerts = [t for t in bot.texts(chat) if t.startswith("🔌")]
        assert [t.split(":")[0] for t in venue_alerts] == ["🔌 broker disconnected", "🔌 broker reconnected"]
    assert "back after" in venue_alerts[1]
