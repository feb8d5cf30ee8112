"""RiskHooks: the daemon's observations delivered to the layers that declared them, and their requests gathered."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal

from brokers.base import Fill
from risk.governor import ALLOW, RiskGovernor, RiskLayer, TradingState, Verdict, VerdictKind, halt
from risk.layers.base import SEVERITY, Hook, Layer, RiskEvent


class RiskHooks:
    """Calls each layer's declared hooks (``Layer.hooks``) and escalates the governor on their requests.

    Every layer must be a ``Layer``: the hooks, requests and events are its
    interface, and a layer that could not take them could not report a latch
    either, so anything else is refused when the hooks are built.
    """

    def __init__(self, layers: Iterable[RiskLayer]) -> None:
        self.layers: list[Layer] = [_observable(layer) for layer in layers]
        self._order_watchers = self._declaring(Hook.ORDER_SENT)
        self._fill_validators = self._declaring(Hook.FILL)
        self._trade_watchers = self._declaring(Hook.TRADE_CLOSED)
        self._equity_watchers = self._declaring(Hook.EQUITY)
        self._mismatch_reporters = self._declaring(Hook.MISMATCH)

    def order_sent(self, symbol: str, ts: int) -> None:
        for layer in self._order_watchers:
            layer.on_order_sent(symbol, ts)

    def fill(self, fill: Fill, order_quantity: Decimal, filled_quantity: Decimal) -> None:
        """A new fill of an order of ``order_quantity``, ``filled_quantity`` filled so far."""
        self.validate_fill(order_quantity, filled_quantity, ts=fill.ts, client_order_id=fill.client_order_id)

    def validate_fill(self, order_qty: Decimal, cumulative_filled: Decimal, *, ts: int = 0,
                      client_order_id: str = "") -> Verdict:
        """The last non-ALLOW verdict of the fill validators (an overfill's HALT), else ALLOW."""
        verdict = ALLOW
        for layer in self._fill_validators:
            result = layer.validate_fill(order_qty, cumulative_filled, ts=ts, client_order_id=client_order_id)
            if result.kind is not VerdictKind.ALLOW:
                verdict = result
        return verdict

    def trade_closed(self, symbol: str, pnl: float | Decimal, ts: int) -> None:
        for layer in self._trade_watchers:
            layer.on_trade_closed(symbol, pnl, ts)

    def equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> bool:
        """Feed one equity mark (every bar). True when an equity-watching layer now asks for a state or a flatten."""
        asks = False
        for layer in self._equity_watchers:
            layer.on_equity(ts, equity, day_start_equity, peak_equity)
            asks = asks or layer.requested_state is not None or layer.flatten_requested
        return asks

    def reconciliation_mismatch(self, detail: str, ts: int = 0) -> Verdict:
        """Report a mismatch the reconciler may not adopt; a HALT verdict even when no layer takes it."""
        verdict = halt("reconciliation", "reconciliation_mismatch", detail)
        for layer in self._mismatch_reporters:
            verdict = layer.report_mismatch(detail, ts)
        return verdict

    def resumed(self, ts: int) -> None:
        """An operator resumed trading: every layer forgets its requests and latches."""
        for layer in self.layers:
            layer.on_resume(ts)

    def requested_state(self) -> tuple[TradingState, str] | None:
        """The strictest state any layer asks for, with ``layer:reason`` (the first layer on a tie)."""
        best: tuple[TradingState, str] | None = None
        for layer in self.layers:
            state = layer.requested_state
            if state is None or (best is not None and SEVERITY[state] <= SEVERITY[best[0]]):
                continue
            best = (state, f"{layer.name}:{layer.requested_reason}")
        return best

    def apply(self, governor: RiskGovernor) -> TradingState | None:
        """Escalate the governor to the strictest requested state; never loosens it. Returns the new state."""
        requested = self.requested_state()
        if requested is None:
            return None
        state, reason = requested
        if SEVERITY[state] <= SEVERITY[governor.state]:
            return None
        governor.transition(state, reason)
        return state

    @property
    def flatten_requested(self) -> bool:
        return any(layer.flatten_requested for layer in self.layers)

    @property
    def rollback_to_gold(self) -> bool:
        return any(layer.rollback_to_gold for layer in self.layers)

    def _declaring(self, hook: Hook) -> list[Layer]:
        """The layers that declared ``hook``, in governor order."""
        return [layer for layer in self.layers if hook in layer.hooks]

    def drain_events(self) -> list[RiskEvent]:
        """Warnings and requests the layers recorded since the last drain, in layer order."""
        return [event for layer in self.layers for event in layer.drain_events()]


def _observable(layer: RiskLayer) -> Layer:
    if not isinstance(layer, Layer):
        raise TypeError(f"risk layer {layer.name!r} is a {type(layer).__name__}, not a risk.layers.Layer")
    return layer
