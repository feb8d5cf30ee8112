"""How much and how often to trade: model confidence, cooldown, daily order counts, submit rate."""

from __future__ import annotations

from collections import deque
from decimal import Decimal

from brokers.base import OrderRequest
from risk.calendar import DAY
from risk.config import ConfidenceConfig, CooldownConfig, SubmitRateConfig, TradeCountConfig
from risk.governor import ALLOW, RiskContext, Scope, Verdict
from risk.layers.base import Hook, Layer, is_flatten


class ConfidenceLayer(Layer):
    """Entries only when the model is sure enough; exits are never held hostage by its doubt."""

    name = "confidence"
    scope = Scope.ENTRIES

    def __init__(self, cfg: ConfidenceConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._min = cfg.min_confidence
        self._last: float | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        confidence = ctx.confidence
        if confidence is None:
            return ALLOW
        self._last = confidence
        if confidence >= self._min:  # NaN fails this too
            return ALLOW
        return self.deny("low_confidence", f"confidence {confidence:.3f} < {self._min}", request, ctx)

    def figures(self) -> dict[str, object]:
        return {"value": self._last, "limit": self._min}


class CooldownLayer(Layer):
    """A pause after each order in a symbol, so a flickering signal cannot churn it."""

    name = "cooldown"
    scope = Scope.ENTRIES
    hooks = frozenset({Hook.ORDER_SENT})

    def __init__(self, cfg: CooldownConfig, bar_seconds: int, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self.seconds = max(cfg.seconds, cfg.bars * bar_seconds)
        self._last_order: dict[str, int] = {}

    def on_order_sent(self, symbol: str, ts: int) -> None:
        self._last_order[symbol] = ts

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        last = self._last_order.get(request.symbol)
        if last is None:
            return ALLOW
        waited = ctx.ts - last
        if waited >= self.seconds:
            return ALLOW
        return self.deny("cooldown", f"{waited} s since the last {request.symbol} order, cooldown {self.seconds} s",
                         request, ctx)

    def figures(self) -> dict[str, object]:
        return {"value": dict(self._last_order), "limit": self.seconds, "unit": "seconds"}


class TradeCountLayer(Layer):
    """Caps orders per UTC day, per symbol and in total; exits are not judged but still count."""

    name = "trade_count"
    scope = Scope.ENTRIES
    hooks = frozenset({Hook.ORDER_SENT})

    def __init__(self, cfg: TradeCountConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._max_symbol = cfg.max_per_symbol
        self._max_total = cfg.max_total
        self._day = -1
        self._per_symbol: dict[str, int] = {}
        self._total = 0

    def on_order_sent(self, symbol: str, ts: int) -> None:
        self._roll(ts)
        self._per_symbol[symbol] = self._per_symbol.get(symbol, 0) + 1
        self._total += 1

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        self._roll(ctx.ts)
        count = self._per_symbol.get(request.symbol, 0)
        if count >= self._max_symbol:
            return self.deny("max_trades_symbol", f"{count} {request.symbol} orders today, limit {self._max_symbol}",
                             request, ctx)
        if self._total >= self._max_total:
            return self.deny("max_trades_day", f"{self._total} orders today, limit {self._max_total}", request, ctx)
        return ALLOW

    def figures(self) -> dict[str, object]:
        return {"value": self._total, "limit": self._max_total, "per_symbol": dict(self._per_symbol),
                "per_symbol_limit": self._max_symbol}

    def _roll(self, ts: int) -> None:
        """Start a new count at a new UTC day."""
        day = ts // DAY
        if day != self._day:
            self._day, self._per_symbol, self._total = day, {}, 0


class SubmitRateLayer(Layer):
    """Stops a runaway loop from spraying orders, whatever their direction (a flatten still passes)."""

    name = "submit_rate"
    scope = Scope.EVERY_ORDER
    hooks = frozenset({Hook.ORDER_SENT})

    def __init__(self, cfg: SubmitRateConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._max = cfg.max_orders
        self._window = cfg.window_seconds
        self._sent: deque[int] = deque()

    def on_order_sent(self, symbol: str, ts: int) -> None:
        self._sent.append(ts)
        self._prune(ts)

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        self._prune(ctx.ts)
        if len(self._sent) < self._max or is_flatten(request, ctx):
            return ALLOW
        return self.block("submit_rate", f"{len(self._sent)} orders in {self._window} s, limit {self._max}")

    def figures(self) -> dict[str, object]:
        return {"value": len(self._sent), "limit": self._max, "window_seconds": self._window}

    def _prune(self, now: int) -> None:
        """Forget orders that left the rolling window."""
        sent, horizon = self._sent, now - self._window
        while sent and sent[0] <= horizon:
            sent.popleft()
