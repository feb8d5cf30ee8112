"""What every live adapter does with the order updates it receives, before the daemon sees them.

* ``SeenIds`` — a bounded memory of ids already delivered (execution ids):
  a venue that repeats an event (a reconnect replays, a fake injects a
  duplicate) delivers the fill once. The order manager deduplicates again by
  fill id against the store; this keeps repeats out of the inbox.
* ``Quarantine`` — a message that cannot be turned into our vocabulary is
  never dropped silently: it is logged at error level with its reason and
  kept (bounded) with a count, shown in ``feed_status``.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

import structlog

__all__ = ["Quarantine", "SeenIds"]

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
