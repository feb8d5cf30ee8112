"""The risk governor: a trading-state machine and an ordered list of layers.

Every order request passes the layers in order. A layer answers ALLOW,
RESIZE (continue with a smaller quantity), BLOCK (drop this order) or HALT
(drop it and stop trading). The first BLOCK or HALT wins; resizes compose.
Nothing reaches the order manager unless the final verdict allows it.

Each layer declares its ``scope``: most judge only whether taking *new* risk
is wise (``Scope.ENTRIES``), a few guard every order (``Scope.EVERY_ORDER``:
the trading state, the latches, garbage guards, the equity limits that must
see every mark). The governor decides once per order whether it is an entry
and skips entries-only layers for exits, so no layer repeats that test and
no exit can be held hostage by an entry rule.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import ClassVar, Protocol

from brokers.base import OrderRequest
from brokers.errors import RiskStateError


class TradingState(enum.StrEnum):
    ACTIVE = "active"  # all orders may pass
    REDUCING = "reducing"  # only orders that shrink exposure
    HALTED = "halted"  # no orders (cancels only); needs an explicit resume
    PAUSED = "paused"  # manual stop; needs an explicit resume


# The state machine's edges: a transition not listed here raises ``RiskStateError``.
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


class Scope(enum.Enum):
    """Which orders a layer judges; the governor enforces it (see the module docstring)."""

    ENTRIES = "entries"  # only orders that increase exposure: entries, adds and flips
    EVERY_ORDER = "every_order"  # exits too


@dataclass(frozen=True, slots=True)
class Verdict:
    kind: VerdictKind
    layer: str = ""
    reason: str = ""  # machine-readable reason code, e.g. "max_position"
    message: str = ""
    quantity: Decimal | None = None  # the (possibly resized) quantity that may be sent

    @property
    def allowed(self) -> bool:
        return self.kind in (VerdictKind.ALLOW, VerdictKind.RESIZE)


ALLOW = Verdict(VerdictKind.ALLOW)


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
    # the venue's own word on its streams (``broker.feed_status()["connected"]``): False while its market-data
    # or order-update stream is down or reconnecting; None when the venue reports no connection (a replay)
    feed_connected: bool | None = None

    def reduces_exposure(self, request: OrderRequest) -> bool:
        """True when the order moves the position toward zero without flipping it."""
        position = self.position
        after = position + request.signed_quantity
        return abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))

    def increases_exposure(self, request: OrderRequest) -> bool:
        """Entries, adds and flips: any order with a positive quantity that is not a pure reduction."""
        return request.quantity > 0 and not self.reduces_exposure(request)


class RiskLayer(Protocol):
    """What the governor needs of a layer (``risk.layers.Layer`` is the implementation to extend)."""

    name: ClassVar[str]
    scope: ClassVar[Scope]

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        """Judge ``request``; called only for orders in the layer's ``scope``."""
        ...

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
        self.layers: tuple[RiskLayer, ...] = tuple(layers)  # fixed: the scopes below are read once, here
        self._scoped = tuple((layer, layer.scope is Scope.ENTRIES) for layer in self.layers)
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
        """Judge one request. Returns the final verdict with the quantity allowed.

        Whether the order is an entry is decided here, once, and again after a
        resize: cutting a flip to its closing part turns it into an exit, which
        the entries-only layers after it then let pass.
        """
        quantity = request.quantity
        entry = ctx.increases_exposure(request)
        resized_by: Verdict | None = None
        for layer, entries_only in self._scoped:
            if entries_only and not entry:
                continue
            verdict = layer.check(request, ctx)
            if verdict.kind is VerdictKind.ALLOW:
                continue
            self._count(verdict)
            if verdict.kind is VerdictKind.RESIZE:
                assert verdict.quantity is not None
                if verdict.quantity <= 0:
                    return block(verdict.layer, verdict.reason, verdict.message + " (resized to zero)")
                if verdict.quantity < quantity:
                    quantity = verdict.quantity
                    request = replace(request, quantity=quantity)
                    entry = ctx.increases_exposure(request)
                    resized_by = verdict
                continue
            if verdict.kind is VerdictKind.HALT and self._state is not TradingState.HALTED:
                self.transition(TradingState.HALTED, f"{verdict.layer}:{verdict.reason}")
            return verdict
        if resized_by is not None:
            return replace(resized_by, quantity=quantity)
        return Verdict(VerdictKind.ALLOW, quantity=quantity)

    def figures(self) -> dict[str, dict[str, object]]:
        return {layer.name: layer.figures() for layer in self.layers}

    def _count(self, verdict: Verdict) -> None:
        key = f"{verdict.layer}:{verdict.kind}:{verdict.reason}"
        self.counts[key] = self.counts.get(key, 0) + 1
