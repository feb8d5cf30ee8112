"""How much to hold: per-symbol position, the book's gross exposure, and absurd single orders."""

from __future__ import annotations

import math
from decimal import Decimal

from brokers.base import OrderRequest
from risk.config import FatFingerConfig, GrossExposureConfig, PositionLimitConfig
from risk.governor import ALLOW, RiskContext, Scope, Verdict
from risk.layers.base import Layer, decimal_of, fit_entry, floor_lot, is_flatten, valid_price


class PositionLimitLayer(Layer):
    """Caps each symbol's position; an entry is cut to what still fits rather than dropped."""

    name = "position_limit"
    scope = Scope.ENTRIES

    def __init__(self, cfg: PositionLimitConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._max_units = cfg.max_units
        self._max_notional = cfg.max_notional
        self._last: tuple[str, Decimal, float] | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        self._last = (request.symbol, ctx.position, ctx.last_price)
        cap, reason = self._cap(ctx.last_price)
        if cap is None:
            if reason:
                return self.deny(reason, f"no valid price ({ctx.last_price})", request, ctx)
            return ALLOW
        message = f"{request.symbol} position capped at {floor_lot(cap, self.lot_size)} units"
        return self.allow_at_most(reason, message, request, fit_entry(request, ctx, cap, self.lot_size))

    def figures(self) -> dict[str, object]:
        if self._last is None:
            return {"value": None, "limit": self._max_units, "max_notional": self._max_notional}
        symbol, position, price = self._last
        notional = float(abs(position)) * price if valid_price(price) else None
        return {"value": position, "limit": self._max_units, "symbol": symbol, "notional": notional,
                "max_notional": self._max_notional}

    def _cap(self, price: float) -> tuple[Decimal | None, str]:
        """The binding cap in units and its reason code.

        (None, "no_price") when the notional cap applies but the price cannot
        value it; (None, "") when both caps are off.
        """
        cap, reason = self._max_units, "max_position_units"
        if self._max_notional is not None:
            if not valid_price(price):
                return None, "no_price"
            by_notional = self._max_notional / decimal_of(price)
            if cap is None or by_notional < cap:
                cap, reason = by_notional, "max_position_notional"
        if cap is None:
            return None, ""
        return cap, reason


class GrossExposureLayer(Layer):
    """Caps the book as a whole, since per-symbol caps add up across many symbols."""

    name = "gross_exposure"
    scope = Scope.ENTRIES

    def __init__(self, cfg: GrossExposureConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._max_notional = float(cfg.max_notional) if cfg.max_notional is not None else None
        self._max_leverage = cfg.max_leverage
        self._last: tuple[float, float | None] = (0.0, None)

    def limit(self, equity: float) -> float | None:
        """The tighter of the notional and the leverage cap (the notional one on a tie), None when both are off."""
        limit = self._max_notional
        if self._max_leverage is not None:
            by_leverage = self._max_leverage * equity if math.isfinite(equity) else 0.0
            limit = by_leverage if limit is None or by_leverage < limit else limit
        return limit

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        limit = self.limit(ctx.equity)
        self._last = (ctx.gross_exposure, limit)
        if limit is None:
            return ALLOW
        price = ctx.last_price
        if not valid_price(price):
            return self.deny("no_price", f"no valid price ({price})", request, ctx)
        others = max(ctx.gross_exposure - float(abs(ctx.position)) * price, 0.0)  # the book without this symbol
        room = max(limit - others, 0.0) / price  # in units of this symbol
        return self.allow_at_most("max_gross_exposure", f"gross exposure capped at {limit:.2f}", request,
                                  fit_entry(request, ctx, decimal_of(room), self.lot_size))

    def figures(self) -> dict[str, object]:
        gross, limit = self._last
        return {"value": gross, "limit": limit}


class FatFingerLayer(Layer):
    """Catches absurd orders: a quantity nobody meant, or a limit price far from the market.

    Judges every order because a limit price far from the market is wrong on
    an exit too; the notional cap applies to new exposure only (an exit is
    bounded by the position, which the position limit bounds).
    """

    name = "fat_finger"
    scope = Scope.EVERY_ORDER

    def __init__(self, cfg: FatFingerConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._max_notional = cfg.max_order_notional
        self._band = cfg.price_band
        self.last_notional: Decimal | None = None  # of the last entry judged

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        price = ctx.last_price
        if self._band is not None and request.limit_price is not None and not is_flatten(request, ctx):
            if not valid_price(price):
                return self.block("price_band", f"no valid last price ({price}) to judge the limit price")
            deviation = abs(float(request.limit_price) / price - 1.0)
            if not deviation <= self._band:
                return self.block("price_band", f"limit {request.limit_price} is {deviation:.2%} from last {price}, "
                                  f"band {self._band:.2%}")
        if self._max_notional is None or not ctx.increases_exposure(request):
            return ALLOW
        reference = request.limit_price
        if reference is None:
            if not valid_price(price):
                return self.deny("no_price", f"no valid price ({price})", request, ctx)
            reference = decimal_of(price)
        notional = self.last_notional = request.quantity * reference
        if notional <= self._max_notional:
            return ALLOW
        return self.deny("order_notional", f"order notional {notional:.2f} > {self._max_notional}", request, ctx)

    def figures(self) -> dict[str, object]:
        return {"value": self.last_notional, "limit": self._max_notional, "price_band": self._band}
