"""Interactive Brokers' part of `tradectl data fetch` (``daemon.data_fetch`` does the chunks, resume, progress and
report).

    tradectl data fetch --broker ib --symbol SPY --timeframe "1 min" \\
        --start 2026-10-01 --end 2026-11-01 --out spy.parquet

* Bars come through the adapter itself (``IbBroker.historical_bars``): TWS's historical-data requests in pieces
  of at most ``max_bars_per_request`` bars, each through IB's pacing (60 requests per 10 minutes, at most 5 at
  once, a pause after a pacing violation) and the 50-messages-a-second bucket. The connection is the adapter's
  own start-up (client id, read-only sessions allowed: nothing is ordered) without real-time subscriptions.
* ``--symbol`` is one of ``broker.ib.contracts`` (our name: SPY, EURUSD, ESM5) or else a US stock on SMART; its
  contract is qualified as at start-up, and one that does not qualify is IB's one line.
* ``--timeframe`` is IB's bar size (``"1 min"``, ``"5 mins"``, ``"1 hour"``; default ``broker.ib.bar_seconds``);
  ``--price mid|bid|ask`` asks for MIDPOINT, BID or ASK bars instead of the contract's own (TRADES, MIDPOINT for
  FX). IB stamps bars at the open: the adapter's ``history_bar`` stamps them at the close, as the live path does.
  ``volume`` is IB's; ``trade_count`` and ``vwap`` stay empty. The bar still in progress is never asked for (the
  adapter asks up to now and keeps bars that have closed).
* The report's sessions: ``--calendar`` when given, else XNYS for a stock, the FX week of ``risk.window`` for a
  currency pair (the rule the live path trades by), CMES for a future.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

from brokers.errors import ConfigError
from brokers.ib.settings import BAR_SIZES, ContractSpec
from daemon.config import TradectlConfig
from daemon.data_fetch import Chunk, FetchPlan, VenueFetch, plain_symbol

if TYPE_CHECKING:
    from brokers.base import Bar
    from brokers.ib import IbBroker, IbSettings
    from risk.calendar import Sessions

__all__ = ["IB"]

# IB's barSizeSetting -> seconds; daily bars have no intraday time to stamp
_TIMEFRAMES = {name: seconds for seconds, name in BAR_SIZES.items() if seconds < 86_400}
_PRICES = {"mid": "MIDPOINT", "bid": "BID", "ask": "ASK"}
_CALENDARS = {"STK": "XNYS", "FUT": "CMES"}


def _spec(config: TradectlConfig, symbol: str) -> ContractSpec:
    """The configured contract of that name (exchange defaults applied as at start-up), else a US stock."""
    from daemon.venues import ib_settings

    for spec in ib_settings(config).contracts:
        if spec.symbol == symbol:
            return spec
    return ContractSpec(symbol, "STK", symbol)


def _feed(args: argparse.Namespace, config: TradectlConfig) -> str:
    if args.feed is not None:
        raise ConfigError("--feed is Alpaca's data feed; IB's bars take --price mid|bid|ask (default: the "
                          "contract's own, TRADES or MIDPOINT for FX)")
    if args.price is not None:
        return _PRICES[args.price]
    return _spec(config, plain_symbol(args.symbol)).show


class _IbHistory:
    """The IB adapter connected for history only (on first use, inside the fetch's loop)."""

    def __init__(self, settings: IbSettings) -> None:
        self.settings = settings
        self._broker: IbBroker | None = None

    async def bars(self, symbol: str, first_close: int, last_close: int) -> tuple[list[Bar], int]:
        """Bars closing in ``[first_close, last_close]``, and how many the adapter could not read (quarantined)."""
        if self._broker is None:
            from brokers.ib import IbBroker

            broker = IbBroker(self.settings, look_only=True)  # history only: no order, no live confirmation
            await broker.connect()
            self._broker = broker
        before = self._broker.quarantine.count
        bars = await self._broker.historical_bars(symbol, first_close, last_close)
        return bars, self._broker.quarantine.count - before

    async def close(self) -> None:
        if self._broker is not None:
            await self._broker.close()
            self._broker = None


def _history(config: TradectlConfig, plan: FetchPlan) -> _IbHistory:
    from daemon.venues import ib_settings

    spec = dataclasses.replace(_spec(config, plan.symbol), what_to_show=plan.feed)
    settings = dataclasses.replace(ib_settings(config), contracts=(spec,), bar_seconds=_TIMEFRAMES[plan.timeframe],
                                   allow_read_only=True, realtime_bars=False)
    return _IbHistory(settings)


async def _chunk(plan: FetchPlan, history: _IbHistory, bar_seconds: int, lo: int, hi: int) -> Chunk:
    """Bars opening in ``[lo, hi)`` as close-stamped rows, oldest first (IB's bars sit on the epoch-aligned grid:
    the first opens at or after ``lo``, the last before ``hi``; no request reaches past them)."""
    first_open, last_open = -(-lo // bar_seconds) * bar_seconds, (hi - 1) // bar_seconds * bar_seconds
    bars, unreadable = await history.bars(plan.symbol, first_open + bar_seconds, last_open + bar_seconds)
    rows: list[dict[str, Any]] = [
        {"ts": b.ts, "open": b.open, "high": b.high, "low": b.low, "close": b.close, "volume": b.volume,
         "trade_count": None, "vwap": None}
        for b in bars if lo <= b.ts - bar_seconds < hi
    ]
    return Chunk(rows, unreadable)


def _sessions(config: TradectlConfig, calendar: str | None, symbol: str) -> tuple[str | None, Sessions | None]:
    if calendar is not None:
        return (None if calendar.lower() == "none" else calendar), None
    spec = _spec(config, symbol)
    if spec.sec_type == "CASH":
        from daemon.venues import session_rule

        return None, session_rule(config)
    return _CALENDARS[spec.sec_type], None


IB = VenueFetch(
    timeframes=_TIMEFRAMES,
    default_timeframe=lambda config: BAR_SIZES[config.broker.ib.bar_seconds],
    feed=_feed,
    symbol=plain_symbol,
    open_rest=_history,
    read_chunk=_chunk,
    sessions=_sessions,
)
