"""Data that cannot be trusted to be current: a stale bar, or a venue whose streams are down."""

from __future__ import annotations

import enum
from decimal import Decimal

from brokers.base import OrderRequest
from risk.config import BrokerConnectionConfig, StaleDataConfig
from risk.governor import ALLOW, RiskContext, Scope, Verdict
from risk.layers.base import BAR_TS, Layer


class StaleDataLayer(Layer):
    """A decision on an old bar is a decision on a market that has moved on."""

    name = "stale_data"
    scope = Scope.ENTRIES

    def __init__(self, cfg: StaleDataConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._max_age = cfg.max_age_seconds
        self._last_age: int | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        bar_ts = ctx.extras.get(BAR_TS)
        if not isinstance(bar_ts, int):
            return ALLOW  # without a bar time the bar guard's staleness check is the only one
        age = self._last_age = ctx.ts - bar_ts
        if age <= self._max_age:
            return ALLOW
        return self.deny("stale_data", f"bar is {age} s old, limit {self._max_age} s", request, ctx)

    def figures(self) -> dict[str, object]:
        return {"value": self._last_age, "limit": self._max_age, "unit": "seconds"}


class FeedLink(enum.StrEnum):
    """The venue's connection as the layer last saw it (``RiskContext.feed_connected``)."""

    UNSEEN = "unseen"  # no order judged yet
    UNREPORTED = "unreported"  # the venue reports no connection (a replay): nothing to block on
    CONNECTED = "connected"
    DISCONNECTED = "disconnected"


class BrokerConnectionLayer(Layer):
    """No new exposure while the venue's market-data or order-update stream is down.

    While a stream is down the daemon cannot see the prices it would enter at
    or the fills of what it sends, so an entry would be blind twice over.
    Exits, reductions and flatten orders still pass (the scope is entries
    only) and go out over REST, because holding a position blind is worse
    than closing it blind. A flip is cut to its closing part. The venue counts
    as connected again only after its own recovery (backfill, missed order
    updates) has run, so entries resume on complete books.
    """

    name = "broker_connection"
    scope = Scope.ENTRIES

    def __init__(self, cfg: BrokerConnectionConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self.link = FeedLink.UNSEEN

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        connected = ctx.feed_connected
        if connected is None:
            self.link = FeedLink.UNREPORTED
            return ALLOW
        if connected:
            self.link = FeedLink.CONNECTED
            return ALLOW
        self.link = FeedLink.DISCONNECTED
        return self.deny("broker_disconnected", "the venue's market-data or order-update stream is down: "
                         "no new exposure until it is back", request, ctx)

    def figures(self) -> dict[str, object]:
        return {"value": self.link.value, "limit": FeedLink.CONNECTED.value}
