"""What every risk layer shares: its scope and hooks, the ways to deny an order, requests and events.

Principles every layer follows
------------------------------
* A layer declares its ``scope`` and the governor enforces it: entries-only
  layers (window, drip, stale data, broker connection, confidence, cooldown, trade counts,
  position and gross limits, volatility, loss streak) never see an exit. A
  layer that refuses an order which *flips* the position cuts it to the
  closing part instead of blocking it (``deny``), so a strategy's exit is
  never lost with its refused entry.
* Every-order layers are the state guards (kill switch, fill and
  reconciliation latches), the garbage guards (submit rate, price band) and
  the equity limits (daily loss, drawdown), which assess every order's equity
  but deny exits only at the drawdown halt tier.
* An order marked ``ctx.extras[FLATTEN] is True`` that shrinks a position is
  an emergency exit: it passes every layer but the fill and reconciliation
  latches (whose positions are not to be trusted). That is how a drawdown
  halt or an operator's /flatten gets out of the market while HALTED.
* Time is ``ctx.ts`` and the ``ts`` given to the hooks, never the wall clock,
  so a backtest replays every verdict exactly. Days are UTC days.
* A layer that learns from what happens after its verdicts lists the
  ``Hook`` events it takes in ``hooks``; ``RiskHooks`` calls exactly those.
  The list is checked against the methods the layer overrides when the class
  is defined, so a hook cannot be implemented and silently never called.
* Layers never move the governor themselves: they *request* a state
  (``requested_state``), a flatten or a rollback, and ``RiskHooks.apply``
  escalates the governor to the strictest request.
"""

from __future__ import annotations

import abc
import enum
import math
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, ClassVar

from brokers.base import OrderRequest
from risk.governor import ALLOW, RiskContext, Scope, TradingState, Verdict, block, halt, resize

# Keys of RiskContext.extras the layers read.
BAR_TS = "bar_ts"  # int: close time of the bar behind the decision
VOLATILITY_Z = "volatility_z"  # float: the regime detector's volatility z-score
FLATTEN = "flatten"  # True on emergency exits (operator /flatten, drawdown halt)

# How strict a state is, for escalation: a layer's request never loosens the state.
SEVERITY: dict[TradingState, int] = {
    TradingState.ACTIVE: 0,
    TradingState.REDUCING: 1,
    TradingState.PAUSED: 2,
    TradingState.HALTED: 3,
}

_ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """Something the daemon should store and alert that is not an order verdict (a warning, a request)."""

    ts: int
    layer: str
    reason: str
    message: str
    level: str = "warning"  # "warning" | "critical"


class Hook(enum.Enum):
    """The events a layer may take; each value is the ``Layer`` method ``RiskHooks`` calls for it."""

    ORDER_SENT = "on_order_sent"  # an order was handed to the broker (cooldown, trade counts, submit rate)
    FILL = "validate_fill"  # a new fill, with the order's requested and cumulative quantity (fill guard)
    TRADE_CLOSED = "on_trade_closed"  # a round trip closed, P&L net of fees (loss streak)
    EQUITY = "on_equity"  # an equity mark, every bar (daily loss, drawdown), so limits trip while holding
    MISMATCH = "report_mismatch"  # the reconciler found a difference it may not adopt (reconciliation)


# ---------------------------------------------------------------------------- order arithmetic


def is_flatten(request: OrderRequest, ctx: RiskContext) -> bool:
    """An emergency exit: marked ``FLATTEN`` and shrinking the position."""
    return ctx.extras.get(FLATTEN) is True and ctx.reduces_exposure(request)


def valid_price(price: float) -> bool:
    return math.isfinite(price) and price > 0


def decimal_of(value: float) -> Decimal:
    """``value`` as the Decimal of its shortest repr (1.1 -> Decimal('1.1'), not the binary expansion)."""
    return Decimal(repr(value))


def floor_lot(quantity: Decimal, lot: Decimal) -> Decimal:
    """``quantity`` rounded down to whole lots; nothing for a non-positive quantity."""
    if quantity <= 0:
        return _ZERO
    return (quantity / lot).to_integral_value(rounding=ROUND_FLOOR) * lot


def position_after(request: OrderRequest, ctx: RiskContext) -> Decimal:
    return ctx.position + request.signed_quantity


def fit_entry(request: OrderRequest, ctx: RiskContext, max_abs_after: Decimal, lot: Decimal) -> Decimal:
    """The largest quantity of an exposure-increasing order that leaves |position| <= max_abs_after.

    The closing part of a flip is always kept; only new exposure is cut, in
    whole lots, so a resize never creates an odd lot the broker would reject.
    """
    position = ctx.position
    quantity = request.quantity
    after = position_after(request, ctx)
    cap = max(max_abs_after, _ZERO)
    if position != 0 and after != 0 and (after > 0) != (position > 0):
        return quantity if abs(after) <= cap else abs(position) + floor_lot(cap, lot)
    room = cap - abs(position)
    return quantity if quantity <= room else floor_lot(room, lot)


# ---------------------------------------------------------------------------- the base class


class Layer(abc.ABC):
    """A risk layer: a ``check`` for the orders in its ``scope``, figures, and the hooks it declares.

    Subclasses set ``name`` (the layer's name in verdicts, events and
    figures), ``scope`` and, when they learn from events, ``hooks``.
    """

    name: ClassVar[str]
    scope: ClassVar[Scope]
    hooks: ClassVar[frozenset[Hook]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for hook in Hook:
            overridden = getattr(cls, hook.value) is not getattr(Layer, hook.value)
            if overridden != (hook in cls.hooks):
                raise TypeError(f"{cls.__name__}: {hook.value} is {'' if overridden else 'not '}implemented "
                                f"but {hook.name} is {'not ' if overridden else ''}in its hooks")

    def __init__(self, lot_size: Decimal = Decimal(1)) -> None:
        self.lot_size = lot_size
        self.requested_state: TradingState | None = None
        self.requested_reason = ""
        self.flatten_requested = False
        self.rollback_to_gold = False
        self._events: list[RiskEvent] = []

    @abc.abstractmethod
    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        """Judge ``request``; the governor calls it only for orders in ``scope``."""

    def figures(self) -> dict[str, object]:
        """What the layer last measured and its limit, for the status view."""
        return {}

    # -------------------------------------------------------------- hooks (called only when declared)

    def on_order_sent(self, symbol: str, ts: int) -> None:
        return None

    def validate_fill(self, order_qty: Decimal, cumulative_filled: Decimal, *, ts: int = 0,
                      client_order_id: str = "") -> Verdict:
        return ALLOW

    def on_trade_closed(self, symbol: str, pnl: float | Decimal, ts: int) -> None:
        return None

    def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None:
        return None

    def report_mismatch(self, detail: str, ts: int = 0) -> Verdict:
        return ALLOW

    # -------------------------------------------------------------- requests and events (every layer)

    def on_resume(self, ts: int) -> None:
        """An operator resumed trading: requests are forgotten (subclasses clear their latches too)."""
        self.requested_state = None
        self.requested_reason = ""
        self.flatten_requested = False
        self.rollback_to_gold = False

    def drain_events(self) -> list[RiskEvent]:
        events, self._events = self._events, []
        return events

    def _request_state(self, state: TradingState, reason: str, ts: int, message: str) -> None:
        """Ask for a state once, with a critical event; a weaker request never replaces a stricter one."""
        current = self.requested_state
        if current is not None and SEVERITY[current] >= SEVERITY[state]:
            return
        self.requested_state, self.requested_reason = state, reason
        self._emit(ts, reason, message, "critical")

    def _emit(self, ts: int, reason: str, message: str, level: str = "warning") -> None:
        self._events.append(RiskEvent(ts, self.name, reason, message, level))

    # -------------------------------------------------------------- verdicts

    def block(self, reason: str, message: str) -> Verdict:
        return block(self.name, reason, message)

    def halt(self, reason: str, message: str) -> Verdict:
        return halt(self.name, reason, message)

    def deny(self, reason: str, message: str, request: OrderRequest, ctx: RiskContext) -> Verdict:
        """Refuse an order's new exposure: block an entry or add, cut a flip to its closing part."""
        return self.allow_at_most(reason, message, request, fit_entry(request, ctx, _ZERO, self.lot_size))

    def scale(self, reason: str, message: str, request: OrderRequest, ctx: RiskContext, factor: float) -> Verdict:
        """Scale the position an entry aims at (not the order), so repeated orders cannot creep past it."""
        target = abs(position_after(request, ctx))
        return self.allow_at_most(reason, message, request,
                                  fit_entry(request, ctx, target * decimal_of(factor), self.lot_size))

    def allow_at_most(self, reason: str, message: str, request: OrderRequest, allowed: Decimal) -> Verdict:
        """ALLOW when ``allowed`` covers the order, else RESIZE to it, or BLOCK when nothing is allowed."""
        if allowed >= request.quantity:
            return ALLOW
        if allowed <= 0:
            return block(self.name, reason, message)
        return resize(self.name, reason, message, allowed)
