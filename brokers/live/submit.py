"""Sending an order exactly once when the network cannot say whether it arrived.

``submit_once`` is the whole rule, for every live adapter:

* the request is sent once; it is never sent again from here;
* a definite refusal (the venue answered 4xx with a reason) raises
  ``OrderRejected`` with the venue's reason;
* "client order id already used" means an earlier copy arrived (the
  offloader re-sends only after a 429, which the venue did not process):
  the order is looked up and, if it is the same order, reported as sent;
  a *different* order under that id is a real duplicate and is refused,
  and one the lookup cannot find is unknown (never "rejected");
* anything else (a timeout, a 5xx, a reset connection) is ambiguous: the
  order is looked up by its client id every ``poll`` seconds until the venue
  knows it or ``deadline`` seconds have passed, and then ``UnknownOrderOutcome``
  is raised. The order manager marks the order ``unknown`` and keeps asking
  (``OrderManager.resolve_unknown`` / ``check_timeouts``); it never re-sends.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable

import structlog

from brokers.base import OrderRequest, OrderUpdate
from brokers.errors import OrderRejected, UnknownOrderOutcome

__all__ = ["SubmitFailure", "submit_once"]

log = structlog.get_logger(__name__)


class SubmitFailure(enum.StrEnum):
    """How a venue adapter classifies a failed send."""

    REJECTED = "rejected"  # the venue refused it: no such order exists
    DUPLICATE = "duplicate"  # the client order id is taken: an earlier copy arrived
    AMBIGUOUS = "ambiguous"  # no usable answer: the order may or may not exist


Classifier = Callable[[BaseException], tuple[SubmitFailure, str]]
Lookup = Callable[[], Awaitable[OrderUpdate | None]]


async def submit_once(
    client_order_id: str,
    request: OrderRequest,
    send: Callable[[], Awaitable[OrderUpdate]],
    lookup: Lookup,
    classify: Classifier,
    *,
    deadline: float,
    poll: float = 0.5,
    same_order: Callable[[OrderUpdate, OrderRequest], bool] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> OrderUpdate:
    """Send once; on an ambiguous failure find the order by client id or raise ``UnknownOrderOutcome``."""
    started = clock()
    try:
        return await send()
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except BaseException as exc:
        failure, reason = classify(exc)
        error = exc
    if failure is SubmitFailure.REJECTED:
        raise OrderRejected(f"{client_order_id}: rejected by the venue: {reason}") from error
    if failure is SubmitFailure.DUPLICATE:
        found = await _lookup_quietly(client_order_id, lookup)
        if found is None:
            # the venue holds an order under this id that we cannot see yet: unknown, never "rejected"
            raise UnknownOrderOutcome(f"{client_order_id}: the venue reports the id as used ({reason}) but the "
                                      "lookup did not find it") from error
        if same_order is None or same_order(found, request):
            log.warning("submit: client order id already at the venue; it was sent before",
                        client_order_id=client_order_id)
            return found
        raise OrderRejected(f"duplicate client_order_id {client_order_id!r}: {reason}") from error
    log.error("submit outcome unknown; looking the order up by client id (never re-sent)",
              client_order_id=client_order_id, error=reason)
    while True:
        found = await _lookup_quietly(client_order_id, lookup)
        if found is not None:
            log.warning("submit outcome resolved by lookup", client_order_id=client_order_id,
                        status=found.status.value)
            return found
        left = deadline - (clock() - started)
        if left <= 0:
            raise UnknownOrderOutcome(
                f"{client_order_id}: submit failed ambiguously ({reason}) and the venue did not know the order "
                f"within {deadline:g} s"
            ) from error
        await asyncio.sleep(min(poll, left))


async def _lookup_quietly(client_order_id: str, lookup: Lookup) -> OrderUpdate | None:
    """A failed lookup is "not known yet", not a reason to give up before the deadline."""
    try:
        return await lookup()
    except (asyncio.CancelledError, KeyboardInterrupt):
        raise
    except Exception as exc:
        log.warning("order lookup failed; will ask again", client_order_id=client_order_id, error=repr(exc))
        return None
