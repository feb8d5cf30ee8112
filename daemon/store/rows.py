"""The store's typed rows: what callers hand to the store and what its reads give back.

One dataclass per kind of record, with the fields callers think in (Decimals,
enums, tuples of floats). How each becomes SQL parameters (decimal text,
JSON) is the store's business (``daemon.store.tables``), so no caller reads or
builds a row by column position.

The rows a bar produces (decisions, equity snapshots, rejections, risk
events) are built on every bar of every backtest, so they are plain slotted
dataclasses: ``frozen`` would cost a ``object.__setattr__`` call per field
(a DecisionRow 3.7 µs instead of 1.4 µs). Nothing keeps them after the store
has encoded them.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol

from brokers.base import Fill, OrderStatus


@dataclass(slots=True)
class DecisionRow:
    """One strategy decision and what became of it (verdict, order).

    ``id`` is None unless the caller already took one (``Store.next_decision_id``)
    to tie an order to it. ``probabilities`` and ``extras`` are kept as they are
    and written as JSON by the store.
    """

    symbol: str
    ts: int
    action: str
    reason: str = ""
    id: int | None = None
    confidence: float | None = None
    probabilities: tuple[float, ...] | None = None
    verdict: str | None = None
    verdict_layer: str | None = None
    verdict_reason: str | None = None
    order_quantity: Decimal | None = None
    client_order_id: str | None = None
    extras: dict[str, Any] | None = None

    @property
    def plain(self) -> bool:
        """Nothing but an action and a reason: a repeat of the previous one adds only a timestamp."""
        return (
            self.id is None and self.confidence is None and self.probabilities is None and self.verdict is None
            and self.verdict_layer is None and self.verdict_reason is None and self.order_quantity is None
            and self.client_order_id is None and not self.extras
        )


@dataclass(slots=True)
class EquitySnapshot:
    """``cash`` and ``realized_pnl`` as decimal text (the portfolio keeps that text current)."""

    ts: int
    equity: float
    cash: str
    realized_pnl: str
    unrealized_pnl: float


@dataclass(slots=True)
class BarRejection:
    ts: int | None
    symbol: str
    reason: str
    detail: str = ""


@dataclass(slots=True)
class RiskEvent:
    ts: int
    symbol: str | None
    layer: str
    kind: str
    reason: str
    message: str = ""


class ClosedTradeLike(Protocol):
    """A finished round trip (``daemon.portfolio.ClosedTrade``), as the trades table records it."""

    @property
    def symbol(self) -> str: ...
    @property
    def direction(self) -> int: ...
    @property
    def quantity(self) -> Decimal: ...
    @property
    def entry_ts(self) -> int: ...
    @property
    def exit_ts(self) -> int: ...
    @property
    def entry_price(self) -> Decimal: ...
    @property
    def exit_price(self) -> Decimal: ...
    @property
    def fees(self) -> Decimal: ...
    @property
    def pnl(self) -> Decimal: ...
    @property
    def entry_reason(self) -> str: ...
    @property
    def exit_reason(self) -> str: ...


@dataclass(frozen=True, slots=True)
class JournaledOrder:
    """An order as the journal last recorded it."""

    client_order_id: str
    symbol: str
    side: str
    quantity: Decimal
    status: OrderStatus
    filled_quantity: Decimal
    average_price: Decimal | None
    broker_order_id: str | None
    created_ts: int
    reason: str


@dataclass(frozen=True, slots=True)
class BookedFill:
    """A stored fill with the reason of the order it filled (the books replay both)."""

    fill: Fill
    order_reason: str


@dataclass(frozen=True, slots=True)
class ModelEntry:
    """A model file the registry knows, by the SHA-256 its file was checked against."""

    sha256: str
    path: Path
    feature_hash: str
    gold: bool
    production: bool
    registered_ts: int


@dataclass(frozen=True, slots=True)
class ModelEvaluation:
    """One recorded judgement of a model: a validation or a shadow replay, passed or not, and its figures."""

    sha256: str
    kind: str  # "validation" | "shadow"
    ts: int
    passed: bool
    reference_sha256: str | None
    summary: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Promotion:
    """A change of the production model: who made ``sha256`` production, instead of what, when and why."""

    id: int
    ts: int
    action: str  # "promote" | "rollback" | "auto_rollback"
    sha256: str
    previous_sha256: str | None
    forced: bool
    reason: str
    who: str
    evidence: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ReconciliationRecord:
    """The audit of one reconciliation run: what differed and what was done."""

    run_id: int
    ts: int
    reason: str
    status: str
    action: str
    differences: tuple[dict[str, str], ...]
    detail: str



@dataclass(frozen=True, slots=True)
class OutboxAlert:
    """An operator alert in the outbox: what to say, and which chats already have it."""

    id: int
    dedup_key: str
    kind: str
    text: str
    created_at: float
    attempts: int
    delivered_to: frozenset[int]


@dataclass(frozen=True, slots=True)
class StoredTrade:
    """A closed trade as the store holds it (what /trades and alerts quote)."""

    symbol: str
    direction: int
    quantity: Decimal
    exit_ts: int
    entry_price: Decimal
    exit_price: Decimal
    pnl: Decimal
