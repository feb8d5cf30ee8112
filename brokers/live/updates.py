"""What every live adapter does with the order updates it receives, before the daemon sees them.

* ``SeenIds`` — a bounded memory of ids already delivered (execution ids):
  a venue that repeats an event (a reconnect replays, a fake injects a
  duplicate) delivers the fill once. The order manager deduplicates again by
  fill id against the store; this keeps repeats out of the inbox.
* ``ForwardOnly`` — an order's reported status and filled quantity never go
  back, whatever order the venue's events arrive in.
* ``Quarantine`` — a message that cannot be turned into our vocabulary is
  never dropped silently: it is logged at error level with its reason and
  kept (bounded) with a count, shown in ``feed_status``.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import structlog

from brokers.base import OrderStatus, OrderUpdate

__all__ = ["ForwardOnly", "Quarantine", "SeenIds"]

log = structlog.get_logger(__name__)


class SeenIds:
    """Remembers the latest ``limit`` ids; ``add`` is True for an id not seen before."""

    def __init__(self, limit: int = 10_000) -> None:
        if limit < 1:
            raise ValueError(f"limit must be >= 1, got {limit}")
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()
        self.repeats = 0

    def add(self, key: str) -> bool:
        if key in self._ids:
            self.repeats += 1
            return False
        self._ids[key] = None
        if len(self._ids) > self._limit:
            self._ids.popitem(last=False)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)


@dataclass
class Quarantine:
    """Messages an adapter could not normalise: logged, counted, the latest kept for inspection."""

    source: str
    keep: int = 50
    count: int = 0
    latest: deque[dict[str, Any]] = field(default_factory=deque)

    def put(self, reason: str, message: object) -> None:
        self.count += 1
        text = repr(message)
        if len(text) > 2000:
            text = text[:2000] + "…"
        entry = {"reason": reason, "message": text}
        self.latest.append(entry)
        while len(self.latest) > self.keep:
            self.latest.popleft()
        log.error("venue message could not be used; quarantined", source=self.source, reason=reason, message=text)

    def status(self) -> dict[str, Any]:
        return {"count": self.count, "last_reason": self.latest[-1]["reason"] if self.latest else None}


# How far along its life an order is; an adapter never reports an order moving back.
_RANK = {
    OrderStatus.NEW: 0, OrderStatus.SUBMITTED: 1, OrderStatus.UNKNOWN: 1, OrderStatus.ACCEPTED: 2,
    OrderStatus.PARTIALLY_FILLED: 3, OrderStatus.CANCEL_PENDING: 3, OrderStatus.FILLED: 4,
    OrderStatus.CANCELLED: 4, OrderStatus.REJECTED: 4, OrderStatus.EXPIRED: 4,
}


class ForwardOnly:
    """Keeps each order's reported status, filled quantity and time from going back.

    Venues deliver events out of order (a late ``partial_fill`` after ``fill``,
    a retransmission after a reconnect). The late event's *fill* is still real
    and is kept; its status, cumulative quantity and time are raised to what
    was already reported, so the daemon sees one forward path per order.
    """

    def __init__(self, limit: int = 10_000) -> None:
        self._last: OrderedDict[str, OrderUpdate] = OrderedDict()
        self._limit = limit
        self.raised = 0

    def __call__(self, update: OrderUpdate) -> OrderUpdate:
        prev = self._last.get(update.client_order_id)
        if prev is not None:
            behind = _RANK[update.status] < _RANK[prev.status] or (
                _RANK[update.status] == 4 and _RANK[prev.status] == 4 and update.status is not prev.status)
            if behind or update.filled_quantity < prev.filled_quantity or update.ts < prev.ts:
                self.raised += 1
                update = dataclasses.replace(
                    update,
                    status=prev.status if behind else update.status,
                    filled_quantity=max(update.filled_quantity, prev.filled_quantity),
                    average_price=prev.average_price if update.filled_quantity < prev.filled_quantity
                    else update.average_price,
                    ts=max(update.ts, prev.ts),
                )
        self._last[update.client_order_id] = dataclasses.replace(update, fill=None)
        self._last.move_to_end(update.client_order_id)
        if len(self._last) > self._limit:
            self._last.popitem(last=False)
        return update
