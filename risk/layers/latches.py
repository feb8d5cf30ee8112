"""Latches: a fill beyond its order or an unadopted reconciliation mismatch halts every order.

Both mean the books cannot be trusted, so not even a flatten passes until an
operator resumes.
"""

from __future__ import annotations

from decimal import Decimal

from brokers.base import OrderRequest
from risk.governor import ALLOW, RiskContext, Scope, TradingState, Verdict
from risk.layers.base import Hook, Layer


class _Latch(Layer):
    """A trip that halts every order until an operator resumes."""

    scope = Scope.EVERY_ORDER
    reason = ""

    def __init__(self, lot_size: Decimal = Decimal(1)) -> None:
        super().__init__(lot_size)
        self.tripped = False
        self.detail = ""

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        if self.tripped:
            return self.halt(self.reason, self.detail)
        return ALLOW

    def on_resume(self, ts: int) -> None:
        super().on_resume(ts)
        self.tripped, self.detail = False, ""

    def figures(self) -> dict[str, object]:
        return {"value": self.tripped, "limit": False, "detail": self.detail}

    def _trip(self, detail: str, ts: int) -> Verdict:
        self.tripped, self.detail = True, detail
        self._request_state(TradingState.HALTED, self.reason, ts, detail)
        return self.halt(self.reason, detail)


class FillGuardLayer(_Latch):
    """An overfill means an order was double-sent or the broker misreports: stop before it compounds."""

    name = "fill_guard"
    reason = "overfill"
    hooks = frozenset({Hook.FILL})

    def validate_fill(self, order_qty: Decimal, cumulative_filled: Decimal, *, ts: int = 0,
                      client_order_id: str = "") -> Verdict:
        if cumulative_filled <= order_qty:
            return ALLOW
        label = f"order {client_order_id} " if client_order_id else "order "
        return self._trip(f"{label}filled {cumulative_filled} of {order_qty}", ts)


class ReconciliationLayer(_Latch):
    """The reconciler's way to stop trading when broker and books disagree and it may not adopt."""

    name = "reconciliation"
    reason = "reconciliation_mismatch"
    hooks = frozenset({Hook.MISMATCH})

    def report_mismatch(self, detail: str, ts: int = 0) -> Verdict:
        return self._trip(detail, ts)
