"""A deterministic simulated broker driven by a ``ReplayFeed``.

The simulation has no clock of its own and no randomness: "now" is the close
time of the last bar it has delivered, and every execution is a pure function
of the bars and the ``CostModel``. Two runs over the same bars with the same
orders therefore produce identical updates, which is what makes a backtest
reproducible and a live-vs-backtest comparison meaningful.

All of the broker's memory lives in one ``SimState`` so it can be written to a
file and read back by a later process, making the simulator behave like an
external broker that survives daemon restarts. Given a ``state_file`` the
broker does that by itself: it loads the file at ``connect`` and records
every order event (submit, fill, cancel, expiry) before the call that caused
it returns (``brokers.sim_state.StateFile``: snapshot + append-only journal,
so the cost per event does not grow with history), so a daemon killed at any
instant meets the broker as the broker last acknowledged it — exactly what a
real broker's own database gives.
"""

from __future__ import annotations

import math
import pathlib
from collections import deque
from collections.abc import AsyncIterator
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Literal

from brokers.base import (
    ZERO,
    AccountSnapshot,
    Bar,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Side,
    TimeInForce,
    UpdateInbox,
)
from brokers.costs import CostModel
from brokers.errors import BrokerError, DataError, OrderRejected
from brokers.sim.replay import ReplayFeed
from brokers.sim.state import Delta, SimOrder, SimState, StateFile, atomic_write

__all__ = ["SimBroker"]
_DAY = 86_400
_INF = math.inf
# Divisions (average prices) use a fixed context so results cannot depend on whatever
# the process-wide decimal context has been set to.
_DIV = Context(prec=28, rounding=ROUND_HALF_EVEN)


class SimBroker:
    """The ``Broker`` protocol over replayed bars.

    Orders submitted while the daemon handles bar N execute when bar N+1 is
    delivered (before the daemon sees it), so the fill is already in the inbox
    when the daemon drains updates for N+1 — the same order of events a live
    broker produces. ``fill_at="close"`` instead fills market orders at bar
    N's close inside ``submit``, the convention of most training environments.

    ``state_file`` makes the broker an external party: see the module docstring.
    Bars alone do not rewrite the file (that would cost a write per bar); the
    feed position is saved with each order event, every ``checkpoint_bars``
    bars if set, and at ``close``. A restarted broker therefore resumes at its
    last saved bar, which is consistent with everything it saved.
    ``state_fsync=False`` keeps atomicity against a killed process but gives up
    durability against power loss (for tests).

    Without a state file, memory stays flat over any replay: only the latest
    ``retain_finished`` finished orders and their fills are remembered (for
    ``get_order``, ``fills_for`` and the duplicate-id check); the daemon's
    store holds the full record.
    """

    def __init__(
        self,
        feed: ReplayFeed,
        cost_model: CostModel,
        *,
        starting_cash: Decimal = Decimal("100000"),
        fill_at: Literal["next_open", "close"] = "next_open",
        currency: str = "USD",
        max_fill_quantity: Decimal | None = None,
        name: str = "sim",
        state_file: str | pathlib.Path | None = None,
        checkpoint_bars: int = 0,
        state_fsync: bool = True,
        account_id: str = "",
        retain_finished: int = 256,
    ) -> None:
        if fill_at not in ("next_open", "close"):
            raise ValueError(f"fill_at must be 'next_open' or 'close', not {fill_at!r}")
        if max_fill_quantity is not None and not max_fill_quantity > 0:
            raise ValueError(f"max_fill_quantity must be positive, got {max_fill_quantity}")
        if checkpoint_bars < 0:
            raise ValueError(f"checkpoint_bars must be >= 0, got {checkpoint_bars}")
        if retain_finished < 1:
            raise ValueError(f"retain_finished must be >= 1, got {retain_finished}")
        self.name = name
        self.feed = feed
        self.cost_model = cost_model
        self.fill_at = fill_at
        self.max_fill_quantity = max_fill_quantity
        # a state file's own account id wins when it is loaded
        self.state = SimState(cash=Decimal(starting_cash), currency=currency, account_id=account_id)
        self.state_file = None if state_file is None else pathlib.Path(state_file)
        self._file = None if state_file is None else StateFile(state_file, fsync=state_fsync)
        self.checkpoint_bars = checkpoint_bars
        self.persist_count = 0
        self._delta = Delta()
        self._mutations = 0
        self._working: dict[str, SimOrder] = {}
        self._fills_by_order: dict[str, list[Fill]] = {}
        self._inbox = UpdateInbox()
        # Without a state file the broker's memory is bounded: the store holds the record. Finished
        # orders (with their fills) are kept for look-ups and duplicate checks, the latest
        # ``retain_finished`` of them, like a venue's idempotency window.
        self.retain_finished = retain_finished
        self._finished: deque[str] = deque()
        self._connected = False
        self._sync_feed_position()

    # --- lifecycle ---------------------------------------------------------------------------

    async def connect(self) -> None:
        """Open the account: load the state file if there is one, else create it (a new account)."""
        if self._connected:
            return
        self._connected = True
        file = self._file
        if file is None:
            return
        if file.exists():
            self._install(file.path, file.load())
        self._sync_feed_position()
        file.snapshot(self.state)  # fold the journal in: a clean start for this session
        self._delta = Delta(set(), len(self.state.fills), len(self.state.submits))

    async def close(self) -> None:
        self.feed.stop()
        if self._file is not None and self._connected:
            self._sync_feed_position()
            self._file.snapshot(self.state)
            self._file.close()
            self._delta = Delta(set(), len(self.state.fills), len(self.state.submits))

    # --- market data -------------------------------------------------------------------------

    async def bars(self) -> AsyncIterator[Bar]:
        async for bar in self.feed:
            self._on_bar(bar)
            yield bar

    def stop_bars(self) -> None:
        self.feed.stop()

    def now(self) -> int:
        """Simulated time: the close of the last bar delivered (0 before the first)."""
        return self.state.clock_ts

    def feed_status(self) -> dict[str, object]:
        feed = self.feed
        last = feed.last_bar
        return {
            "kind": "replay",
            "position": feed.position,
            "total": feed.total,
            "lag_seconds": round(feed.lag_seconds, 3),
            "last_bar_ts": last.time.isoformat() if last is not None else None,
            "done": feed.done,
        }

    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]:
        """Bars with ``start_ts <= ts <= end_ts`` that the feed has already passed: no look-ahead."""
        seen = self.feed.bars[: self.feed.position]
        return [b for b in seen if b.symbol == symbol and start_ts <= b.ts <= end_ts]

    # --- order updates -----------------------------------------------------------------------

    async def next_update(self) -> OrderUpdate:
        return await self._inbox.get()

    def drain_updates(self) -> list[OrderUpdate]:
        return self._inbox.drain()

    # --- orders ------------------------------------------------------------------------------

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        state = self.state
        state.submits.append(client_order_id)
        try:
            self._validate(client_order_id, request)
        except OrderRejected:
            self._persist()
            raise
        state.order_seq += 1
        order = SimOrder(
            client_order_id=client_order_id,
            broker_order_id=f"sim{state.account_id}-{state.order_seq}",
            symbol=request.symbol,
            side=request.side,
            quantity=request.quantity,
            order_type=request.order_type,
            limit_price=request.limit_price if request.order_type is OrderType.LIMIT else None,
            time_in_force=request.time_in_force,
            submitted_ts=state.clock_ts,
            updated_ts=state.clock_ts,
        )
        state.orders[client_order_id] = order
        self._working[client_order_id] = order
        self._changed(client_order_id)
        accepted = _update(order)
        if self.fill_at == "close" and order.order_type is OrderType.MARKET:
            price = self.cost_model.fill_price(order.side, state.last_prices[order.symbol])
            self._execute(order, price, state.clock_ts)
            self._expire_if_ioc(order, state.clock_ts)
        self._persist()
        return accepted

    async def cancel(self, client_order_id: str) -> OrderUpdate:
        order = self.state.orders.get(client_order_id)
        if order is None:
            raise BrokerError(f"cancel: unknown client_order_id {client_order_id!r}")
        if order.status.is_terminal:
            return _update(order)
        self._finish(order, OrderStatus.CANCELLED, self.state.clock_ts, "cancelled by client")
        self._persist()
        return _update(order)

    async def get_order(self, client_order_id: str) -> OrderUpdate | None:
        order = self.state.orders.get(client_order_id)
        return None if order is None else _update(order)

    async def open_orders(self) -> list[OrderUpdate]:
        return [_update(o) for o in self._working.values()]

    async def fills_for(self, client_order_id: str) -> list[Fill]:
        """Every execution of one order, oldest first: how a restarted daemon recovers fills it never booked.

        Real adapters answer this from the broker's execution report
        (IB ``reqExecutions``, Alpaca account activities, OANDA transactions).
        """
        return list(self._fills_by_order.get(client_order_id, ()))

    # --- the outside world -------------------------------------------------------------------

    def external_trade(self, symbol: str, side: Side, quantity: Decimal, *, notify: bool = False) -> Fill:
        """A trade placed on the account by someone else (a web UI, another program), at the last price.

        It moves the position and cash like any execution, which is what the
        reconciler must notice. ``notify`` also streams its update, as brokers
        that report every account order do; the daemon then sees an order it
        never placed.
        """
        state = self.state
        if symbol not in state.last_prices:
            raise BrokerError(f"external_trade: no price known yet for {symbol!r}")
        state.order_seq += 1
        client_order_id = f"external-{state.order_seq}"
        order = SimOrder(
            client_order_id, f"sim{state.account_id}-{state.order_seq}", symbol, side, quantity, OrderType.MARKET, None,
            TimeInForce.IOC, state.clock_ts, state.clock_ts,
        )
        state.orders[client_order_id] = order
        self._working[client_order_id] = order
        self._changed(client_order_id)
        self._execute(order, state.last_prices[symbol], state.clock_ts)
        fill = state.fills[-1]
        if not notify:
            self._unnotify(client_order_id)
        self._persist()
        return fill

    # --- account -----------------------------------------------------------------------------

    async def positions(self) -> list[Position]:
        return list(self.state.positions.values())

    async def account(self) -> AccountSnapshot:
        state = self.state
        equity = state.cash + sum((p.quantity * state.last_prices[s] for s, p in state.positions.items()), start=ZERO)
        return AccountSnapshot(cash=state.cash, equity=equity, currency=state.currency, ts=state.clock_ts)

    # --- persistence -------------------------------------------------------------------------

    def save_state(self, path: str | pathlib.Path, *, fsync: bool = True) -> None:
        """Write the state atomically: a crash leaves either the old file or the new one, never half."""
        self._sync_feed_position()
        atomic_write(pathlib.Path(path), self.state.to_json(compact=True), fsync=fsync)

    def load_state(self, path: str | pathlib.Path) -> None:
        """Replace this broker's state with a saved one and move the feed to where that state stopped.

        Updates still waiting in the inbox belonged to the replaced state and are
        discarded; a restarted daemon learns order outcomes by reconciling
        (``get_order``/``open_orders``), as it would with a real broker.
        """
        path = pathlib.Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise DataError(f"{path}: cannot read sim state: {exc}") from exc
        try:
            state = SimState.from_json(text)
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from exc
        self._install(path, state)

    def _install(self, path: pathlib.Path, state: SimState) -> None:
        self._check_feed_matches(path, state)
        self.state = state
        self._working = {cid: o for cid, o in state.orders.items() if not o.status.is_terminal}
        self._fills_by_order = {}
        for fill in state.fills:
            self._fills_by_order.setdefault(fill.client_order_id, []).append(fill)
        self._inbox.drain()
        self.feed.seek(state.feed_position)

    # --- internals ---------------------------------------------------------------------------

    def _persist(self) -> None:
        """Record what changed (if file-backed) before the caller sees the outcome: a broker commits, then acks."""
        file = self._file
        if file is None:
            return
        self._sync_feed_position()
        state = self.state
        file.append(state, self._delta)
        self._delta = Delta(set(), len(state.fills), len(state.submits))
        self.persist_count += 1

    def _unnotify(self, client_order_id: str) -> None:
        """Drop the inbox updates of one order (an external trade the daemon is not told about)."""
        kept = [u for u in self._inbox.drain() if u.client_order_id != client_order_id]
        for update in kept:
            self._inbox.put(update)

    def _validate(self, client_order_id: str, request: OrderRequest) -> None:
        if not client_order_id:
            raise OrderRejected("client_order_id must not be empty")
        existing = self.state.orders.get(client_order_id)
        if existing is not None:
            raise OrderRejected(
                f"duplicate client_order_id {client_order_id!r}: already used by order {existing.broker_order_id}"
            )
        quantity = request.quantity
        if not isinstance(quantity, Decimal) or not quantity.is_finite() or quantity <= 0:
            raise OrderRejected(f"quantity must be a positive Decimal, got {quantity!r}")
        if request.order_type is OrderType.LIMIT:
            limit = request.limit_price
            if limit is None:
                raise OrderRejected("limit order without a limit_price")
            if not isinstance(limit, Decimal) or not limit.is_finite() or limit <= 0:
                raise OrderRejected(f"limit_price must be a positive Decimal, got {limit!r}")
        if request.symbol not in self.state.last_prices:
            raise OrderRejected(f"no price known yet for {request.symbol!r}: no bar for it has been replayed")

    def _on_bar(self, bar: Bar) -> None:
        """Execute working orders against a newly delivered bar, then mark its close.

        Runs for every replayed bar, so the common case (no working order, no
        state file) is kept to a handful of assignments.
        """
        state = self.state
        symbol = bar.symbol
        ts = bar.ts
        # the feed has just handed over ``bar``: it is the last bar consumed (what _sync_feed_position reads)
        state.feed_position = self.feed.position
        state.feed_last_ts = ts
        previous = state.last_bar_ts.get(symbol)
        if not _is_tradeable(bar) or (previous is not None and ts <= previous):
            # The daemon's bar guard rejects such a bar; trading on it would let bad data move the account.
            return
        state.last_bar_ts[symbol] = ts
        if ts > state.clock_ts:
            state.clock_ts = ts
        before = self._mutations
        if self._working:
            for order in [o for o in self._working.values() if o.symbol == symbol]:
                self._trade(order, bar)
        state.last_prices[symbol] = _dec(bar.close)
        if self._file is not None and (
            self._mutations != before or (self.checkpoint_bars and state.feed_position % self.checkpoint_bars == 0)
        ):
            self._persist()

    def _trade(self, order: SimOrder, bar: Bar) -> None:
        """One working order meets one bar: a DAY order past its day expires, else it trades if it can."""
        ts = bar.ts
        if order.time_in_force is TimeInForce.DAY and (ts - 1) // _DAY > order.submitted_ts // _DAY:
            self._finish(order, OrderStatus.EXPIRED, ts, "day order expired at the end of its UTC day")
            return
        price = self._execution_price(order, bar)
        if price is not None:
            self._execute(order, price, ts)
        self._expire_if_ioc(order, ts)

    def _execution_price(self, order: SimOrder, bar: Bar) -> Decimal | None:
        """Where ``order`` trades in ``bar``, or None if the bar never reached its limit."""
        cm = self.cost_model
        if order.order_type is OrderType.MARKET:
            return cm.fill_price(order.side, bar.open if self.fill_at == "next_open" else bar.close)
        limit = order.limit_price
        assert limit is not None
        bar_open = _dec(bar.open)
        if order.side is Side.BUY:
            return cm.round_price(min(bar_open, limit)) if _dec(bar.low) <= limit else None
        return cm.round_price(max(bar_open, limit)) if _dec(bar.high) >= limit else None

    def _execute(self, order: SimOrder, price: Decimal, ts: int) -> None:
        quantity = order.remaining
        if self.max_fill_quantity is not None:
            quantity = min(quantity, self.max_fill_quantity)
        fee = self.cost_model.commission(quantity, price)
        order.fill_count += 1
        fill = Fill(
            fill_id=f"{order.broker_order_id}-{order.fill_count}",
            client_order_id=order.client_order_id,
            symbol=order.symbol,
            side=order.side,
            quantity=quantity,
            price=price,
            fee=fee,
            ts=ts,
        )
        filled = order.filled_quantity + quantity
        if order.average_price is None:
            order.average_price = price
        else:
            order.average_price = _DIV.divide(order.average_price * order.filled_quantity + price * quantity, filled)
        order.filled_quantity = filled
        order.status = OrderStatus.FILLED if filled >= order.quantity else OrderStatus.PARTIALLY_FILLED
        order.updated_ts = ts
        self._mutations += 1
        self._changed(order.client_order_id)
        self.state.fills.append(fill)
        self._fills_by_order.setdefault(fill.client_order_id, []).append(fill)
        if order.status.is_terminal:
            del self._working[order.client_order_id]
            self._finished_order(order.client_order_id)
        self._apply_to_account(fill)
        self._inbox.put(_update(order, fill))

    def _apply_to_account(self, fill: Fill) -> None:
        state = self.state
        notional = fill.quantity * fill.price
        if fill.side is Side.BUY:
            state.cash -= notional + fill.fee
        else:
            state.cash += notional - fill.fee
        held = state.positions.get(fill.symbol)
        quantity, average = _roll_position(
            held.quantity if held else ZERO, held.average_price if held else ZERO, fill.signed_quantity, fill.price
        )
        if quantity == 0:
            state.positions.pop(fill.symbol, None)
        else:
            state.positions[fill.symbol] = Position(fill.symbol, quantity, average)

    def _expire_if_ioc(self, order: SimOrder, ts: int) -> None:
        """An IOC order gets exactly one chance to trade; whatever it did not fill then is expired."""
        if order.time_in_force is TimeInForce.IOC and not order.status.is_terminal:
            self._finish(order, OrderStatus.EXPIRED, ts, "immediate-or-cancel remainder expired")

    def _finish(self, order: SimOrder, status: OrderStatus, ts: int, message: str) -> None:
        order.status = status
        order.updated_ts = ts
        order.message = message
        self._mutations += 1
        self._changed(order.client_order_id)
        self._working.pop(order.client_order_id, None)
        self._finished_order(order.client_order_id)
        self._inbox.put(_update(order))

    def _changed(self, client_order_id: str) -> None:
        """Note an order for the state file's next journal line (nothing to note without a file)."""
        if self._file is not None:
            self._delta.orders.add(client_order_id)

    def _finished_order(self, client_order_id: str) -> None:
        """Forget the oldest finished orders beyond ``retain_finished`` (only without a state file, whose
        journal is indexed by the full history)."""
        if self._file is not None:
            return
        finished = self._finished
        finished.append(client_order_id)
        if len(finished) <= self.retain_finished:
            return
        state = self.state
        forgotten = finished.popleft()
        state.orders.pop(forgotten, None)
        self._fills_by_order.pop(forgotten, None)
        # the flat logs are trimmed in halves, so the cost per order stays constant
        for log in (state.fills, state.submits):
            if len(log) > 2 * self.retain_finished:
                del log[: len(log) - self.retain_finished]

    def _sync_feed_position(self) -> None:
        state = self.state
        state.feed_position = self.feed.position
        state.feed_last_ts = self.feed.bars[state.feed_position - 1].ts if state.feed_position else None

    def _check_feed_matches(self, path: pathlib.Path, state: SimState) -> None:
        position = state.feed_position
        if position > self.feed.total:
            raise DataError(f"{path}: sim state is at bar {position} but the feed has only {self.feed.total} bars")
        actual = self.feed.bars[position - 1].ts if position else None
        if actual != state.feed_last_ts:
            raise DataError(
                f"{path}: sim state does not match this feed: bar {position - 1} has ts {actual}, "
                f"the state expects {state.feed_last_ts}"
            )


def _roll_position(quantity: Decimal, average: Decimal, delta: Decimal, price: Decimal) -> tuple[Decimal, Decimal]:
    """New signed quantity and average price after a fill of signed ``delta`` at ``price``.

    Adding averages, reducing keeps the entry price (so realised P&L is measured
    against it), and flipping through zero starts the new side at the fill price.
    """
    new_quantity = quantity + delta
    if new_quantity == 0:
        return ZERO, ZERO
    if quantity == 0 or (quantity > 0) == (delta > 0):
        return new_quantity, _DIV.divide(abs(quantity) * average + abs(delta) * price, abs(new_quantity))
    if abs(delta) < abs(quantity):
        return new_quantity, average
    return new_quantity, price


def _is_tradeable(bar: Bar) -> bool:
    """Finite, positive prices with open and close inside [low, high] (NaN fails every comparison)."""
    try:
        return 0 < bar.low <= bar.open <= bar.high < _INF and bar.low <= bar.close <= bar.high
    except TypeError:  # not a number at all
        return False


def _dec(value: float) -> Decimal:
    """Float market data to Decimal by its shortest repr, the same conversion the cost model uses."""
    return Decimal(repr(value))


def _update(order: SimOrder, fill: Fill | None = None) -> OrderUpdate:
    return OrderUpdate(
        client_order_id=order.client_order_id,
        status=order.status,
        ts=order.updated_ts,
        broker_order_id=order.broker_order_id,
        symbol=order.symbol,
        filled_quantity=order.filled_quantity,
        average_price=order.average_price,
        fill=fill,
        message=order.message,
    )
