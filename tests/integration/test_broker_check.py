"""`tradectl broker check` against the wire-level fake Alpaca: the report, and one clear line per failure."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from brokers.errors import BrokerError
from daemon.broker_check import check, render
from daemon.config import TradectlConfig
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca

T0 = datetime(2026, 10, 1, 13, 30, tzinfo=UTC)


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlpaca]:
    async with FakeAlpaca(start_time=T0, account_number="PA3CHECK0001") as f:
        yield f


def _env(key: str = KEY_ID) -> dict[str, str]:
    return {"TRADECTL_ALPACA__KEY_ID": key, "TRADECTL_ALPACA__SECRET_KEY": SECRET_KEY}


def _config(fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch, *, key: str = KEY_ID,
            trading_url: str | None = None) -> TradectlConfig:
    for name, value in _env(key).items():
        monkeypatch.setenv(name, value)
    return TradectlConfig(
        broker={"kind": "alpaca", "alpaca": {
            "trading_url": trading_url or fake.base_url, "data_url": fake.base_url,
            "data_stream_url": fake.stock_stream_url("iex"), "trading_stream_url": fake.trading_stream_url,
            "symbols": ["SPY", "QQQ"]}},
        data={"symbol": "SPY", "bar_seconds": 60},
    )


async def test_the_report_shows_account_positions_orders_clock_and_the_feed(
        fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch) -> None:
    await fake.publish_bar("SPY", T0, 570, 571, 569, 570.5)
    fake.market.submit(symbol="SPY", qty="3", side="buy", type="market", time_in_force="day",
                       client_order_id="manual-1")
    await fake.publish_bar("SPY", T0.replace(minute=31), 570.25, 571, 569, 570.5)
    fake.market.submit(symbol="SPY", qty="1", side="buy", type="limit", time_in_force="gtc",
                       client_order_id="resting-1", limit_price="500")
    report = await check(_config(fake, monkeypatch))
    assert report["account"]["number"] == "PA3CHECK0001"
    assert Decimal(report["account"]["cash"]) == fake.cash
    assert report["positions"] == [{"symbol": "SPY", "quantity": "3", "average_price": "570.25"}]
    assert [o["client_order_id"] for o in report["open_orders"]] == ["resting-1"]
    assert report["clock"]["is_open"] is True
    assert sorted(report["feed"]["subscribed_bars"]) == ["QQQ", "SPY"]
    text = render(report)
    assert "PA3CHECK0001" in text and "buying power" in text and "subscribed to bars of QQQ, SPY" in text
    assert SECRET_KEY not in text and SECRET_KEY not in str(report), "secrets never printed"


async def test_a_closed_market_is_a_note_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeAlpaca(start_time=T0, market_open=False) as fake:
        report = await check(_config(fake, monkeypatch), stream=False)
    assert report["clock"]["is_open"] is False
    assert "note: the market is closed" in render(report)


async def test_a_refused_key_is_one_clear_line(fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BrokerError) as info:
        await check(_config(fake, monkeypatch, key="PKWRONG"))
    message = str(info.value)
    assert "key was refused (HTTP 401)" in message and "TRADECTL_ALPACA__KEY_ID" in message
    assert "\n" not in message and SECRET_KEY not in message


async def test_a_403_without_a_reason_code_is_also_a_refused_key(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeAlpaca(start_time=T0, bad_key_status=403) as fake:
        with pytest.raises(BrokerError, match=r"key was refused \(HTTP 403\)"):
            await check(_config(fake, monkeypatch, key="PKWRONG"))


async def test_a_wrong_endpoint_and_a_refused_connection_are_named(
        fake: FakeAlpaca, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BrokerError, match=r"answered 404.*wrong endpoint"):
        await check(_config(fake, monkeypatch, trading_url=f"{fake.base_url}/not-alpaca"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(BrokerError, match=rf"connection to http://127\.0\.0\.1:{port} refused"):
        await check(_config(fake, monkeypatch, trading_url=f"http://127.0.0.1:{port}"))


async def test_the_command_line_prints_the_report_and_fails_with_one_line(fake: FakeAlpaca, tmp_path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "alpaca.yaml"
    config.write_text(
        "broker:\n  kind: alpaca\n  alpaca:\n"
        f"    trading_url: {fake.base_url}\n    data_url: {fake.base_url}\n"
        f"    data_stream_url: {fake.stock_stream_url('iex')}\n    trading_stream_url: {fake.trading_stream_url}\n"
        "data:\n  symbol: SPY\n  bar_seconds: 60\n", encoding="utf-8")

    async def cli(key: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.cli", "broker", "check", "--config", str(config),
            env={**os.environ, **_env(key)}, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        return proc.returncode or 0, out.decode(), err.decode()

    code, out, err = await cli(KEY_ID)
    assert code == 0, err
    assert "account       PA3CHECK0001 (ACTIVE)" in out and "subscribed to bars of SPY" in out
    code, out, err = await cli("PKWRONG")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("tradectl broker: account: the key was refused (HTTP 401)")
