"""`tradectl broker check --broker ib`: connect to TWS / IB Gateway as the daemon would, report, disconnect.

The adapter's own start-up runs (handshake, client id, read-only check,
contract qualification, real-time bar subscriptions), so every refusal is the
same one line the daemon would print. Read-only: nothing is placed or cancelled, so a live account is shown
(with the id TRADECTL_LIVE_CONFIRM must hold) before that confirmation is set.
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

from daemon.broker_check import holdings
from daemon.config import TradectlConfig

__all__ = ["check_ib"]


async def check_ib(config: TradectlConfig, *, stream: bool = True) -> dict[str, Any]:
    """The IB account as TWS reports it, as plain JSON values; ``BrokerError`` with one line if it fails."""
    from dataclasses import replace

    from brokers.ib import IbBroker
    from daemon.venues import ib_settings

    settings = replace(ib_settings(config), allow_read_only=True)  # a look needs no orders
    broker = IbBroker(settings, look_only=True)  # places nothing: a live account is shown before it is confirmed
    try:
        await broker.connect()
        account = await broker.account()
        positions = await broker.positions()
        orders = [] if broker.read_only else await broker.open_orders()
        tws_time = await broker.venue_time()
        contracts = {symbol: contract.conId for symbol, contract in broker.contracts.items()}
    finally:
        await broker.close()
    return {
        "broker": f"ib (client id {settings.client_id})",
        "endpoint": f"{settings.host}:{settings.port}",
        "account": {
            "number": broker.account_id,
            "status": "read-only API session" if broker.read_only else "trading API session",
            "currency": account.currency,
            "cash": str(account.cash),
            "equity": str(account.equity),
            "buying_power": str(account.equity),
            "trading_blocked": broker.read_only,
        },
        **holdings(positions, orders),
        "clock": {"is_open": None, "timestamp": tws_time.astimezone(UTC).isoformat(), "next_open": None,
                  "next_close": None},
        "feed": {"checked": stream, "feed": f"real-time 5 s bars, {settings.bar_seconds} s bars",
                 "subscribed_bars": [f"{symbol} (conId {con_id})" for symbol, con_id in contracts.items()]},
    }
