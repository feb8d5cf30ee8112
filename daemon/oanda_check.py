"""`tradectl broker check` for OANDA: the account, margin, positions, open orders, the FX session, the pricing stream.

Read-only, like the Alpaca check (``daemon/broker_check.py`` dispatches here).
Without ``broker.oanda.account_id`` it lists the token's accounts instead, so
the first command with a new practice token tells the operator what to
configure. The report has the Alpaca check's shape (``render`` prints both);
"buying power" is OANDA's margin available and the "market clock" is the FX
week of ``risk.window``, the rule the adapter and the entry layer apply.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from brokers.errors import ConfigError
from daemon.broker_check import holdings, wait_for_stream
from daemon.config import TradectlConfig

if TYPE_CHECKING:
    from brokers.oanda.settings import OandaSettings

__all__ = ["check_oanda"]

_FEED_TIMEOUT = 15.0
_HOUR = 3600


async def check_oanda(config: TradectlConfig, *, stream: bool = True) -> dict[str, Any]:
    """The OANDA account's own account of itself, as plain JSON values; ``BrokerError`` with one line if it fails."""
    from brokers.oanda import OandaBroker
    from brokers.oanda.rest import OandaRest
    from daemon.venues import oanda_settings

    listing = not config.broker.oanda.account_id  # no account configured: list the token's own
    try:
        settings = oanda_settings(config, account_id="-" if listing else None)
    except ValueError as exc:
        raise ConfigError(f"broker.oanda: {exc}") from None
    if listing:
        return await _accounts(settings)
    broker = OandaBroker(settings)
    rest: OandaRest = broker.rest
    try:
        summary = await rest.account_summary()
        positions = await broker.positions()
        orders = await broker.open_orders()
        feed = await _feed(broker) if stream else {"checked": False}
    finally:
        await broker.close()
    now = broker.now()
    session = settings.session_open or (lambda ts: True)
    return {
        "broker": broker.name,
        "endpoint": settings.api_origin,
        "account": {
            "number": summary.get("id"),
            "status": "hedging" if summary.get("hedgingEnabled") else "netting",
            "currency": summary.get("currency"),
            "cash": summary.get("balance"),
            "equity": summary.get("NAV"),
            "buying_power": summary.get("marginAvailable"),
            "trading_blocked": False,
        },
        **holdings(positions, orders),
        "clock": {"is_open": session(now), "timestamp": _iso(now), "next_open": _iso(_next(session, now, True)),
                  "next_close": _iso(_next(session, now, False))},
        "feed": feed,
    }


async def _accounts(settings: OandaSettings) -> dict[str, Any]:
    """No account id configured: the accounts this token may use."""
    from brokers.oanda.rest import OandaRest

    rest = OandaRest(settings)
    try:
        ids = [str(a.get("id")) for a in await rest.accounts()]
    finally:
        rest.close()
    return {"broker": "oanda-practice" if settings.practice else "oanda-live", "accounts": ids,
            "note": f"broker.oanda.account_id is not set; this token's accounts: {', '.join(ids) or 'none'}"}


async def _feed(broker: Any) -> dict[str, Any]:
    """Bring the pricing stream up alone (first message within the limit) and report it."""
    settings = broker.settings
    await wait_for_stream(broker.pricing, f"pricing stream ({settings.stream_origin})", _FEED_TIMEOUT)
    return {"checked": True, "url": settings.stream_origin, "feed": f"pricing ({settings.price})",
            "subscribed_bars": [settings.symbol(i) for i in settings.instruments]}


def _next(session: Any, now: int, opening: bool) -> int | None:
    """The first hour boundary after ``now`` where the session is ``opening`` (open) or not, within a week."""
    ts = now - now % _HOUR + _HOUR
    for _ in range(7 * 24):
        if bool(session(ts)) is opening:
            return ts
        ts += _HOUR
    return None


def _iso(ts: int | None) -> str | None:
    from brokers.base import utc_datetime

    return None if ts is None else utc_datetime(ts).isoformat()
