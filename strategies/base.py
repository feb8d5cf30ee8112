"""What a strategy sees and what it says.

A strategy turns bars (and the daemon's view of its own position) into a
``Decision``. It never sizes or sends orders: sizing and the risk governor do
that, so every strategy, rule-based or learned, is governed the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Protocol

from brokers.base import Bar


class Action(enum.IntEnum):
    """Per-symbol discrete actions. The integer values are the policy's action map."""

    HOLD = 0
    BUY = 1
    SELL = 2
    CLOSE = 3


ACTION_MAP: tuple[str, ...] = tuple(a.name for a in Action)


@dataclass(frozen=True, slots=True)
class PositionView:
    """The daemon's current position in one symbol, as a strategy may see it."""

    quantity: Decimal = Decimal(0)
    average_price: float = 0.0
    bars_held: int = 0
    peak_unrealized: float = 0.0

    @property
    def side(self) -> int:
        return (self.quantity > 0) - (self.quantity < 0)


FLAT = PositionView()


@dataclass(slots=True)
class Decision:
    """One decision on one bar: the action trace's unit of record.

    Read-only by convention, not frozen: one is built on every bar past
    warm-up, and a frozen dataclass's ``__init__`` (``object.__setattr__``
    per field) costs about 1 µs against 0.25 µs for a plain one.
    """

    symbol: str
    ts: int
    action: Action
    confidence: float | None = None
    probabilities: tuple[float, ...] | None = None
    reason: str = ""
    extras: dict[str, object] = field(default_factory=dict)


class Strategy(Protocol):
    """A decision maker fed one bar at a time.

    ``decide`` receives every bar that decides on the same timestamp at once
    (one per symbol) so that learned policies can batch them. It returns one
    decision per bar that is past warm-up; bars still warming up get none.
    ``reset(symbol)`` marks an episode start (first bar, or after a data gap).
    ``model_sha256`` names the trained model a strategy runs (the SHA-256 of
    its file), None for a rule-based strategy: the daemon compares it with
    the registered models (gold-model rollback) without knowing the kind.
    """

    name: str
    warmup_bars: int

    @property
    def model_sha256(self) -> str | None: ...

    def decide(self, bars: Sequence[Bar], positions: Sequence[PositionView]) -> list[Decision]: ...

    def reset(self, symbol: str) -> None: ...

    def describe(self) -> dict[str, object]: ...
