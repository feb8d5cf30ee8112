"""Alpaca's wire shapes: the JSON (and msgpack) bodies the fake sends, rendered from ``market`` objects.

Kept apart from the state so that the shapes can be checked against the real alpaca-py models in one
place. Conventions copied from the live API: decimals are strings in trading JSON ("100", "101.25"), floats
in market-data JSON; trading timestamps are RFC 3339 UTC with microseconds and a ``Z``; the clock speaks
US/Eastern; a market-data bar's ``t`` is the bar's OPEN time, an RFC 3339 string in JSON and a msgpack
Timestamp (extension type -1) in msgpack.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import msgpack

from tests.fakes.alpaca.market import Bar, Execution, Market, Order, Position, TradeEvent, asset_id, is_crypto

EASTERN = ZoneInfo("America/New_York")
ACCOUNT_ID = "8f4f1c76-6a4a-4c2f-9d7e-5a1b2c3d4e5f"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def dec(value: Decimal | None) -> str | None:
    """A decimal as Alpaca writes it: plain notation, no exponent, no trailing zeros."""
    if value is None:
        return None
    text = format(value.normalize(), "f")
    return "0" if text in ("-0", "") else text


def ts(when: datetime | None) -> str | None:
    """RFC 3339 UTC with microseconds, e.g. ``2026-10-01T13:30:00.000000Z``."""
    if when is None:
        return None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def epoch_ns(when: datetime) -> int:
    delta = when - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message}


def order_json(order: Order) -> dict[str, Any]:
    return {
        "id": order.id, "client_order_id": order.client_order_id,
        "created_at": ts(order.created_at), "updated_at": ts(order.updated_at or order.created_at),
        "submitted_at": ts(order.submitted_at or order.created_at), "filled_at": ts(order.filled_at),
        "expired_at": ts(order.expired_at), "canceled_at": ts(order.canceled_at), "failed_at": ts(order.failed_at),
        "replaced_at": None, "replaced_by": None, "replaces": None,
        "asset_id": asset_id(order.symbol), "symbol": order.symbol, "asset_class": order.asset_class,
        "notional": None, "qty": dec(order.qty), "filled_qty": dec(order.filled_qty),
        "filled_avg_price": dec(order.filled_avg_price), "order_class": "", "order_type": order.type,
        "type": order.type, "side": order.side,
        "position_intent": _intent(order), "time_in_force": order.time_in_force,
        "limit_price": dec(order.limit_price), "stop_price": None, "status": order.status,
        "extended_hours": order.extended_hours, "legs": None, "trail_percent": None, "trail_price": None,
        "hwm": None, "subtag": None, "source": None, "expires_at": None,
    }


def _intent(order: Order) -> str:
    return "buy_to_open" if order.side == "buy" else "sell_to_close"


def position_json(pos: Position, last_price: Decimal | None) -> dict[str, Any]:
    price = last_price if last_price is not None else pos.avg_entry_price
    market_value = pos.qty * price
    unrealized = market_value - pos.cost_basis
    plpc = unrealized / abs(pos.cost_basis) if pos.cost_basis else Decimal(0)
    return {
        # Alpaca names crypto positions without the slash (BTCUSD) although orders and data use BTC/USD
        "asset_id": asset_id(pos.symbol), "symbol": pos.symbol.replace("/", ""),
        "exchange": "CRYPTO" if is_crypto(pos.symbol) else "NASDAQ",
        "asset_class": "crypto" if is_crypto(pos.symbol) else "us_equity", "asset_marginable": True,
        "qty": dec(pos.qty), "qty_available": dec(pos.qty), "avg_entry_price": dec(pos.avg_entry_price),
        "side": "long" if pos.qty > 0 else "short", "market_value": dec(market_value),
        "cost_basis": dec(pos.cost_basis), "unrealized_pl": dec(unrealized), "unrealized_plpc": dec(plpc),
        "unrealized_intraday_pl": dec(unrealized), "unrealized_intraday_plpc": dec(plpc),
        "current_price": dec(price), "lastday_price": dec(price), "change_today": "0",
    }


def account_json(market: Market, account_number: str) -> dict[str, Any]:
    bp = dec(market.buying_power())
    equity = dec(market.equity())
    return {
        "id": ACCOUNT_ID, "account_number": account_number, "status": "ACTIVE", "crypto_status": "ACTIVE",
        "currency": "USD", "buying_power": bp, "regt_buying_power": bp, "daytrading_buying_power": "0",
        "effective_buying_power": bp, "non_marginable_buying_power": bp, "options_buying_power": bp,
        "bod_dtbp": "0", "cash": dec(market.cash), "accrued_fees": "0", "pending_transfer_in": "0",
        "pending_transfer_out": "0", "portfolio_value": equity, "pattern_day_trader": False,
        "trading_blocked": False, "transfers_blocked": False, "account_blocked": False,
        "created_at": ts(market.start_time), "trade_suspended_by_user": False, "multiplier": "1",
        "shorting_enabled": True, "equity": equity, "last_equity": dec(market.initial_cash),
        "long_market_value": dec(market.market_value("long")),
        "short_market_value": dec(market.market_value("short")),
        "position_market_value": dec(market.market_value("long") + market.market_value("short")),
        "initial_margin": "0", "maintenance_margin": "0", "last_maintenance_margin": "0", "sma": "0",
        "daytrade_count": 0, "balance_asof": market.now().astimezone(EASTERN).date().isoformat(),
        "crypto_tier": 1, "options_approved_level": 0, "options_trading_level": 0,
    }


def asset_json(symbol: str) -> dict[str, Any]:
    crypto = is_crypto(symbol)
    return {
        "id": asset_id(symbol), "class": "crypto" if crypto else "us_equity",
        "exchange": "CRYPTO" if crypto else "NASDAQ", "symbol": symbol, "name": symbol, "status": "active",
        "tradable": True, "marginable": not crypto, "shortable": not crypto, "easy_to_borrow": not crypto,
        "fractionable": True, "maintenance_margin_requirement": 30, "attributes": [],
    }


def trade_update_json(event: TradeEvent) -> dict[str, Any]:
    """``{"stream": "trade_updates", "data": {...}}``; fills carry execution_id, price, qty, position_qty."""
    data: dict[str, Any] = {"event": event.event, "timestamp": ts(event.timestamp),
                            "order": order_json(event.order)}
    ex: Execution | None = event.execution
    if ex is not None:
        data.update(execution_id=ex.execution_id, price=dec(ex.price), qty=dec(ex.qty),
                    position_qty=dec(ex.position_qty))
    return {"stream": "trade_updates", "data": data}


def bar_rest_json(bar: Bar) -> dict[str, Any]:
    """A bar in the historical API: ``t`` (open time, RFC 3339 with ``Z``), OHLC, v, n, vw as numbers."""
    return {"t": bar.ts_open.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "o": float(bar.open),
            "h": float(bar.high), "l": float(bar.low), "c": float(bar.close), "v": _volume(bar),
            "n": bar.trade_count, "vw": float(bar.vwap)}


def bar_stream_msg(bar: Bar, *, msgpack_codec: bool) -> dict[str, Any]:
    """A ``T: b`` message; alpaca-py drops a bar without ``n``/``vw`` and needs ``t`` as a msgpack Timestamp."""
    t: Any = msgpack.Timestamp.from_unix_nano(epoch_ns(bar.ts_open)) if msgpack_codec else (
        bar.ts_open.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
    return {"T": "b", "S": bar.symbol, "o": float(bar.open), "h": float(bar.high), "l": float(bar.low),
            "c": float(bar.close), "v": _volume(bar), "t": t, "n": bar.trade_count, "vw": float(bar.vwap)}


def _volume(bar: Bar) -> int | float:
    """Stock volumes are integers on the wire, crypto volumes fractional."""
    return int(bar.volume) if bar.volume == bar.volume.to_integral_value() and not is_crypto(bar.symbol) \
        else float(bar.volume)
