"""The kill switch: the governor's trading state, enforced on every order."""

from __future__ import annotations

from decimal import Decimal

from brokers.base import OrderRequest
from risk.config import KillSwitchConfig
from risk.governor import ALLOW, RiskContext, Scope, TradingState, Verdict
from risk.layers.base import Layer, is_flatten


class KillSwitchLayer(Layer):
    """Enforces the trading state; first in line so a paused daemon does no other work.

    ACTIVE passes everything; PAUSED and HALTED block everything but a
    flatten-marked exit (when ``allow_flatten``); REDUCING passes exits and
    denies new exposure, keeping the closing part of a flip.
    """

    name = "kill_switch"
    scope = Scope.EVERY_ORDER

    def __init__(self, cfg: KillSwitchConfig, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self._allow_flatten = cfg.allow_flatten
        self._last_state: TradingState | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        state = self._last_state = ctx.state
        if state is TradingState.ACTIVE:
            return ALLOW
        if self._allow_flatten and is_flatten(request, ctx):
            return ALLOW
        if state is TradingState.PAUSED:
            return self.block("paused", "trading is paused")
        if state is TradingState.HALTED:
            return self.block("halted", "trading is halted until resumed")
        if not ctx.increases_exposure(request):
            return ALLOW
        return self.deny("reducing_only", "only exposure-reducing orders while REDUCING", request, ctx)

    def figures(self) -> dict[str, object]:
        state = self._last_state.value if self._last_state else None
        return {"value": state, "limit": TradingState.ACTIVE.value, "allow_flatten": self._allow_flatten}
