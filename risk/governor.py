"""The risk governor: a trading-state machine and an ordered list of layers.

Every order request passes every layer in order. A layer answers ALLOW,
RESIZE (continue with a smaller quantity), BLOCK (drop this order) or HALT
(drop it and stop trading). The first BLOCK or HALT wins; resizes compose.
Nothing reaches the order manager unless the final verdict allows it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Protocol

from brokers.base import OrderRequest, Side
from brokers.errors import RiskStateError

_ZERO = Decimal(0)
_BUY = Side.BUY  # bound once: in Python 3.11 ``Side.BUY`` is a descriptor lookup (~150 ns) on every use


class TradingState(enum.StrEnum):
    ACTIVE = "active"  # all orders may pass
    REDUCING = "reducing"  # only orders that shrink exposure
    HALTED = "halted"  # no orders (cancels only); needs an explicit resume
    PAUSED = "paused"  # manual stop; needs an explicit resume


_ALLOWED: dict[TradingState, frozenset[TradingState]] = {
    TradingState.ACTIVE: frozenset({TradingState.REDUCING, TradingState.HALTED, TradingState.PAUSED}),
    TradingState.REDUCING: frozenset({TradingState.ACTIVE, TradingState.HALTED, TradingState.PAUSED}),
    TradingState.PAUSED: frozenset({TradingState.ACTIVE, TradingState.HALTED}),
    TradingState.HALTED: frozenset({TradingState.ACTIVE, TradingState.PAUSED}),
}


class VerdictKind(enum.StrEnum):
    ALLOW = "allow"
    RESIZE = "resize"
    BLOCK = "block"
    HALT = "halt"


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    layer: str = ""
    reason: str = ""  # machine-readable reason code, e.g. "max_position"
    message: str = ""
    quantity: Decimal | None = None  # the (possibly resized) quantity that may be sent

    def __init__(self, kind: VerdictKind, layer: str = "", reason: str = "", message: str = "",
                 quantity: Decimal | None = None) -> None:
        # What the generated frozen __init__ does, at half the cost (see ``_slot_setters``): one per order.
        _kind, _layer, _reason, _message, _quantity = _VERDICT_SETTERS
        _kind(self, kind)
        _layer(self, layer)
        _reason(self, reason)
        _message(self, message)
        _quantity(self, quantity)

    @property
    def allowed(self) -> bool:
        return self.kind in (VerdictKind.ALLOW, VerdictKind.RESIZE)


def _slot_setters(cls: type, names: str) -> tuple[Callable[[object, object], None], ...]:
    """The slot descriptors' setters of a frozen slotted dataclass, for its hand-written ``__init__``.

    The generated frozen ``__init__`` sets each field through ``object.__setattr__`` (~150 ns a field);
    the descriptor's own ``__set__`` stores the same value in the same slot at about half that. The
    instance stays frozen: ``__setattr__`` still refuses every assignment after construction.
    """
    return tuple(cls.__dict__[name].__set__ for name in names.split())


_VERDICT_SETTERS = _slot_setters(Verdict, "kind layer reason message quantity")

ALLOW = Verdict(VerdictKind.ALLOW)

# Bound once for the per-order loop, like ``_BUY``.
_ALLOW_KIND = VerdictKind.ALLOW
_RESIZE_KIND = VerdictKind.RESIZE
_HALT_KIND = VerdictKind.HALT
_HALTED = TradingState.HALTED


@dataclass(frozen=True, slots=True)
class RiskContext:
    """What the layers know when they judge one order request."""

    state: TradingState
    ts: int
    position: Decimal  # signed position in the request's symbol
    last_price: float
    equity: float
    day_start_equity: float
    peak_equity: float
    gross_exposure: float = 0.0
    confidence: float | None = None
    extras: dict[str, object] = field(default_factory=dict)

    def __init__(self, state: TradingState, ts: int, position: Decimal, last_price: float, equity: float,
                 day_start_equity: float, peak_equity: float, gross_exposure: float = 0.0,
                 confidence: float | None = None, extras: dict[str, object] | None = None) -> None:
        # Built for every order; the generated frozen __init__ costs twice this (see ``_slot_setters``).
        # ``extras=None`` means the field's default, a new empty dict.
        _state, _ts, _position, _last_price, _equity, _day_start, _peak, _gross, _confidence, _extras = _CONTEXT_SETTERS
        _state(self, state)
        _ts(self, ts)
        _position(self, position)
        _last_price(self, last_price)
        _equity(self, equity)
        _day_start(self, day_start_equity)
        _peak(self, peak_equity)
        _gross(self, gross_exposure)
        _confidence(self, confidence)
        _extras(self, {} if extras is None else extras)

    def reduces_exposure(self, request: OrderRequest) -> bool:
        """True when the order moves the position toward zero without flipping it.

        Equivalent to ``|position + signed qty| < |position|`` without crossing zero:
        the order must trade against a non-zero position and be no larger than it.
        Written as sign tests because every layer asks this on every order.
        """
        position = self.position
        if not position:
            return False
        quantity = request.quantity
        if (request.side is _BUY) == (position > _ZERO):
            # same side as the position: only a negative quantity (malformed, but defined) moves toward zero
            return quantity < _ZERO and -quantity <= abs(position)
        return _ZERO < quantity <= abs(position)


_CONTEXT_SETTERS = _slot_setters(
    RiskContext, "state ts position last_price equity day_start_equity peak_equity gross_exposure confidence extras"
)


class RiskLayer(Protocol):
    name: str

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict: ...

    def figures(self) -> dict[str, object]: ...


def block(layer: str, reason: str, message: str) -> Verdict:
    return Verdict(VerdictKind.BLOCK, layer, reason, message)


def halt(layer: str, reason: str, message: str) -> Verdict:
    return Verdict(VerdictKind.HALT, layer, reason, message)


def resize(layer: str, reason: str, message: str, quantity: Decimal) -> Verdict:
    return Verdict(VerdictKind.RESIZE, layer, reason, message, quantity)


StateListener = Callable[[TradingState, TradingState, str], None]


class RiskGovernor:
    """Owns the trading state and runs the layers over each order request."""

    def __init__(self, layers: Sequence[RiskLayer], state: TradingState = TradingState.ACTIVE) -> None:
        self.layers: list[RiskLayer] = list(layers)
        self._state = state
        self._listeners: list[StateListener] = []
        self.counts: dict[str, int] = {}

    @property
    def state(self) -> TradingState:
        return self._state

    def on_transition(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def transition(self, to: TradingState, reason: str) -> bool:
        """Move to ``to``; returns False when already there, raises when forbidden."""
        if to is self._state:
            return False
        if to not in _ALLOWED[self._state]:
            raise RiskStateError(f"trading state {self._state} -> {to} is not allowed ({reason})")
        previous, self._state = self._state, to
        for listener in self._listeners:
            listener(previous, to, reason)
        return True

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        """Judge one request. Returns the final verdict with the quantity allowed."""
        quantity = request.quantity
        resized_by: Verdict | None = None
        for layer in self.layers:
            verdict = layer.check(request, ctx)
            if verdict is ALLOW:  # what nearly every layer answers; the kind test below covers other ALLOWs
                continue
            kind = verdict.kind
            if kind is _ALLOW_KIND:
                continue
            self._count(verdict)
            if kind is _RESIZE_KIND:
                assert verdict.quantity is not None
                if verdict.quantity <= _ZERO:
                    return block(verdict.layer, verdict.reason, verdict.message + " (resized to zero)")
                if verdict.quantity < quantity:
                    quantity = verdict.quantity
                    request = replace(request, quantity=quantity)
                    resized_by = verdict
                continue
            if kind is _HALT_KIND and self._state is not _HALTED:
                self.transition(_HALTED, f"{verdict.layer}:{verdict.reason}")
            return verdict
        if resized_by is not None:
            return replace(resized_by, quantity=quantity)
        return Verdict(_ALLOW_KIND, "", "", "", quantity)

    def figures(self) -> dict[str, dict[str, object]]:
        return {layer.name: layer.figures() for layer in self.layers}

    def _count(self, verdict: Verdict) -> None:
        key = f"{verdict.layer}:{verdict.kind}:{verdict.reason}"
        self.counts[key] = self.counts.get(key, 0) + 1
