"""The one place in ``daemon/`` that knows which venues exist: it builds the configured ``Broker``.

Everything else in the daemon speaks only ``brokers.base.Broker``. A new venue
is a new branch here and a subpackage of ``brokers``, never a branch in the
pipeline or the runners.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from brokers.base import Bar, Broker
from brokers.errors import ConfigError
from brokers.history import load_bars, load_bundled
from daemon.config import LIVE_CONFIRM_ENV, TradectlConfig

if TYPE_CHECKING:
    from brokers.alpaca import AlpacaBroker, AlpacaSettings
    from brokers.ib import IbBroker, IbSettings
    from brokers.oanda import OandaBroker, OandaSettings
    from risk.calendar import Sessions


def load_data(config: TradectlConfig, override: Path | None = None) -> list[Bar]:
    """The bars a replay runs on: ``--data``, else ``data.path``, else the bundled real dataset."""
    data = config.data
    path = override or data.path
    if path is None:
        return load_bundled()
    return load_bars(
        path,
        data.symbol,
        columns=data.columns or None,
        timezone=data.timezone,
        stamp=data.stamp,
        bar_seconds=data.bar_seconds,
    )


@dataclass(frozen=True, slots=True)
class Venue:
    """An opened (not yet connected) broker, and whether its account begins with this run.

    A fresh account's books start from the broker's cash and positions; any
    other account's books are rebuilt from the store and reconciled against it.
    """

    broker: Broker
    fresh_account: bool


def open_broker(config: TradectlConfig, bars: Sequence[Bar], *, pace: float | None) -> Venue:
    """The venue `tradectl run` trades on, as configured: Alpaca, OANDA, or the simulator over ``bars``.

    The simulated account is an external party: with ``broker.sim.state_file``
    it survives restarts; without one it is a new account every run. Each new
    account gets its own id so that its order and fill ids never collide with
    an earlier account's in the same database. An Alpaca account is never
    new with a run: its books are rebuilt from the store and reconciled.
    """
    if config.broker.kind == "alpaca":
        return Venue(open_alpaca(config), fresh_account=False)
    if config.broker.kind == "oanda":
        return Venue(open_oanda(config), fresh_account=False)
    if config.broker.kind == "ib":
        return Venue(open_ib(config), fresh_account=False)
    state_file = config.broker.sim.state_file
    broker = _simulator(config, bars, pace=pace, state_file=state_file, account_id=secrets.token_hex(3))
    return Venue(broker, fresh_account=state_file is None)


def alpaca_settings(config: TradectlConfig) -> AlpacaSettings:
    """``broker.alpaca`` and the keys from the environment as the adapter's settings."""
    from brokers.alpaca import AlpacaSettings

    a, keys = config.broker.alpaca, config.alpaca
    if keys.key_id is None or keys.secret_key is None:
        raise ConfigError("alpaca: set TRADECTL_ALPACA__KEY_ID and TRADECTL_ALPACA__SECRET_KEY in the environment")
    try:
        return AlpacaSettings(
            key_id=keys.key_id.get_secret_value(),
            secret_key=keys.secret_key.get_secret_value(),
            symbols=tuple(a.symbols),
            paper=a.paper,
            feed=a.feed,
            timeframe=a.timeframe,
            trading_url=a.trading_url,
            data_url=a.data_url,
            data_stream_url=a.data_stream_url,
            trading_stream_url=a.trading_stream_url,
            requests_per_minute=a.requests_per_minute,
            max_workers=a.max_worker_threads,
            request_timeout_seconds=a.request_timeout_seconds,
            backoff_floor_seconds=a.backoff_floor_seconds,
            backoff_cap_seconds=a.backoff_cap_seconds,
            in_flight_deadline_seconds=a.in_flight_deadline_seconds,
            clock_poll_seconds=a.clock_poll_seconds,
        )
    except ValueError as exc:  # what the venue itself refuses, e.g. crypto pairs mixed with stocks
        raise ConfigError(f"broker.alpaca: {exc}") from None


def open_alpaca(config: TradectlConfig, environ: Mapping[str, str] = os.environ) -> AlpacaBroker:
    """The Alpaca adapter, refusing live trading that is not confirmed twice (config and environment)."""
    from brokers.alpaca import AlpacaBroker

    a = config.broker.alpaca
    confirm = live_confirmation(a.live, "broker.alpaca", "Alpaca account number", environ)
    return AlpacaBroker(alpaca_settings(config), live_confirm=confirm, connect_timeout=a.connect_timeout_seconds)


def live_confirmation(live: bool, section: str, account: str, environ: Mapping[str, str]) -> str | None:
    """``TRADECTL_LIVE_CONFIRM`` for a section that trades live (refusing to start without it), else None.

    Live trading is switched on twice: ``live: true`` in the file and the account's own id in the
    environment; the adapter compares that id with the account the venue reports when it connects."""
    confirm = environ.get(LIVE_CONFIRM_ENV) or None
    if live and confirm is None:
        raise ConfigError(f"{section}.live is true: live trading also needs {LIVE_CONFIRM_ENV} set to the {account};"
                          " refusing to start")
    return confirm if live else None


def session_rule(config: TradectlConfig) -> Sessions:
    """The trading window's sessions (``risk.window``: the FX week unless a calendar is set)."""
    from risk.calendar import sessions_for

    window = config.risk.window
    return sessions_for(window.calendar, start=window.calendar_start, close_hour=window.weekend_close_hour_utc,
                        open_hour=window.weekend_open_hour_utc)


def oanda_settings(config: TradectlConfig, *, account_id: str | None = None) -> OandaSettings:
    """``broker.oanda``, the token from the environment and the trading window's FX week as the adapter's settings.

    The session rule is the risk layer's (``session_rule``), so "no bars" and "no new entries" over the
    weekend are one rule. ``account_id`` overrides the configured one (a candles-only client needs none).
    """
    from brokers.oanda import OandaSettings
    from risk.calendar import CalendarRangeError

    o, token = config.broker.oanda, config.oanda.token
    if token is None:
        raise ConfigError("oanda: set TRADECTL_OANDA__TOKEN in the environment")
    sessions = session_rule(config)

    def session_open(ts: int) -> bool:
        try:
            return sessions.seconds_to_close(ts) is not None
        except CalendarRangeError:  # outside the calendar's span: the risk layer refuses entries; bars still flow
            return True

    return OandaSettings(
        token=token.get_secret_value(), account_id=o.account_id if account_id is None else account_id,
        instruments=tuple(o.instruments),
        practice=o.practice, price=o.price, granularity=o.granularity,
        heartbeat_limit_seconds=o.heartbeat_limit_seconds, api_url=o.api_url, stream_url=o.stream_url,
        requests_per_second=o.requests_per_second, max_workers=o.max_worker_threads,
        request_timeout_seconds=o.request_timeout_seconds, backoff_floor_seconds=o.backoff_floor_seconds,
        backoff_cap_seconds=o.backoff_cap_seconds, in_flight_deadline_seconds=o.in_flight_deadline_seconds,
        transactions_poll_seconds=o.transactions_poll_seconds, session_open=session_open,
    )


def open_oanda(config: TradectlConfig) -> OandaBroker:
    """The OANDA adapter (practice hosts unless ``broker.oanda.practice`` is false)."""
    from brokers.oanda import OandaBroker

    return OandaBroker(oanda_settings(config), connect_timeout=config.broker.oanda.connect_timeout_seconds)


def ib_settings(config: TradectlConfig) -> IbSettings:
    """``broker.ib`` as the IB adapter's settings."""
    from brokers.ib import ContractSpec, IbSettings

    ib = config.broker.ib
    defaults = {"STK": "SMART", "CASH": "IDEALPRO", "FUT": ""}
    contracts = tuple(
        ContractSpec(c.symbol, c.sec_type, c.ib_symbol or c.symbol, currency=c.currency,
                     exchange=c.exchange or defaults[c.sec_type], primary_exchange=c.primary_exchange,
                     expiry=c.expiry, what_to_show=c.what_to_show)
        for c in ib.contracts
    )
    return IbSettings(
        contracts=contracts, host=ib.host, port=ib.port, client_id=ib.client_id, account=ib.account, live=ib.live,
        bar_seconds=ib.bar_seconds, use_rth=ib.use_rth, allow_read_only=ib.allow_read_only,
        messages_per_second=ib.messages_per_second, historical_per_10_minutes=ib.historical_per_10_minutes,
        connect_timeout_seconds=ib.connect_timeout_seconds, request_timeout_seconds=ib.request_timeout_seconds,
        ack_timeout_seconds=ib.ack_timeout_seconds, backoff_floor_seconds=ib.backoff_floor_seconds,
        backoff_cap_seconds=ib.backoff_cap_seconds,
    )


def open_ib(config: TradectlConfig, environ: Mapping[str, str] = os.environ) -> IbBroker:
    """The IB adapter (TWS or IB Gateway at ``broker.ib.host``/``port``), refusing live trading that is not
    confirmed twice (config and environment), as for Alpaca."""
    from brokers.ib import IbBroker

    confirm = live_confirmation(config.broker.ib.live, "broker.ib", "IB account id", environ)
    return IbBroker(ib_settings(config), live_confirm=confirm)


def open_backtest_broker(config: TradectlConfig, bars: Sequence[Bar]) -> Venue:
    """A fresh, deterministic simulated account replaying ``bars`` as fast as possible.

    No state file and fixed ids: two backtests of the same bars and
    configuration produce identical journals.
    """
    return Venue(_simulator(config, bars, pace=None, state_file=None, account_id=""), fresh_account=True)


def _simulator(
    config: TradectlConfig, bars: Sequence[Bar], *, pace: float | None, state_file: Path | None, account_id: str
) -> Broker:
    from brokers.sim import ReplayFeed, SimBroker

    sim = config.broker.sim
    return SimBroker(
        ReplayFeed(bars, pace=pace),
        sim.costs.model(),
        starting_cash=sim.starting_cash,
        fill_at=sim.fill_at,
        currency=sim.currency,
        state_file=state_file,
        checkpoint_bars=sim.checkpoint_bars,
        # the file only has to outlive a killed daemon (the page cache does), not a power cut;
        # an fsync per order event would stall the event loop for milliseconds
        state_fsync=False,
        account_id=account_id,
    )
