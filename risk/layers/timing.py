"""When new positions may be opened: the session calendar and a new deployment's drip."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

from brokers.base import OrderRequest
from risk.calendar import DAY, CalendarRangeError, Sessions, sessions_for
from risk.config import TradingWindowConfig
from risk.governor import ALLOW, RiskContext, Scope, Verdict
from risk.layers.base import Layer


class TradingWindowLayer(Layer):
    """New positions only while the market is open and not about to close for the session."""

    name = "trading_window"
    scope = Scope.ENTRIES

    def __init__(self, cfg: TradingWindowConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self.sessions: Sessions = sessions_for(
            cfg.calendar,
            start=cfg.calendar_start,
            close_hour=cfg.weekend_close_hour_utc,
            open_hour=cfg.weekend_open_hour_utc,
        )
        self._cutoff = cfg.entry_cutoff_minutes * 60
        self._last_to_close: int | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        try:
            to_close = self._last_to_close = self.sessions.seconds_to_close(ctx.ts)
        except CalendarRangeError as exc:
            return self.deny("calendar_range", str(exc), request, ctx)
        if to_close is None:
            return self.deny("market_closed", f"{self.sessions.name} is closed", request, ctx)
        if to_close < self._cutoff:
            return self.deny("entry_cutoff", f"{to_close // 60} min to the close, cut-off {self._cutoff // 60} min",
                             request, ctx)
        return ALLOW

    def figures(self) -> dict[str, object]:
        minutes = None if self._last_to_close is None else self._last_to_close // 60
        return {"value": minutes, "limit": self._cutoff // 60, "calendar": self.sessions.name,
                "unit": "minutes to close"}


class DripLayer(Layer):
    """A new deployment earns its full size over its first days instead of getting it on day one."""

    name = "drip"
    scope = Scope.ENTRIES

    def __init__(self, start_ts: int, schedule: Sequence[float], lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._start = start_ts
        self._schedule = tuple(schedule)
        self._last_factor = 1.0

    def factor(self, ts: int) -> float:
        """The size factor of the calendar day ``ts`` falls on; times before the start get the first."""
        day = max((ts - self._start) // DAY, 0)
        return self._schedule[day] if day < len(self._schedule) else 1.0

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        factor = self._last_factor = self.factor(ctx.ts)
        if factor >= 1:
            return ALLOW
        return self.scale("drip_size", f"deployment day size factor {factor}", request, ctx, factor)

    def figures(self) -> dict[str, object]:
        return {"value": self._last_factor, "limit": 1.0, "deployment_start": self._start,
                "schedule": list(self._schedule)}
