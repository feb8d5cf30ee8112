"""Alpaca's wire JSON (and msgpack) → tradectl's vocabulary. Pure functions, no I/O.

* Money and quantities come as strings in trading JSON and become ``Decimal``
  straight from the string (never through a float).
* An Alpaca bar is stamped at its OPEN; ``Bar.ts`` is the CLOSE in UTC epoch
  seconds, so the timeframe is added.
* A fill's id is ``<alpaca order id>:<cumulative filled qty>``. The
  trade-updates stream carries an ``execution_id`` but the account-activities
  report (how fills are recovered over REST) does not; both carry the order id
  and the cumulative quantity after the execution (``order.filled_qty`` /
  ``cum_qty``), so this id names one execution identically on both paths and
  the order manager books it once whichever way it arrives.
* Fees come from the venue: Alpaca charges no commission on these orders and
  reports none per execution, so a fill's fee is 0 unless the message carries
  one; regulatory fees arrive as separate account activities (not booked here).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from brokers.base import ZERO, AccountSnapshot, Bar, Fill, OrderStatus, OrderUpdate, Position, Side
from brokers.live.wire import WireError, decimal, epoch_seconds
from brokers.live.wire import optional_decimal as _optional_decimal

__all__ = [
    "account_snapshot",
    "activity_fill",
    "decimal",
    "epoch_seconds",
    "fill_id",
    "order_status",
    "order_update",
    "position",
    "rest_bar",
    "stream_bar",
    "trade_update",
]

S = OrderStatus
# Alpaca order statuses (https://docs.alpaca.markets/docs/orders-at-alpaca) → ours. ``None``: the status says
# nothing new about our state machine; the order keeps what its filled quantity implies.
_STATUS: dict[str, OrderStatus | None] = {
    "pending_new": S.SUBMITTED,
    "accepted": S.ACCEPTED,
    "new": S.ACCEPTED,
    "accepted_for_bidding": S.ACCEPTED,
    "partially_filled": S.PARTIALLY_FILLED,
    "filled": S.FILLED,
    "canceled": S.CANCELLED,
    "expired": S.EXPIRED,
    "rejected": S.REJECTED,
    "replaced": S.CANCELLED,  # this order is over; its replacement is another order
    "pending_cancel": S.CANCEL_PENDING,
    "done_for_day": None,
    "stopped": None,
    "suspended": None,
    "calculated": None,
    "pending_replace": None,
}


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise WireError(f"{field}: missing")
    return value


def order_status(raw: str, filled: Decimal, quantity: Decimal | None) -> OrderStatus:
    """Our status for an Alpaca status; the in-between ones follow from the filled quantity."""
    if raw not in _STATUS:
        raise WireError(f"status: unknown Alpaca order status {raw!r}")
    status = _STATUS[raw]
    if status is not None:
        return status
    if quantity is not None and filled >= quantity:
        return S.FILLED
    return S.PARTIALLY_FILLED if filled > 0 else S.ACCEPTED


def fill_id(order_id: str, cumulative: Decimal) -> str:
    return f"{order_id}:{format(cumulative.normalize(), 'f')}"


def _side(value: Any) -> Side:
    try:
        return Side(value)
    except ValueError:
        raise WireError(f"side: not buy or sell: {value!r}") from None


def order_update(order: dict[str, Any], *, ts: int | None = None, fill: Fill | None = None,
                 message: str = "") -> OrderUpdate:
    """An Alpaca order object (REST answer or the ``order`` of a trade update) as an ``OrderUpdate``."""
    filled = decimal(order.get("filled_qty") or "0", "filled_qty")
    quantity = _optional_decimal(order.get("qty"), "qty")
    status = order_status(_text(order.get("status"), "status"), filled, quantity)
    stamp = ts if ts is not None else epoch_seconds(order.get("updated_at") or order.get("submitted_at")
                                                    or order.get("created_at"), "updated_at")
    if not message and order.get("status") == "replaced" and order.get("replaced_by"):
        message = f"replaced by {order['replaced_by']}"
    return OrderUpdate(
        client_order_id=_text(order.get("client_order_id"), "client_order_id"),
        status=status,
        ts=stamp,
        broker_order_id=_text(order.get("id"), "id"),
        symbol=order.get("symbol"),
        filled_quantity=filled,
        average_price=_optional_decimal(order.get("filled_avg_price"), "filled_avg_price"),
        fill=fill,
        message=message,
    )


_FILL_EVENTS = frozenset({"fill", "partial_fill"})


def trade_update(data: dict[str, Any]) -> tuple[OrderUpdate, str | None]:
    """One ``trade_updates`` message's ``data`` → the update (with its fill for fill events) and the execution id."""
    event = _text(data.get("event"), "event")
    order = data.get("order")
    if not isinstance(order, dict):
        raise WireError("order: missing")
    ts = epoch_seconds(data.get("timestamp") or order.get("updated_at"), "timestamp")
    fill = None
    execution_id = None
    if event in _FILL_EVENTS:
        cumulative = decimal(order.get("filled_qty"), "order.filled_qty")
        fill = Fill(
            fill_id=fill_id(_text(order.get("id"), "order.id"), cumulative),
            client_order_id=_text(order.get("client_order_id"), "order.client_order_id"),
            symbol=_text(order.get("symbol"), "order.symbol"),
            side=_side(order.get("side")),
            quantity=decimal(data.get("qty"), "qty"),
            price=decimal(data.get("price"), "price"),
            fee=decimal(data["fee"], "fee") if data.get("fee") is not None else ZERO,
            ts=ts,
        )
        execution_id = data.get("execution_id") or fill.fill_id
    message = "" if event in _FILL_EVENTS else f"alpaca {event}"
    if event == "rejected" and data.get("reason"):
        message = f"alpaca rejected: {data['reason']}"
    return order_update(order, ts=ts, fill=fill, message=message), execution_id


def activity_fill(activity: dict[str, Any], client_order_id: str) -> Fill:
    """A ``FILL`` account activity (``GET /v2/account/activities/FILL``) as a ``Fill`` of ``client_order_id``."""
    return Fill(
        fill_id=fill_id(_text(activity.get("order_id"), "order_id"), decimal(activity.get("cum_qty"), "cum_qty")),
        client_order_id=client_order_id,
        symbol=_text(activity.get("symbol"), "symbol"),
        side=_side(activity.get("side")),
        quantity=decimal(activity.get("qty"), "qty"),
        price=decimal(activity.get("price"), "price"),
        fee=ZERO,
        ts=epoch_seconds(activity.get("transaction_time"), "transaction_time"),
    )


def position(raw: dict[str, Any]) -> Position:
    quantity = decimal(raw.get("qty"), "qty")
    if raw.get("side") == "short" and quantity > 0:
        quantity = -quantity
    return Position(_text(raw.get("symbol"), "symbol"), quantity, decimal(raw.get("avg_entry_price"),
                                                                          "avg_entry_price"))


def account_snapshot(raw: dict[str, Any], ts: int) -> AccountSnapshot:
    return AccountSnapshot(
        cash=decimal(raw.get("cash"), "cash"),
        equity=decimal(raw.get("equity") or raw.get("portfolio_value"), "equity"),
        currency=raw.get("currency") or "USD",
        ts=ts,
    )


def _bar(symbol: str, open_ts: int, raw: dict[str, Any], bar_seconds: int) -> Bar:
    try:
        return Bar(symbol, open_ts + bar_seconds, float(raw["o"]), float(raw["h"]), float(raw["l"]),
                   float(raw["c"]), float(raw.get("v") or 0.0))
    except (KeyError, TypeError, ValueError) as exc:
        raise WireError(f"bar {symbol}: {exc!r}") from None


def stream_bar(msg: dict[str, Any], bar_seconds: int) -> Bar:
    """A market-data stream ``{"T": "b", ...}`` message (``t`` = the OPEN, a msgpack Timestamp)."""
    return _bar(_text(msg.get("S"), "S"), epoch_seconds(msg.get("t"), "t"), msg, bar_seconds)


def rest_bar(symbol: str, raw: dict[str, Any], bar_seconds: int) -> Bar:
    """A historical bar from ``GET /v2/stocks/bars`` (``t`` = the OPEN, RFC 3339)."""
    return _bar(symbol, epoch_seconds(raw.get("t"), "t"), raw, bar_seconds)
