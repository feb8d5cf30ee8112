"""`tradectl broker check`: connect to the configured broker, show what it holds, and exit.

Read-only: it places and cancels nothing, so it also works for a live account
before ``TRADECTL_LIVE_CONFIRM`` is set (and prints the account number that
variable must hold). Prints the account, buying power, positions, open orders,
the market clock and the market-data subscription. Every failure is one line
naming the problem (a refused key, a wrong endpoint, a refused connection); a
closed market is reported as a note, not a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from brokers.errors import BrokerError
from daemon.config import TradectlConfig

if TYPE_CHECKING:
    from brokers.base import OrderUpdate, Position

__all__ = ["add_arguments", "check", "holdings", "render", "run", "wait_for_stream"]

_FEED_TIMEOUT = 10.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--no-stream", action="store_true", help="skip the market-data subscription check")
    parser.add_argument("--broker", choices=("alpaca", "oanda", "ib"), default=None,
                        help="check this venue's section instead of broker.kind's")


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    report = asyncio.run(check(config, stream=not args.no_stream, venue=args.broker))
    print(json.dumps(report, indent=2) if args.json else render(report))
    return 0


async def check(config: TradectlConfig, *, stream: bool = True, venue: str | None = None) -> dict[str, Any]:
    """The broker's own account of itself, as plain JSON values; ``BrokerError`` with one line if it fails."""
    kind = venue or config.broker.kind
    if kind == "oanda":
        from daemon.oanda_check import check_oanda

        return await check_oanda(config, stream=stream)
    if kind == "ib":
        from daemon.ib_check import check_ib

        return await check_ib(config, stream=stream)
    if kind != "alpaca":
        return {"broker": config.broker.kind, "note": "the simulated broker runs inside tradectl: nothing to check"}
    from brokers.alpaca import AlpacaBroker
    from daemon.venues import alpaca_settings

    settings = alpaca_settings(config)
    broker = AlpacaBroker(settings)
    rest = broker.rest
    try:
        account = await rest.account()
        positions = await broker.positions()
        orders = await broker.open_orders()
        clock = await rest.clock()
        feed = await _feed(broker) if stream else {"checked": False}
    finally:
        await broker.close()
    return {
        "broker": broker.name,
        "endpoint": settings.rest_origin,
        "account": {
            "number": account.get("account_number"),
            "status": account.get("status"),
            "currency": account.get("currency"),
            "cash": account.get("cash"),
            "equity": account.get("equity"),
            "buying_power": account.get("buying_power"),
            "trading_blocked": bool(account.get("trading_blocked")),
        },
        **holdings(positions, orders),
        "clock": {"is_open": bool(clock.get("is_open")), "timestamp": clock.get("timestamp"),
                  "next_open": clock.get("next_open"), "next_close": clock.get("next_close")},
        "feed": feed,
    }


def holdings(positions: Iterable[Position], orders: Iterable[OrderUpdate]) -> dict[str, list[dict[str, str]]]:
    """The report's ``positions`` and ``open_orders``, as every venue's check shows them."""
    return {
        "positions": [{"symbol": p.symbol, "quantity": str(p.quantity), "average_price": str(p.average_price)}
                      for p in positions],
        "open_orders": [{"client_order_id": o.client_order_id, "symbol": o.symbol, "status": o.status.value,
                         "filled": str(o.filled_quantity)} for o in orders],
    }


async def _feed(broker: Any) -> dict[str, Any]:
    """Connect the market-data stream alone, wait for the subscription answer, and report it."""
    settings = broker.settings
    await wait_for_stream(broker.market_data, f"market data ({settings.bars_stream})", _FEED_TIMEOUT)
    return {"checked": True, "url": settings.bars_stream, "feed": settings.data_feed,
            "subscribed_bars": broker.market_data_session.subscribed}


def render(report: dict[str, Any]) -> str:
    if "account" not in report:
        return f"{report['broker']}: {report.get('note', '')}"
    a, clock, feed = report["account"], report["clock"], report["feed"]
    lines = [
        f"broker        {report['broker']} at {report['endpoint']}",
        f"account       {a['number']} ({a['status']}{', TRADING BLOCKED' if a['trading_blocked'] else ''})",
        f"cash          {a['cash']} {a['currency']}",
        f"equity        {a['equity']} {a['currency']}",
        f"buying power  {a['buying_power']} {a['currency']}",
        f"positions     {len(report['positions']) or 'none'}",
        *(f"  {p['symbol']:<8} {p['quantity']:>12} @ {p['average_price']}" for p in report["positions"]),
        f"open orders   {len(report['open_orders']) or 'none'}",
        *(f"  {o['client_order_id']} {o['symbol']} {o['status']} filled {o['filled']}" for o in report["open_orders"]),
        f"market        {'open' if clock['is_open'] else 'closed'} at {clock['timestamp']}"
        f" (next open {clock['next_open']}, next close {clock['next_close']})" if clock["is_open"] is not None else
        f"venue time    {clock['timestamp']} (this venue reports no market clock)",
    ]
    if feed.get("checked"):
        lines.append(f"market data   {feed['feed']} feed, subscribed to bars of {', '.join(feed['subscribed_bars'])}")
    if clock["is_open"] is False:
        lines.append(f"note: the market is closed; no bars until {clock['next_open']}")
    return "\n".join(lines)


async def wait_for_stream(supervisor: Any, what: str, seconds: float) -> None:
    """Bring one stream up alone (its supervisor's ready hook passed) within ``seconds``, then stop it again.

    One line when it does not come up: what it is, and the supervisor's last error.
    """
    supervisor.start()
    try:
        async with asyncio.timeout(seconds):
            await supervisor.wait_connected()
    except (TimeoutError, BrokerError):
        error = supervisor.status()["last_error"] or supervisor.reason
        raise BrokerError(f"{what}: not up within {seconds:g} s: {error}") from None
    finally:
        await supervisor.stop("check done")
