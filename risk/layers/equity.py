"""What the account's recent results allow: daily loss, drawdown tiers, volatility regime, loss streak."""

from __future__ import annotations

import enum
import math
from bisect import bisect_right
from decimal import Decimal

from brokers.base import OrderRequest
from risk.config import DailyLossConfig, DrawdownConfig, LossStreakConfig, VolatilityRegimeConfig
from risk.governor import ALLOW, RiskContext, Scope, TradingState, Verdict
from risk.layers.base import VOLATILITY_Z, Hook, Layer, is_flatten


class DailyLossLimitLayer(Layer):
    """Stops new exposure once the day's equity loss reaches the limit, then waits for a human.

    At the limit an exposure-increasing order gets HALT, which moves the
    governor to HALTED (an explicit resume is needed, even on the next day).
    Reductions pass this layer; once HALTED only flatten-marked exits pass the
    kill switch. Every mark (each bar through ``on_equity``, each order through
    ``check``) is assessed, so HALTED is requested as soon as the loss reaches
    the limit, not at the next entry. With ``flatten`` on, ``flatten_requested``
    tells the daemon to close everything.
    """

    name = "daily_loss"
    scope = Scope.EVERY_ORDER  # every order's mark is assessed; only entries are denied
    hooks = frozenset({Hook.EQUITY})

    def __init__(self, cfg: DailyLossConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._limit = cfg.limit
        self._flatten = cfg.flatten
        # the last (equity, day start) assessed; NaN until the first mark
        self._equity = math.nan
        self._day_start = math.nan

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        loss = self._assess(ctx.ts, ctx.equity, ctx.day_start_equity)
        if not ctx.increases_exposure(request):
            return ALLOW
        if loss is None:
            return self.deny("equity_unknown", f"equity {ctx.equity}, day start {ctx.day_start_equity}", request, ctx)
        if loss >= self._limit:
            return self.halt("daily_loss", self._message(loss))
        return ALLOW

    def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None:
        self._assess(ts, equity, day_start_equity)

    def figures(self) -> dict[str, object]:
        return {"value": _loss(self._equity, self._day_start), "limit": self._limit,
                "unit": "fraction of day-start equity"}

    def _assess(self, ts: int, equity: float, day_start: float) -> float | None:
        """Today's loss (None when unknown); at the limit, requests HALTED (and a flatten when configured)."""
        self._equity, self._day_start = equity, day_start
        loss = _loss(equity, day_start)
        if loss is not None and loss >= self._limit:
            self._request_state(TradingState.HALTED, "daily_loss", ts, self._message(loss))
            self.flatten_requested = self.flatten_requested or self._flatten
        return loss

    def _message(self, loss: float) -> str:
        return f"daily loss {loss:.2%} >= limit {self._limit:.2%}"


def _loss(equity: float, day_start: float) -> float | None:
    """Today's loss as a fraction of the day's start; None when either figure is unusable."""
    if not (math.isfinite(equity) and math.isfinite(day_start) and day_start > 0):
        return None
    return 1.0 - equity / day_start


class DrawdownTier(enum.IntEnum):
    """How far equity is below its peak, by the configured bounds; each tier is stricter than the last."""

    NONE = 0  # below ``warn``
    WARN = 1  # an event; orders pass
    HALVE = 2  # entries aim at ``halve_factor`` of their target position
    REDUCING = 3  # entries are denied and REDUCING is requested
    HALT = 4  # every order but a flatten halts; HALTED, a flatten and a rollback are requested


class DrawdownLayer(Layer):
    """Tiers of drawdown from peak equity, from a warning to a flatten, halt and model rollback.

    * warn: an event; orders pass.
    * halve: entries aim at ``halve_factor`` of their target position.
    * reducing: entries are denied ("drawdown_reducing") and REDUCING is requested.
    * halt: every order but a flatten-marked exit gets HALT ("drawdown_halt");
      HALTED is requested with ``flatten_requested`` and ``rollback_to_gold``.

    The tier follows the drawdown both ways; entering a stricter tier emits its
    event or request once. Requests and flags stay latched until ``on_resume``
    so a brief recovery cannot quietly undo a halt.
    """

    name = "drawdown"
    scope = Scope.EVERY_ORDER  # the halt tier stops exits too, and every order's mark is assessed
    hooks = frozenset({Hook.EQUITY})
    TIERS = tuple(tier.name.lower() for tier in DrawdownTier)

    def __init__(self, cfg: DrawdownConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._cfg = cfg
        # ascending (the config validates it), so the tier is the number of bounds reached
        self._bounds = (cfg.warn, cfg.halve, cfg.reducing, cfg.halt)
        self.tier = DrawdownTier.NONE
        # the last (equity, peak) assessed; NaN until the first mark
        self._equity = math.nan
        self._peak = math.nan

    @property
    def drawdown(self) -> float | None:
        """The drawdown from peak at the last mark; None when equity or peak is unusable."""
        equity, peak = self._equity, self._peak
        if not (math.isfinite(equity) and math.isfinite(peak) and peak > 0):
            return None
        return max(1.0 - equity / peak, 0.0)

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        tier = self._assess(ctx.ts, ctx.equity, ctx.peak_equity)
        if tier is None:
            if not ctx.increases_exposure(request):
                return ALLOW
            return self.deny("equity_unknown", f"equity {ctx.equity}, peak {ctx.peak_equity}", request, ctx)
        if tier is DrawdownTier.HALT:
            if is_flatten(request, ctx):
                return ALLOW
            return self.halt("drawdown_halt", self._message())
        if tier < DrawdownTier.HALVE or not ctx.increases_exposure(request):
            return ALLOW
        if tier is DrawdownTier.REDUCING:
            return self.deny("drawdown_reducing", self._message(), request, ctx)
        return self.scale("drawdown_halve", self._message(), request, ctx, self._cfg.halve_factor)

    def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None:
        self._assess(ts, equity, peak_equity)

    def figures(self) -> dict[str, object]:
        return {"value": self.drawdown, "limit": self._cfg.halt, "tier": self.TIERS[self.tier],
                "tiers": dict(zip(self.TIERS[1:], self._bounds, strict=True)),
                "flatten_requested": self.flatten_requested, "rollback_to_gold": self.rollback_to_gold}

    def _assess(self, ts: int, equity: float, peak: float) -> DrawdownTier | None:
        """The tier at this mark (None when it cannot be valued; the tier then stays as it was)."""
        self._equity, self._peak = equity, peak
        drawdown = self.drawdown
        if drawdown is None:
            return None
        reached = bisect_right(self._bounds, drawdown)  # the tier is the number of bounds reached
        if reached != self.tier:
            previous, self.tier = self.tier, DrawdownTier(reached)
            if self.tier > previous:
                self._enter(self.tier, ts)
        return self.tier

    def _enter(self, tier: DrawdownTier, ts: int) -> None:
        """Act on reaching a stricter tier: its event, or its state request and flags."""
        reason = f"drawdown_{self.TIERS[tier]}"
        message = self._message()
        if tier is DrawdownTier.HALT:
            self.flatten_requested = True
            self.rollback_to_gold = self.rollback_to_gold or self._cfg.rollback_to_gold
            self._request_state(TradingState.HALTED, reason, ts, message)
        elif tier is DrawdownTier.REDUCING:
            self._request_state(TradingState.REDUCING, reason, ts, message)
        else:
            self._emit(ts, reason, message)

    def _message(self) -> str:
        return f"drawdown {self.drawdown:.2%} from peak: tier {self.TIERS[self.tier]}"


class VolatilityRegimeLayer(Layer):
    """Smaller (or no) entries while volatility is extreme: stops slip and fills gap there."""

    name = "volatility_regime"
    scope = Scope.ENTRIES

    def __init__(self, cfg: VolatilityRegimeConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._cfg = cfg
        self._last_z: float | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        z = ctx.extras.get(VOLATILITY_Z)
        if not isinstance(z, int | float):
            return ALLOW
        self._last_z = float(z)
        if not z > self._cfg.z_threshold:
            return ALLOW
        message = f"volatility z {z:.2f} > {self._cfg.z_threshold}"
        if self._cfg.action == "block":
            return self.deny("volatility_regime", message, request, ctx)
        return self.scale("volatility_regime", message, request, ctx, self._cfg.factor)

    def figures(self) -> dict[str, object]:
        return {"value": self._last_z, "limit": self._cfg.z_threshold, "action": self._cfg.action}


class LossStreakLayer(Layer):
    """After several losing round trips in a row, stop entering for a while: the regime may have changed."""

    name = "loss_streak"
    scope = Scope.ENTRIES
    hooks = frozenset({Hook.TRADE_CLOSED})

    def __init__(self, cfg: LossStreakConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._max = cfg.max_consecutive
        self._cooldown = cfg.cooldown_seconds
        self.streak = 0
        self.blocked_until: int | None = None

    def on_trade_closed(self, symbol: str, pnl: float | Decimal, ts: int) -> None:
        self.record_trade(pnl, ts)

    def record_trade(self, pnl: float | Decimal, ts: int) -> None:
        """Count a losing round trip (a win or break-even resets); at the limit, block entries for a while."""
        if pnl >= 0:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self._max:
            self.blocked_until = ts + self._cooldown
            self._emit(ts, "loss_streak", f"{self.streak} losing round trips in a row; entries blocked "
                       f"for {self._cooldown} s")
            self.streak = 0

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        until = self.blocked_until
        if until is None or ctx.ts >= until:
            return ALLOW
        return self.deny("loss_streak", f"losing streak: entries blocked for {until - ctx.ts} s", request, ctx)

    def figures(self) -> dict[str, object]:
        return {"value": self.streak, "limit": self._max, "blocked_until": self.blocked_until}
