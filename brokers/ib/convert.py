"""ib_async's objects (floats, IB status words, error codes) → our vocabulary (Decimal, OrderStatus, reasons).

Floats from the wire are read back through ``repr`` so that 1.1 is
``Decimal("1.1")``, not the binary expansion; quantities that are whole
numbers come back as whole Decimals.
"""

from __future__ import annotations

import math
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from brokers.base import Fill, OrderStatus, Side

__all__ = ["CONNECTIVITY", "ORDER_REFUSALS", "decimal", "epoch", "fill", "order_status", "read_only_error"]

# errors that refuse an order outright (the order never worked at the venue)
ORDER_REFUSALS = frozenset({103, 200, 201, 203, 321, 322, 383, 387, 388, 435, 461, 10147, 10148})
CONNECTIVITY = {1100: "lost", 1101: "restored_data_lost", 1102: "restored_data_kept", 2110: "lost"}
_STATUS = {
    "PendingSubmit": OrderStatus.SUBMITTED,
    "ApiPending": OrderStatus.SUBMITTED,
    "PreSubmitted": OrderStatus.ACCEPTED,
    "Submitted": OrderStatus.ACCEPTED,
    "PendingCancel": OrderStatus.CANCEL_PENDING,
    "ApiCancelled": OrderStatus.CANCELLED,
    "Cancelled": OrderStatus.CANCELLED,
    "Filled": OrderStatus.FILLED,
    "Inactive": OrderStatus.REJECTED,
    "ValidationError": OrderStatus.REJECTED,
}


class WireError(ValueError):
    """A value from TWS that cannot be read as what it should be."""


def decimal(value: object, what: str) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise WireError(f"{what}: not a finite number: {value!r}")
        text = repr(value)
    else:
        text = str(value)
    try:
        d = Decimal(text)
    except InvalidOperation:
        raise WireError(f"{what}: not a number: {value!r}") from None
    return d.quantize(Decimal(1)) if d == d.to_integral_value() else d


def epoch(when: object) -> int:
    if not isinstance(when, datetime) or when.tzinfo is None:
        raise WireError(f"not an aware time: {when!r}")
    return int(when.timestamp())


def order_status(ib_status: str, filled: Decimal, refused: bool) -> OrderStatus:
    """IB's status word → ours; a cancel caused by a refusal (error 201...) is a rejection."""
    status = _STATUS.get(ib_status)
    if status is None:
        raise WireError(f"unknown order status {ib_status!r}")
    if status is OrderStatus.CANCELLED and refused and not filled:
        return OrderStatus.REJECTED
    if status is OrderStatus.ACCEPTED and filled > 0:
        return OrderStatus.PARTIALLY_FILLED
    return status


def fill(ib_fill: Any, symbol: str, fee: Decimal) -> Fill:
    """One execution (``ib_async.Fill``) under our symbol; its id is IB's execId."""
    ex = ib_fill.execution
    side = {"BOT": Side.BUY, "SLD": Side.SELL}.get(ex.side)
    if side is None:
        raise WireError(f"execution {ex.execId}: unknown side {ex.side!r}")
    if not ex.orderRef:
        raise WireError(f"execution {ex.execId}: no orderRef (not one of ours)")
    return Fill(
        fill_id=str(ex.execId),
        client_order_id=str(ex.orderRef),
        symbol=symbol,
        side=side,
        quantity=decimal(ex.shares, "shares"),
        price=decimal(ex.price, "price"),
        fee=fee,
        ts=epoch(ex.time),
    )


def read_only_error(code: int, message: str) -> bool:
    return code == 321 and "read-only" in message.lower()
