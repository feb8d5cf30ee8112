"""OANDA v20 JSON → tradectl's vocabulary. Pure functions, no I/O.

* Prices, units and money arrive as strings and become ``Decimal`` straight
  from the string (``brokers.live.wire``); bars are floats (observed, not counted).
* Units are signed by side on the wire (``-1000`` sells); ours are a side and
  a positive quantity.
* A fill is an ``ORDER_FILL`` transaction; its id (the transaction id) names
  the execution identically whether it was read by the poller or by
  ``fills_for`` from the history. Its fee is what the fill cost in the
  account's money beyond the price: ``commission`` (a positive charge) plus
  ``guaranteedExecutionFee`` minus ``financing`` (paid when the fill closes a
  trade: negative is a cost, so it adds to the fee).
* A candle is stamped at its OPEN; ``Bar.ts`` is the CLOSE.
* A refusal's reason (``rejectReason`` / ``errorCode``) maps to one of our
  reason codes (``reason_code``), which leads the rejection's text.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from brokers.base import ZERO, Bar, Fill, OrderStatus, OrderUpdate, Position, Side
from brokers.live.wire import WireError, decimal, epoch_seconds, optional_decimal

__all__ = [
    "REASON_CODES",
    "candle_bar",
    "fee",
    "order_update",
    "position",
    "price_tick",
    "reason_code",
    "side_of",
    "transaction_fill",
]

# OANDA's reject / cancel reasons → our reason codes (anything else: "venue_rejected")
REASON_CODES: dict[str, str] = {
    "INSUFFICIENT_MARGIN": "insufficient_margin",
    "INSUFFICIENT_LIQUIDITY": "insufficient_liquidity",
    "CLIENT_ORDER_ID_ALREADY_EXISTS": "duplicate_client_order_id",
    "MARKET_HALTED": "market_closed",
    "INSTRUMENT_NOT_TRADEABLE": "market_closed",
    "INSTRUMENT_PRICE_UNKNOWN": "no_price",
    "PRICE_UNKNOWN": "no_price",
    "UNITS_INVALID": "invalid_order",
    "UNITS_MINIMUM_NOT_MET": "invalid_order",
    "UNITS_PRECISION_EXCEEDED": "invalid_order",
    "UNITS_LIMIT_EXCEEDED": "position_limit",
    "POSITION_SIZE_EXCEEDED": "position_limit",
    "PENDING_ORDERS_ALLOWED_EXCEEDED": "position_limit",
    "PRICE_INVALID": "invalid_order",
    "PRICE_PRECISION_EXCEEDED": "invalid_order",
    "INSTRUMENT_MISSING": "invalid_order",
    "INSTRUMENT_UNKNOWN": "invalid_order",
    "TIME_IN_FORCE_INVALID": "invalid_order",
    "ACCOUNT_NOT_ACTIVE": "account_locked",
    "ACCOUNT_LOCKED": "account_locked",
    "ACCOUNT_ORDER_CREATION_LOCKED": "account_locked",
    "ACCOUNT_NEW_POSITIONS_LOCKED": "account_locked",
    "FIFO_VIOLATION": "venue_rule",
    "CLIENT_REQUEST": "cancelled_by_us",
}

# OANDA order ``state`` → ours (a PENDING order with fills is partially filled)
_STATE = {"PENDING": OrderStatus.ACCEPTED, "TRIGGERED": OrderStatus.ACCEPTED, "FILLED": OrderStatus.FILLED,
          "CANCELLED": OrderStatus.CANCELLED}


def reason_code(reason: str | None) -> str:
    return REASON_CODES.get(reason or "", "venue_rejected")


def side_of(units: Decimal) -> Side:
    return Side.BUY if units > 0 else Side.SELL


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise WireError(f"{field}: missing")
    return value


def fee(tx: dict[str, Any]) -> Decimal:
    """The fill's cost beyond its price, in the account's money (see the module docs)."""
    commission = optional_decimal(tx.get("commission"), "commission") or ZERO
    guaranteed = optional_decimal(tx.get("guaranteedExecutionFee"), "guaranteedExecutionFee") or ZERO
    financing = optional_decimal(tx.get("financing"), "financing") or ZERO
    return commission + guaranteed - financing


def transaction_fill(tx: dict[str, Any], client_order_id: str, symbol: str) -> Fill:
    """An ``ORDER_FILL`` transaction as our ``Fill`` of ``client_order_id``."""
    units = decimal(tx.get("units"), "units")
    if units == 0:
        raise WireError("units: zero")
    return Fill(
        fill_id=_text(tx.get("id"), "id"),
        client_order_id=client_order_id,
        symbol=symbol,
        side=side_of(units),
        quantity=abs(units),
        price=decimal(tx.get("price") or tx.get("fullVWAP"), "price"),
        fee=fee(tx),
        ts=epoch_seconds(tx.get("time"), "time"),
    )


def order_update(order: dict[str, Any], symbol: str, *, filled: Decimal = ZERO,
                 average_price: Decimal | None = None, message: str = "") -> OrderUpdate:
    """An OANDA order object (``GET .../orders/@<client id>``) as an ``OrderUpdate``.

    ``filled``: what the fills known for it add up to (an order object carries
    no filled quantity; a FILLED one is filled in full).
    """
    state = _text(order.get("state"), "state")
    if state not in _STATE:
        raise WireError(f"state: unknown OANDA order state {state!r}")
    units = abs(decimal(order.get("units"), "units"))
    status = _STATE[state]
    if status is OrderStatus.FILLED:
        filled = units
    elif status is OrderStatus.ACCEPTED and filled > 0:
        status = OrderStatus.PARTIALLY_FILLED
    client = order.get("clientExtensions") or {}
    stamp = order.get("filledTime") or order.get("cancelledTime") or order.get("createTime")
    return OrderUpdate(
        client_order_id=_text(client.get("id"), "clientExtensions.id"),
        status=status,
        ts=epoch_seconds(stamp, "createTime"),
        broker_order_id=_text(order.get("id"), "id"),
        symbol=symbol,
        filled_quantity=filled,
        average_price=average_price,
        message=message,
    )


def position(raw: dict[str, Any], symbol: str) -> Position | None:
    """One ``openPositions`` entry as our net position (None when flat).

    A netting account holds one side; a hedging account's two sides are
    netted, priced at the average of what remains open on the larger side.
    """
    long_side, short_side = raw.get("long") or {}, raw.get("short") or {}
    long_units = decimal(long_side.get("units") or "0", "long.units")
    short_units = decimal(short_side.get("units") or "0", "short.units")  # negative on the wire
    net = long_units + short_units
    if net == 0:
        return None
    side = long_side if long_units >= -short_units else short_side
    return Position(symbol, net, decimal(side.get("averagePrice"), "averagePrice"))


def price_tick(msg: dict[str, Any], component: str) -> tuple[str, int, float]:
    """A pricing-stream ``PRICE`` message → (instrument, epoch second, the configured price as a float)."""
    instrument = _text(msg.get("instrument"), "instrument")
    ts = epoch_seconds(msg.get("time"), "time")
    try:
        bid = decimal(msg["bids"][0]["price"], "bids") if component != "ask" else ZERO
        ask = decimal(msg["asks"][0]["price"], "asks") if component != "bid" else ZERO
    except (KeyError, IndexError, TypeError) as exc:
        raise WireError(f"price {instrument}: no usable bid/ask ({exc!r})") from None
    # the midpoint exactly (Decimal), then one rounding to float: the same number as the candle's "mid"
    value = float((bid + ask) / 2 if component == "mid" else bid or ask)
    if not value > 0:
        raise WireError(f"price {instrument}: not positive: {value!r}")
    return instrument, ts, value


def candle_bar(symbol: str, candle: dict[str, Any], key: str, bar_seconds: int) -> Bar:
    """A candle (``time`` = its OPEN) as a close-stamped bar; volume is OANDA's tick count."""
    ohlc = candle.get(key)
    if not isinstance(ohlc, dict):
        raise WireError(f"candle {symbol}: no {key!r} prices")
    try:
        return Bar(symbol, epoch_seconds(candle.get("time"), "time") + bar_seconds, float(ohlc["o"]),
                   float(ohlc["h"]), float(ohlc["l"]), float(ohlc["c"]), float(candle.get("volume") or 0))
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"candle {symbol}: {exc!r}") from None
