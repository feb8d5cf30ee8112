"""OANDA's part of `tradectl data fetch` (``daemon.data_fetch`` does the chunks, resume, progress and report).

    tradectl data fetch --broker oanda --symbol EUR_USD --timeframe H1 \\
        --start 2024-01-01 --end 2024-07-01 --out eurusd.parquet

* Candles come through the adapter's own REST client, ``OandaRest.candles_between``: v20's ``from``/``to``
  and ``from``/``count`` paging (at most 5,000 candles a request), the rate limiter, 429 pauses and worker
  threads. No account is needed for candles: without ``broker.oanda.account_id`` the client names none.
* A candle is stamped at its open; it becomes a close-stamped bar by the adapter's own ``convert.candle_bar``
  (the live path's backfill reads candles the same way). ``volume`` is OANDA's tick count; ``trade_count``
  and ``vwap`` stay empty (FX has neither). A candle still forming (``complete: false``: the range reaches
  now) is not written, but logged and counted: the file holds finished bars only.
* The quality report's sessions are the rule the adapter builds live bars by (``daemon.venues.session_rule``:
  the FX week of ``risk.window``, closed Friday to Sunday 21:00 UTC by default), unless ``--calendar`` names
  an exchange calendar. The fixed UTC hours are the risk layer's: in northern winter OANDA opens an hour
  later (17:00 New York), which the report shows as one missing bar each Sunday unless
  ``risk.window.weekend_open_hour_utc`` says 22.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import TYPE_CHECKING, Any

import structlog

from brokers.errors import ConfigError
from brokers.oanda.settings import GRANULARITIES, PRICE_COMPONENTS
from daemon.config import TradectlConfig
from daemon.data_fetch import Chunk, FetchPlan, VenueFetch

if TYPE_CHECKING:
    from brokers.oanda.rest import OandaRest
    from risk.calendar import Sessions

__all__ = ["OANDA"]

log = structlog.get_logger(__name__)
_NO_ACCOUNT = "-"  # candles are an instrument's, not an account's; the settings insist on some id


def _feed(args: argparse.Namespace, config: TradectlConfig) -> str:
    if args.feed is not None:
        raise ConfigError("--feed is Alpaca's data feed; OANDA's candles take --price mid|bid|ask")
    return str(args.price or config.broker.oanda.price)


def _instrument(text: str) -> str:
    name = text.strip().upper()
    if "_" not in name.strip("_"):
        raise ConfigError(f"--symbol {text!r}: use OANDA's instrument name, e.g. EUR_USD")
    return name


def _rest(config: TradectlConfig, plan: FetchPlan) -> OandaRest:
    from brokers.oanda.rest import OandaRest
    from daemon.venues import oanda_settings

    settings = oanda_settings(config, account_id=config.broker.oanda.account_id or _NO_ACCOUNT)
    return OandaRest(dataclasses.replace(settings, instruments=(plan.symbol,), granularity=plan.timeframe,
                                         price=plan.feed))


async def _chunk(plan: FetchPlan, rest: OandaRest, bar_seconds: int, lo: int, hi: int) -> Chunk:
    """Complete candles opening in ``[lo, hi)`` as close-stamped rows, in the venue's order."""
    from brokers.live.wire import WireError
    from brokers.oanda import convert

    key = PRICE_COMPONENTS[plan.feed][1]
    rows: list[dict[str, Any]] = []
    unreadable = incomplete = 0
    for candle in await rest.candles_between(plan.symbol, lo, hi):
        try:
            bar = convert.candle_bar(plan.symbol, candle, key, bar_seconds)
        except WireError as exc:
            unreadable += 1
            log.warning("candle unreadable; not written", instrument=plan.symbol, error=str(exc),
                        candle=str(candle)[:200])
            continue
        if not lo <= bar.ts - bar_seconds < hi:
            continue
        if candle.get("complete") is False:
            incomplete += 1
            log.warning("candle still in progress at the venue; not written", instrument=plan.symbol, close=bar.ts)
            continue
        rows.append({"ts": bar.ts, "open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close,
                     "volume": bar.volume, "trade_count": None, "vwap": None})
    return Chunk(rows, unreadable, incomplete)


def _sessions(config: TradectlConfig, calendar: str | None, symbol: str) -> tuple[str | None, Sessions | None]:
    """The adapter's own session rule unless an exchange calendar (or 'none') is named."""
    if calendar is None:
        from daemon.venues import session_rule

        return None, session_rule(config)
    return (None if calendar.lower() == "none" else calendar), None


OANDA = VenueFetch(
    timeframes=GRANULARITIES,
    default_timeframe=lambda config: config.broker.oanda.granularity,
    feed=_feed,
    symbol=_instrument,
    open_rest=_rest,
    read_chunk=_chunk,
    sessions=_sessions,
)
