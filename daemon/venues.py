"""The one place in ``daemon/`` that knows which venues exist: it builds the configured ``Broker``.

Everything else in the daemon speaks only ``brokers.base.Broker``. A new venue
is a new branch here and a subpackage of ``brokers``, never a branch in the
pipeline or the runners.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from brokers.base import Bar, Broker
from brokers.history import load_bars, load_bundled
from daemon.config import TradectlConfig


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
    """The venue `tradectl run` trades on, as configured (today: the simulator over ``bars``).

    The simulated account is an external party: with ``broker.sim.state_file``
    it survives restarts; without one it is a new account every run. Each new
    account gets its own id so that its order and fill ids never collide with
    an earlier account's in the same database.
    """
    state_file = config.broker.sim.state_file
    broker = _simulator(config, bars, pace=pace, state_file=state_file, account_id=secrets.token_hex(3))
    return Venue(broker, fresh_account=state_file is None)


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
