"""The simulated broker's memory (``SimState``) and how it lives in a file (``StateFile``).

``StateFile`` makes the sim an external party that survives daemon restarts
at a cost that does not grow with its history: a snapshot written atomically,
plus an append-only journal of deltas (one JSON line per order event). Every
delta is written before the broker answers the call that caused it, so what
a restarted broker remembers is exactly what it had acknowledged. A line
torn by a kill mid-write is a call that never returned: it is dropped on load.
The journal is folded into a new snapshot every ``compact_every`` lines and on
load; the snapshot's generation number tells which journal lines still apply,
so a kill between writing the new snapshot and emptying the journal cannot
apply a delta twice.
"""

from __future__ import annotations

import json
import os
import pathlib
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import IO, Any

from brokers.base import ZERO, Fill, OrderStatus, OrderType, Position, Side, TimeInForce
from brokers.errors import DataError

STATE_VERSION = 2
_READABLE_VERSIONS = (1, 2)  # version 1 had no submit log


@dataclass(slots=True)
class SimOrder:
    """One order as the simulated exchange remembers it (cumulative fill, not per-fill detail)."""

    client_order_id: str
    broker_order_id: str
    symbol: str
    side: Side
    quantity: Decimal
    order_type: OrderType
    limit_price: Decimal | None
    time_in_force: TimeInForce
    submitted_ts: int
    updated_ts: int
    status: OrderStatus = OrderStatus.ACCEPTED
    filled_quantity: Decimal = ZERO
    average_price: Decimal | None = None
    fill_count: int = 0
    message: str = ""

    @property
    def remaining(self) -> Decimal:
        return self.quantity - self.filled_quantity


@dataclass(slots=True)
class SimState:
    """Everything the simulated broker knows; ``to_json``/``from_json`` round-trip it exactly.

    ``feed_position`` and ``feed_last_ts`` tie the state to a point in the bar
    sequence, so a restored broker resumes where it stopped and can tell when it
    is given a different data set.
    """

    cash: Decimal
    currency: str = "USD"
    # Part of every broker order id (and so fill id): two accounts never share ids, the way a
    # real broker's ids never repeat, even when a fresh account starts its sequence at 1 again.
    account_id: str = ""
    clock_ts: int = 0
    order_seq: int = 0
    feed_position: int = 0
    feed_last_ts: int | None = None
    orders: dict[str, SimOrder] = field(default_factory=dict)
    fills: list[Fill] = field(default_factory=list)
    positions: dict[str, Position] = field(default_factory=dict)
    last_prices: dict[str, Decimal] = field(default_factory=dict)
    last_bar_ts: dict[str, int] = field(default_factory=dict)
    # Every client order id ever given to ``submit``, accepted or refused, in arrival order:
    # the broker-side evidence that no order was sent twice.
    submits: list[str] = field(default_factory=list)

    def to_json(self, *, compact: bool = False) -> str:
        """Serialise exactly; ``compact`` drops the indentation (json's C encoder only runs without indent)."""
        doc = self.to_doc()
        if compact:
            return json.dumps(doc, separators=(",", ":"))
        return json.dumps(doc, indent=1)

    def to_doc(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "cash": str(self.cash),
            "currency": self.currency,
            "account_id": self.account_id,
            "clock_ts": self.clock_ts,
            "order_seq": self.order_seq,
            "feed_position": self.feed_position,
            "feed_last_ts": self.feed_last_ts,
            "orders": [_order_to_dict(o) for o in self.orders.values()],
            "fills": [_fill_to_dict(f) for f in self.fills],
            "positions": {s: [str(p.quantity), str(p.average_price)] for s, p in self.positions.items()},
            "last_prices": {s: str(p) for s, p in self.last_prices.items()},
            "last_bar_ts": dict(self.last_bar_ts),
            "submits": list(self.submits),
        }

    @classmethod
    def from_json(cls, text: str) -> SimState:
        """Parse ``to_json`` output; any malformation is a ``DataError`` (never a half-loaded state)."""
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise DataError(f"malformed sim state: {type(exc).__name__}: {exc}") from exc
        return cls.from_doc(doc)

    @classmethod
    def from_doc(cls, doc: Any) -> SimState:
        try:
            if doc.get("version") not in _READABLE_VERSIONS:
                raise DataError(f"unsupported sim state version {doc.get('version')!r} (expected {STATE_VERSION})")
            orders = [_order_from_dict(d) for d in doc["orders"]]
            return cls(
                cash=Decimal(doc["cash"]),
                currency=str(doc["currency"]),
                account_id=str(doc.get("account_id", "")),
                clock_ts=int(doc["clock_ts"]),
                order_seq=int(doc["order_seq"]),
                feed_position=int(doc["feed_position"]),
                feed_last_ts=None if doc["feed_last_ts"] is None else int(doc["feed_last_ts"]),
                orders={o.client_order_id: o for o in orders},
                fills=[_fill_from_dict(d) for d in doc["fills"]],
                positions={s: Position(s, Decimal(q), Decimal(avg)) for s, (q, avg) in doc["positions"].items()},
                last_prices={s: Decimal(p) for s, p in doc["last_prices"].items()},
                last_bar_ts={s: int(t) for s, t in doc["last_bar_ts"].items()},
                submits=[str(c) for c in doc.get("submits", [])],
            )
        except DataError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
            raise DataError(f"malformed sim state: {type(exc).__name__}: {exc}") from exc


@dataclass(slots=True)
class Delta:
    """What changed since the last write: dirty orders by id, and where the new fills and submits start."""

    orders: set[str] = field(default_factory=set)
    fills_from: int = 0
    submits_from: int = 0


class StateFile:
    """Snapshot + journal persistence for one ``SimState`` (see the module docstring)."""

    def __init__(self, path: str | pathlib.Path, *, fsync: bool = True, compact_every: int = 512) -> None:
        self.path = pathlib.Path(path)
        self.journal_path = self.path.with_name(self.path.name + ".journal")
        self.fsync = fsync
        self.compact_every = max(1, compact_every)
        self.generation = 0
        self.lines = 0
        self.writes = 0
        self._journal: IO[str] | None = None

    def exists(self) -> bool:
        return self.path.exists()

    def load(self) -> SimState:
        """The snapshot with every complete journal line of its generation applied."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{self.path}: cannot read sim state: {exc}") from exc
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise DataError(f"{self.path}: malformed sim state: {exc}") from exc
        try:
            state = SimState.from_doc(doc)
            self.generation = int(doc.get("generation", 0))
            for number, delta in self._journal_lines():
                try:
                    apply_delta(state, delta)
                except DataError as exc:
                    raise DataError(f"journal {self.journal_path.name} line {number}: {exc}") from exc
        except DataError as exc:
            raise DataError(f"{self.path}: {exc}") from exc
        return state

    def snapshot(self, state: SimState) -> None:
        """Fold everything into a new snapshot and start an empty journal."""
        self.close()
        doc = state.to_doc()
        doc["generation"] = self.generation + 1
        atomic_write(self.path, json.dumps(doc, separators=(",", ":")), fsync=self.fsync)
        self.generation += 1
        self._journal = open(self.journal_path, "w", encoding="utf-8")  # noqa: SIM115 - kept open for appends
        self.lines = 0
        self.writes += 1

    def append(self, state: SimState, delta: Delta) -> None:
        """Write one delta line, or a new snapshot when the journal is long (or not open yet)."""
        if self._journal is None or self.lines >= self.compact_every:
            self.snapshot(state)
            return
        doc = {
            "gen": self.generation,
            "cash": str(state.cash),
            "clock_ts": state.clock_ts,
            "order_seq": state.order_seq,
            "feed_position": state.feed_position,
            "feed_last_ts": state.feed_last_ts,
            "positions": {s: [str(p.quantity), str(p.average_price)] for s, p in state.positions.items()},
            "last_prices": {s: str(p) for s, p in state.last_prices.items()},
            "last_bar_ts": dict(state.last_bar_ts),
            "orders": [_order_to_dict(state.orders[cid]) for cid in sorted(delta.orders) if cid in state.orders],
            "fills": [_fill_to_dict(f) for f in state.fills[delta.fills_from:]],
            "submits": state.submits[delta.submits_from:],
        }
        journal = self._journal
        journal.write(json.dumps(doc, separators=(",", ":")) + "\n")
        journal.flush()
        if self.fsync:
            os.fsync(journal.fileno())
        self.lines += 1
        self.writes += 1

    def close(self) -> None:
        if self._journal is not None:
            self._journal.close()
            self._journal = None

    def _journal_lines(self) -> list[tuple[int, dict[str, Any]]]:
        try:
            text = self.journal_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise DataError(f"cannot read sim journal: {exc}") from exc
        raw = text.split("\n")
        out = []
        for number, line in enumerate(raw, start=1):
            if not line:
                continue
            last = number == len(raw)  # no newline after it: the write was cut short
            try:
                doc = json.loads(line)
            except ValueError as exc:
                if last:
                    break
                raise DataError(f"malformed sim journal line {number}: {exc}") from exc
            if last:
                break
            if doc.get("gen") == self.generation:
                out.append((number, doc))
        return out


def apply_delta(state: SimState, doc: dict[str, Any]) -> None:
    """Replay one journal line onto ``state`` (a DataError if it is malformed)."""
    try:
        state.cash = Decimal(doc["cash"])
        state.clock_ts = int(doc["clock_ts"])
        state.order_seq = int(doc["order_seq"])
        state.feed_position = int(doc["feed_position"])
        state.feed_last_ts = None if doc["feed_last_ts"] is None else int(doc["feed_last_ts"])
        state.positions = {s: Position(s, Decimal(q), Decimal(a)) for s, (q, a) in doc["positions"].items()}
        state.last_prices = {s: Decimal(p) for s, p in doc["last_prices"].items()}
        state.last_bar_ts = {s: int(t) for s, t in doc["last_bar_ts"].items()}
        for d in doc["orders"]:
            order = _order_from_dict(d)
            state.orders[order.client_order_id] = order
        state.fills.extend(_fill_from_dict(d) for d in doc["fills"])
        state.submits.extend(str(c) for c in doc["submits"])
    except (ValueError, KeyError, TypeError, AttributeError, InvalidOperation) as exc:
        raise DataError(f"malformed sim journal delta: {type(exc).__name__}: {exc}") from exc


def atomic_write(path: pathlib.Path, text: str, *, fsync: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        pathlib.Path(tmp_name).unlink(missing_ok=True)
        raise
    if not fsync:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # make the rename itself durable
    finally:
        os.close(dir_fd)


def _order_to_dict(order: SimOrder) -> dict[str, Any]:
    return {
        "client_order_id": order.client_order_id,
        "broker_order_id": order.broker_order_id,
        "symbol": order.symbol,
        "side": order.side.value,
        "quantity": str(order.quantity),
        "order_type": order.order_type.value,
        "limit_price": None if order.limit_price is None else str(order.limit_price),
        "time_in_force": order.time_in_force.value,
        "submitted_ts": order.submitted_ts,
        "updated_ts": order.updated_ts,
        "status": order.status.value,
        "filled_quantity": str(order.filled_quantity),
        "average_price": None if order.average_price is None else str(order.average_price),
        "fill_count": order.fill_count,
        "message": order.message,
    }


def _order_from_dict(d: dict[str, Any]) -> SimOrder:
    return SimOrder(
        client_order_id=str(d["client_order_id"]),
        broker_order_id=str(d["broker_order_id"]),
        symbol=str(d["symbol"]),
        side=Side(d["side"]),
        quantity=Decimal(d["quantity"]),
        order_type=OrderType(d["order_type"]),
        limit_price=None if d["limit_price"] is None else Decimal(d["limit_price"]),
        time_in_force=TimeInForce(d["time_in_force"]),
        submitted_ts=int(d["submitted_ts"]),
        updated_ts=int(d["updated_ts"]),
        status=OrderStatus(d["status"]),
        filled_quantity=Decimal(d["filled_quantity"]),
        average_price=None if d["average_price"] is None else Decimal(d["average_price"]),
        fill_count=int(d["fill_count"]),
        message=str(d["message"]),
    )


def _fill_to_dict(fill: Fill) -> dict[str, Any]:
    return {
        "fill_id": fill.fill_id,
        "client_order_id": fill.client_order_id,
        "symbol": fill.symbol,
        "side": fill.side.value,
        "quantity": str(fill.quantity),
        "price": str(fill.price),
        "fee": str(fill.fee),
        "ts": fill.ts,
    }


def _fill_from_dict(d: dict[str, Any]) -> Fill:
    return Fill(
        fill_id=str(d["fill_id"]),
        client_order_id=str(d["client_order_id"]),
        symbol=str(d["symbol"]),
        side=Side(d["side"]),
        quantity=Decimal(d["quantity"]),
        price=Decimal(d["price"]),
        fee=Decimal(d["fee"]),
        ts=int(d["ts"]),
    )
