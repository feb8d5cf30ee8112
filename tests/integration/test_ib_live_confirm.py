"""Live trading on Interactive Brokers needs both keys, as on Alpaca: ``broker.ib.live: true`` in the file and
``TRADECTL_LIVE_CONFIRM`` equal to the account id TWS reports. Paper (a DU... account on a paper port) needs
neither; a live port without ``live`` is refused when the config loads, a live account when the adapter connects
(against the fake TWS logged in to a paper or a live account); a look (broker check) shows a live account before
it is confirmed."""

from __future__ import annotations

import re

import pytest

from brokers.errors import BrokerError, ConfigError
from brokers.ib import IbBroker
from brokers.live.confirm import confirm_live_account
from daemon.config import TradectlConfig
from daemon.ib_check import check_ib
from daemon.venues import open_ib
from tests.brokers.harness import ib_settings
from tests.fakes.tws import ACCOUNT, FakeTws

LIVE_ACCOUNT = "U7654321"
_SPY = {"symbol": "SPY", "bar_seconds": 60}


async def _connects(tws: FakeTws, confirm: str | None = None, **overrides: object) -> IbBroker:
    broker = IbBroker(ib_settings(tws, **overrides), live_confirm=confirm)
    await broker.connect()
    return broker


async def test_a_paper_account_trades_without_confirmation_and_a_live_one_needs_both_keys() -> None:
    async with FakeTws() as tws:
        broker = await _connects(tws)
        assert broker.account_id == ACCOUNT and ACCOUNT.startswith("DU")
        await broker.close()
    async with FakeTws(account=LIVE_ACCOUNT) as tws:
        with pytest.raises(BrokerError, match=rf"^ib: account {LIVE_ACCOUNT} is a live account: trading it needs "
                                              r"broker.ib.live: true and TRADECTL_LIVE_CONFIRM set to its id"):
            await _connects(tws)
        with pytest.raises(BrokerError, match=r"^ib live trading: set TRADECTL_LIVE_CONFIRM to the account id"):
            await _connects(tws, live=True)
        with pytest.raises(BrokerError, match=r"^ib live trading: TRADECTL_LIVE_CONFIRM does not match this account's "
                                              r"id"):
            await _connects(tws, "U0000000", live=True)
        await tws.wait_until(lambda: not tws.sessions, 2, "every refused start-up closed its socket")
        broker = await _connects(tws, LIVE_ACCOUNT, live=True)
        try:
            assert broker.account_id == LIVE_ACCOUNT and broker.feed_status()["connected"] is True
        finally:
            await broker.close()


async def test_live_set_for_a_paper_account_still_needs_its_id() -> None:
    async with FakeTws() as tws:
        with pytest.raises(BrokerError, match="does not match this account's id"):
            await _connects(tws, LIVE_ACCOUNT, live=True)
        broker = await _connects(tws, ACCOUNT, live=True)
        await broker.close()


async def test_broker_check_shows_a_live_account_before_it_is_confirmed() -> None:
    async with FakeTws(account=LIVE_ACCOUNT) as tws:
        config = TradectlConfig(broker={"kind": "ib", "ib": {"port": tws.port, "client_id": 4}}, data=_SPY)
        report = await check_ib(config, stream=False)
    assert report["account"]["number"] == LIVE_ACCOUNT, "the id TRADECTL_LIVE_CONFIRM must hold"


def test_a_live_port_needs_live_in_the_file_and_live_needs_the_confirmation() -> None:
    for port, message in ((7496, "port 7496 is TWS's live-trading port: set live: true (and TRADECTL_LIVE_CONFIRM to "
                                 "the account id) to trade real money, or use the paper port 7497"),
                          (4001, "port 4001 is IB Gateway's live-trading port: set live: true (and "
                                 "TRADECTL_LIVE_CONFIRM to the account id) to trade real money, or use the paper port "
                                 "4002")):
        with pytest.raises(ValueError, match=re.escape(message)):
            TradectlConfig(broker={"kind": "ib", "ib": {"port": port}}, data=_SPY)
    live = TradectlConfig(broker={"kind": "ib", "ib": {"port": 7496, "live": True}}, data=_SPY)
    with pytest.raises(ConfigError, match=r"^broker.ib.live is true: live trading also needs TRADECTL_LIVE_CONFIRM "
                                          r"set to the IB account id; refusing to start$"):
        open_ib(live, environ={})
    broker = open_ib(live, environ={"TRADECTL_LIVE_CONFIRM": LIVE_ACCOUNT})
    assert broker.settings.live and broker._live_confirm == LIVE_ACCOUNT
    paper = open_ib(TradectlConfig(broker={"kind": "ib"}, data=_SPY), environ={"TRADECTL_LIVE_CONFIRM": LIVE_ACCOUNT})
    assert not paper.settings.live and paper._live_confirm is None, "the confirmation means nothing without live"


def test_the_rule_alpaca_and_ib_share() -> None:
    confirm_live_account("alpaca", "PA123", "PA123")
    with pytest.raises(BrokerError, match=r"^alpaca live trading: set TRADECTL_LIVE_CONFIRM to the account number"):
        confirm_live_account("alpaca", "PA123", None)
    with pytest.raises(BrokerError, match=r"^alpaca live trading: TRADECTL_LIVE_CONFIRM does not match this "
                                          r"account's number$"):
        confirm_live_account("alpaca", "PA123", "PA124")
