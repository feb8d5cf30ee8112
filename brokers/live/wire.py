"""Reading venue JSON into exact values: the number and time rules every live adapter shares.

* ``decimal`` — money and quantities straight from the wire string (never
  through a float), refusing missing, non-numeric and non-finite values.
* ``epoch_seconds`` — RFC 3339 (``Z`` or an offset, any fraction, OANDA's and
  Alpaca's nanoseconds), a msgpack ``Timestamp`` or a datetime → UTC epoch seconds.
* ``WireError`` — a message lacks a field or carries a value we cannot read
  (an adapter quarantines the message, or turns it into one clear line).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from brokers.errors import BrokerError

__all__ = ["WireError", "decimal", "epoch_seconds", "optional_decimal"]


class WireError(BrokerError):
    """A venue message lacks a field we need or carries a value we cannot read."""


def decimal(value: Any, field: str) -> Decimal:
    if value is None or isinstance(value, bool):
        raise WireError(f"{field}: missing")
    try:
        result = Decimal(value) if isinstance(value, str | int) else Decimal(repr(float(value)))
    except (InvalidOperation, ValueError, TypeError):
        raise WireError(f"{field}: not a number: {value!r}") from None
    if not result.is_finite():
        raise WireError(f"{field}: not finite: {value!r}")
    return result


def optional_decimal(value: Any, field: str) -> Decimal | None:
    """``decimal`` for a field that may be absent or empty (None then)."""
    return None if value in (None, "") else decimal(value, field)


def epoch_seconds(value: Any, field: str = "timestamp") -> int:
    """RFC 3339 (``Z`` or an offset, any fraction), a msgpack ``Timestamp``, or a datetime → epoch seconds."""
    if value is None:
        raise WireError(f"{field}: missing")
    seconds = getattr(value, "seconds", None)  # msgpack.Timestamp
    if isinstance(seconds, int) and hasattr(value, "nanoseconds"):
        return seconds
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):
            text = text[:-1] + "+00:00"
        if "." in text:  # fromisoformat wants at most 6 fraction digits; trim nanoseconds
            head, _, tail = text.partition(".")
            digits = len(tail) - len(tail.lstrip("0123456789"))
            text = f"{head}.{tail[:min(digits, 6)]}{tail[digits:]}"
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            raise WireError(f"{field}: not an RFC 3339 time: {value!r}") from None
    else:
        raise WireError(f"{field}: not a time: {value!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())
