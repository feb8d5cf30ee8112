"""Stale data: refuses to enter on a bar that is old by the time the order is judged."""

from __future__ import annotations

from decimal import Decimal

from brokers.base import OrderRequest
from risk.config import StaleDataConfig
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
