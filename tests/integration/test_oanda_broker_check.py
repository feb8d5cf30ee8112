"""`tradectl broker check` for OANDA against the wire-level fake: the report, the account list when no account
id is set, and one clear line for a refused token, all without printing the token."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from brokers.base import OrderRequest, OrderType, Side
from brokers.errors import BrokerError
from brokers.oanda import OandaBroker
from daemon.broker_check import check, render
from daemon.config import TradectlConfig
from tests.brokers.harness import oanda_settings, publish_oanda_bar
from tests.fakes.oanda import ACCOUNT_ID, TOKEN, FakeOanda

T0 = 1483344000  # 2017-01-02T08:00:00Z, a Monday


@pytest.fixture
async def fake() -> AsyncIterator[FakeOanda]:
    async with FakeOanda(start_time=T0) as f:
        yield f


def _config(fake: FakeOanda, monkeypatch: pytest.MonkeyPatch, *, token: str = TOKEN,
            account_id: str = ACCOUNT_ID) -> TradectlConfig:
    monkeypatch.setenv("TRADECTL_OANDA__TOKEN", token)
    return TradectlConfig(broker={"kind": "sim", "oanda": {"account_id": account_id, "api_url": fake.base_url,
                                                           "stream_url": fake.base_url}})


async def test_the_report_shows_account_positions_orders_session_and_stream(
        fake: FakeOanda, monkeypatch: pytest.MonkeyPatch) -> None:
    broker = OandaBroker(oanda_settings(fake))
    publish_oanda_bar(fake, T0, (1.1, 1.11, 1.09, 1.1))
    await broker.submit("manual-1", OrderRequest("EURUSD", Side.BUY, Decimal(2000)))
    publish_oanda_bar(fake, T0 + 60, (1.1, 1.11, 1.09, 1.1))
    await broker.submit("resting-1", OrderRequest("EURUSD", Side.BUY, Decimal(10), OrderType.LIMIT, Decimal("0.9")))
    await broker.close()
    report = await check(_config(fake, monkeypatch), venue="oanda")
    assert report["broker"] == "oanda-practice" and report["account"]["number"] == ACCOUNT_ID
    assert Decimal(report["account"]["cash"]) == fake.market.balance
    assert report["positions"] == [{"symbol": "EURUSD", "quantity": "2000", "average_price": "1.1001"}]
    assert [o["client_order_id"] for o in report["open_orders"]] == ["resting-1"]
    assert report["feed"]["subscribed_bars"] == ["EURUSD"]
    text = render(report)
    assert ACCOUNT_ID in text and "subscribed to bars of EURUSD" in text and TOKEN not in text + str(report)


async def test_without_an_account_id_the_tokens_accounts_are_listed(
        fake: FakeOanda, monkeypatch: pytest.MonkeyPatch) -> None:
    report = await check(_config(fake, monkeypatch, account_id=""), venue="oanda")
    assert report["accounts"] == [ACCOUNT_ID]
    assert render(report) == f"oanda-practice: broker.oanda.account_id is not set; this token's accounts: {ACCOUNT_ID}"


async def test_a_refused_token_is_one_clear_line(fake: FakeOanda, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(BrokerError) as info:
        await check(_config(fake, monkeypatch, token="wrong-token"), venue="oanda")
    message = str(info.value)
    assert "token was refused (HTTP 401)" in message and "TRADECTL_OANDA__TOKEN" in message
    assert "\n" not in message and "wrong-token" not in message


async def test_the_command_line_checks_oanda(fake: FakeOanda, tmp_path: object) -> None:
    import asyncio

    env = {**os.environ, "TRADECTL_OANDA__TOKEN": TOKEN, "TRADECTL_BROKER__OANDA__API_URL": fake.base_url,
           "TRADECTL_BROKER__OANDA__STREAM_URL": fake.base_url, "TRADECTL_BROKER__OANDA__ACCOUNT_ID": "9-9"}
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", "broker", "check", "--broker",
                                                "oanda", env=env, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 1, out
    (line,) = err.decode().strip().splitlines()
    assert line.startswith("tradectl broker: account: forbidden (HTTP 403"), line
    assert "broker.oanda.account_id" in line
