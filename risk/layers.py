"""The risk layers the governor runs, one small class each, and ``build_layers``.

Principles every layer follows
------------------------------
* Exits always pass the layers that judge whether taking risk is wise (window,
  drip, stale data, confidence, cooldown, trade counts, position and gross
  limits, order notional, daily loss, drawdown below its halt tier, volatility,
  loss streak). A layer that would refuse an order which *flips* the position
  resizes it to the closing part instead of blocking it, so a strategy's exit
  is never lost with its refused entry.
* Only the state guards (kill switch, fill and reconciliation latches, the
  drawdown halt tier) and the garbage guards (submit rate, price band) judge
  exits too.
* An order marked ``ctx.extras[FLATTEN] is True`` that shrinks a position is
  an emergency exit: it passes every layer but the fill and reconciliation
  latches (whose positions are not to be trusted) and the price band. That is
  how a drawdown halt or an operator's /flatten gets out of the market while
  the governor is HALTED.
* Time is ``ctx.ts`` and the ``ts`` given to the hooks, never the wall clock,
  so a backtest replays every verdict exactly. Days are UTC days.
* Layers that need history are told about it through the ``ObservingLayer``
  hooks; ``RiskHooks`` fans those calls out over a layer list.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Protocol, runtime_checkable

from brokers.base import Fill, OrderRequest, Side
from risk.calendar import DAY, CalendarRangeError, Sessions, sessions_for
from risk.config import (
    ConfidenceConfig,
    CooldownConfig,
    DailyLossConfig,
    DrawdownConfig,
    FatFingerConfig,
    GrossExposureConfig,
    KillSwitchConfig,
    LossStreakConfig,
    PositionLimitConfig,
    RiskConfig,
    StaleDataConfig,
    SubmitRateConfig,
    TradeCountConfig,
    TradingWindowConfig,
    VolatilityRegimeConfig,
)
from risk.governor import (
    ALLOW,
    RiskContext,
    RiskGovernor,
    RiskLayer,
    TradingState,
    Verdict,
    VerdictKind,
    block,
    halt,
    resize,
)

# Keys of RiskContext.extras the layers read.
BAR_TS = "bar_ts"  # int: close time of the bar behind the decision
VOLATILITY_Z = "volatility_z"  # float: the regime detector's volatility z-score
FLATTEN = "flatten"  # True on emergency exits (operator /flatten, drawdown halt)

_ZERO = Decimal(0)
_ONE = Decimal(1)
_INF = math.inf

# Enum members bound once: in Python 3.11 ``TradingState.ACTIVE`` is a descriptor lookup (~150 ns) on
# every use, and the governor runs a dozen layers per order.
_BUY = Side.BUY
_ACTIVE = TradingState.ACTIVE
_PAUSED = TradingState.PAUSED
_HALTED = TradingState.HALTED
_ALLOW_KIND = VerdictKind.ALLOW
_NUMBER = (int, float)  # a tuple: ``int | float`` in an isinstance call builds a union object on every call

# Relative margin of the equity bands below. A band edge computed as base x (1 - limit) can differ from
# the exact test ``1 - equity / base >= limit`` by a few ulps; the margin is a million times that, so an
# equity inside the band surely gives the same answer as the exact test and one outside is tested exactly.
_BAND_MARGIN = 1e-9
# The same idea for the float pre-check of position caps (``_surely_fits``): 1 - 1e-12 of a float cap is
# surely below the Decimal cap the exact test would build from it.
_FIT_MARGIN = 1.0 - 1e-12
# Floats between these are normal with room to spare, so products of two of them keep full precision.
_PLAIN_LOW = 1e-150
_PLAIN_HIGH = 1e150

# How strict a state is, for escalation: a layer's request never loosens the state.
_SEVERITY: dict[TradingState, int] = {
    TradingState.ACTIVE: 0,
    TradingState.REDUCING: 1,
    TradingState.PAUSED: 2,
    TradingState.HALTED: 3,
}


@dataclass(frozen=True, slots=True)
class RiskEvent:
    """Something the daemon should store and alert that is not an order verdict (a warning, a request)."""

    ts: int
    layer: str
    reason: str
    message: str
    level: str = "warning"  # "warning" | "critical"


@runtime_checkable
class ObservingLayer(RiskLayer, Protocol):
    """A layer that learns from what happens after its verdicts.

    The daemon calls, on every layer that has them:

    * ``on_order_sent(symbol, ts)`` after an order is handed to the broker
      (cooldown, trade counts, submit rate);
    * ``on_fill(fill, order_quantity, filled_quantity)`` for each new fill,
      with the order's requested and cumulative filled quantity (fill guard);
    * ``on_trade_closed(symbol, pnl, ts)`` when a round trip closes, P&L net
      of fees (loss streak);
    * ``on_equity(ts, equity, day_start_equity, peak_equity)`` on each equity
      mark (daily loss, drawdown), so limits trip while the strategy holds;
    * ``on_resume(ts)`` when an operator resumes trading (clears latches);
    * ``drain_events()`` to collect warnings and state requests.

    ``requested_state`` is the state the layer asks the governor to enter;
    layers never transition the governor themselves.
    """

    requested_state: TradingState | None
    requested_reason: str

    def on_order_sent(self, symbol: str, ts: int) -> None: ...

    def on_fill(self, fill: Fill, order_quantity: Decimal, filled_quantity: Decimal) -> None: ...

    def on_trade_closed(self, symbol: str, pnl: float | Decimal, ts: int) -> None: ...

    def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None: ...

    def on_resume(self, ts: int) -> None: ...

    def drain_events(self) -> list[RiskEvent]: ...


# ---------------------------------------------------------------------------- helpers


_last_increases: tuple[OrderRequest | None, RiskContext | None, bool] = (None, None, False)


def _increases(request: OrderRequest, ctx: RiskContext) -> bool:
    """Entries, adds and flips: anything that is not a pure reduction.

    Most layers ask this about the same order, so the last answer is kept and reused for the very same
    request and context objects (both frozen, so identity means the same question).
    """
    global _last_increases
    last = _last_increases
    if last[0] is request and last[1] is ctx:
        return last[2]
    result = request.quantity > _ZERO and not ctx.reduces_exposure(request)
    _last_increases = (request, ctx, result)
    return result


def _is_flatten(request: OrderRequest, ctx: RiskContext) -> bool:
    return ctx.extras.get(FLATTEN) is True and ctx.reduces_exposure(request)


_last_dec: tuple[float, Decimal] = (math.nan, Decimal("NaN"))


def _dec(value: float) -> Decimal:
    """``value`` as the Decimal of its shortest repr.

    Several layers convert the same ``ctx.last_price`` object for one order; the last conversion is kept
    and reused when the very same float object comes again (identity, so -0.0 and NaN stay exact).
    """
    global _last_dec
    last = _last_dec
    if last[0] is value:
        return last[1]
    result = Decimal(repr(value))
    _last_dec = (value, result)
    return result


def _floor_lot(quantity: Decimal, lot: Decimal) -> Decimal:
    if quantity <= 0:
        return _ZERO
    return (quantity / lot).to_integral_value(rounding=ROUND_FLOOR) * lot


def _valid_price(price: float) -> bool:
    return math.isfinite(price) and price > 0


def _fit_entry(request: OrderRequest, ctx: RiskContext, max_abs_after: Decimal, lot: Decimal) -> Decimal:
    """The largest quantity of an exposure-increasing order that leaves |position| <= max_abs_after.

    The closing part of a flip is always kept; only new exposure is cut, in
    whole lots, so a resize never creates an odd lot the broker would reject.
    """
    position = ctx.position
    quantity = request.quantity
    after = position + quantity if request.side is _BUY else position - quantity
    cap = max(max_abs_after, _ZERO)
    if position != 0 and after != 0 and (after > 0) != (position > 0):
        new = abs(after)
        return quantity if new <= cap else abs(position) + _floor_lot(cap, lot)
    room = cap - abs(position)
    return quantity if quantity <= room else _floor_lot(room, lot)


_last_after: tuple[OrderRequest | None, RiskContext | None, float] = (None, None, 0.0)


def _surely_fits(request: OrderRequest, ctx: RiskContext, cap: float) -> bool:
    """True when the whole exposure-increasing order surely leaves |position| <= ``cap`` units (a float).

    A fast pre-check for the position and gross-exposure caps: turning a float cap into a Decimal and
    fitting the order to it costs microseconds per order, and nearly every order fits with room to
    spare. For such an order ``_fit_entry`` returns the full quantity exactly when |position after| <= cap.
    False only means "decide exactly"; a NaN cap never fits. |position after| is kept for the next
    layer asking about the same order, like ``_increases``.
    """
    global _last_after
    last = _last_after
    if last[0] is request and last[1] is ctx:
        after_units = last[2]
    else:
        quantity = request.quantity
        after_units = float(abs(ctx.position + quantity if request.side is _BUY else ctx.position - quantity))
        _last_after = (request, ctx, after_units)
    return after_units <= cap * _FIT_MARGIN


def _limit_entry(layer: str, reason: str, message: str, request: OrderRequest, allowed: Decimal) -> Verdict:
    if allowed >= request.quantity:
        return ALLOW
    if allowed <= 0:
        return block(layer, reason, message)
    return resize(layer, reason, message, allowed)


def _deny_entry(layer: str, reason: str, message: str, request: OrderRequest, ctx: RiskContext,
                lot: Decimal) -> Verdict:
    """Block an entry; a flip keeps its closing part."""
    return _limit_entry(layer, reason, message, request, _fit_entry(request, ctx, _ZERO, lot))


def _scale_entry(layer: str, reason: str, message: str, request: OrderRequest, ctx: RiskContext,
                 factor: float, lot: Decimal) -> Verdict:
    """Scale the position an entry aims at (not the order), so repeated orders cannot creep past it."""
    quantity = request.quantity
    target = abs(ctx.position + quantity if request.side is _BUY else ctx.position - quantity)
    return _limit_entry(layer, reason, message, request, _fit_entry(request, ctx, target * _dec(factor), lot))


def _quiet_band(base: float, lower: float | None, upper: float | None) -> tuple[float, float]:
    """The open interval of equity in which ``1 - equity / base`` surely lies in ``[lower, upper)``.

    ``None`` leaves that side unbounded. The equity-watching layers use it to skip their exact test on the
    per-bar path while a mark stays inside it; a base that is not a positive number gives an empty band.
    """
    if not (math.isfinite(base) and base > 0):
        return math.nan, math.nan
    margin = base * _BAND_MARGIN
    low = base * (1.0 - upper) + margin if upper is not None else -math.inf
    high = base * (1.0 - lower) - margin if lower is not None else math.inf
    return low, high


# ---------------------------------------------------------------------------- base


class _Layer:
    """No-op hooks, so every layer here satisfies ``ObservingLayer`` and the daemon can call blindly."""

    name = ""

    def __init__(self, lot_size: Decimal = _ONE) -> None:
        self.lot_size = lot_size
        self.requested_state: TradingState | None = None
        self.requested_reason = ""
        self._events: list[RiskEvent] = []

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        return ALLOW

    def figures(self) -> dict[str, object]:
        return {}

    def on_order_sent(self, symbol: str, ts: int) -> None:
        return None

    def on_fill(self, fill: Fill, order_quantity: Decimal, filled_quantity: Decimal) -> None:
        return None

    def on_trade_closed(self, symbol: str, pnl: float | Decimal, ts: int) -> None:
        return None

    def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None:
        return None

    def on_resume(self, ts: int) -> None:
        self.requested_state = None
        self.requested_reason = ""

    def drain_events(self) -> list[RiskEvent]:
        events, self._events = self._events, []
        return events

    def _request(self, state: TradingState, reason: str, ts: int, message: str) -> None:
        """Ask for a state once; a weaker request never replaces a stricter one."""
        current = self.requested_state
        if current is not None and _SEVERITY[current] >= _SEVERITY[state]:
            return
        self.requested_state, self.requested_reason = state, reason
        self._emit(ts, reason, message, "critical")

    def _emit(self, ts: int, reason: str, message: str, level: str = "warning") -> None:
        self._events.append(RiskEvent(ts, self.name, reason, message, level))


# ---------------------------------------------------------------------------- state guards


class KillSwitchLayer(_Layer):
    """Enforces the trading state; first in line so a paused daemon does no other work."""

    name = "kill_switch"

    def __init__(self, cfg: KillSwitchConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._allow_flatten = cfg.allow_flatten
        self._last_state: TradingState | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        state = self._last_state = ctx.state
        if state is _ACTIVE:
            return ALLOW
        if self._allow_flatten and _is_flatten(request, ctx):
            return ALLOW
        if state is _PAUSED:
            return block(self.name, "paused", "trading is paused")
        if state is _HALTED:
            return block(self.name, "halted", "trading is halted until resumed")
        if not _increases(request, ctx):
            return ALLOW
        return _deny_entry(self.name, "reducing_only", "only exposure-reducing orders while REDUCING",
                           request, ctx, self.lot_size)

    def figures(self) -> dict[str, object]:
        state = self._last_state.value if self._last_state else None
        return {"value": state, "limit": TradingState.ACTIVE.value, "allow_flatten": self._allow_flatten}


class _Latch(_Layer):
    """A trip that halts every order until an operator resumes: the books cannot be trusted."""

    reason = ""

    def __init__(self, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self.tripped = False
        self.detail = ""

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        if self.tripped:
            return halt(self.name, self.reason, self.detail)
        return ALLOW

    def on_resume(self, ts: int) -> None:
        super().on_resume(ts)
        self.tripped, self.detail = False, ""

    def figures(self) -> dict[str, object]:
        return {"value": self.tripped, "limit": False, "detail": self.detail}

    def _trip(self, detail: str, ts: int) -> Verdict:
        self.tripped, self.detail = True, detail
        self._request(TradingState.HALTED, self.reason, ts, detail)
        return halt(self.name, self.reason, detail)


class FillGuardLayer(_Latch):
    """An overfill means an order was double-sent or the broker misreports: stop before it compounds."""

    name = "fill_guard"
    reason = "overfill"

    def validate_fill(self, order_qty: Decimal, cumulative_filled: Decimal, *, ts: int = 0,
                      client_order_id: str = "") -> Verdict:
        if cumulative_filled <= order_qty:
            return ALLOW
        label = f"order {client_order_id} " if client_order_id else "order "
        return self._trip(f"{label}filled {cumulative_filled} of {order_qty}", ts)

    def on_fill(self, fill: Fill, order_quantity: Decimal, filled_quantity: Decimal) -> None:
        self.validate_fill(order_quantity, filled_quantity, ts=fill.ts, client_order_id=fill.client_order_id)


class ReconciliationLayer(_Latch):
    """The reconciler's way to stop trading when broker and books disagree and it may not adopt."""

    name = "reconciliation"
    reason = "reconciliation_mismatch"

    def report_mismatch(self, detail: str, ts: int = 0) -> Verdict:
        return self._trip(detail, ts)


# ---------------------------------------------------------------------------- entry timing


class TradingWindowLayer(_Layer):
    """New positions only while the market is open and not about to close for the session."""

    name = "trading_window"

    def __init__(self, cfg: TradingWindowConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self.sessions: Sessions = sessions_for(
            cfg.calendar,
            start=cfg.calendar_start,
            close_hour=cfg.weekend_close_hour_utc,
            open_hour=cfg.weekend_open_hour_utc,
        )
        self._cutoff = cfg.entry_cutoff_minutes * 60
        self._last_to_close: int | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        if not _increases(request, ctx):
            return ALLOW
        try:
            to_close = self._last_to_close = self.sessions.seconds_to_close(ctx.ts)
        except CalendarRangeError as exc:
            return _deny_entry(self.name, "calendar_range", str(exc), request, ctx, self.lot_size)
        if to_close is None:
            return _deny_entry(self.name, "market_closed", f"{self.sessions.name} is closed", request, ctx,
                               self.lot_size)
        if to_close < self._cutoff:
            return _deny_entry(self.name, "entry_cutoff", f"{to_close // 60} min to the close, cut-off "
                               f"{self._cutoff // 60} min", request, ctx, self.lot_size)
        return ALLOW

    def figures(self) -> dict[str, object]:
        minutes = None if self._last_to_close is None else self._last_to_close // 60
        return {"value": minutes, "limit": self._cutoff // 60, "calendar": self.sessions.name,
                "unit": "minutes to close"}


class DripLayer(_Layer):
    """A new deployment earns its full size over its first days instead of getting it on day one."""

    name = "drip"

    def __init__(self, start_ts: int, schedule: Sequence[float], lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._start = start_ts
        self._schedule = tuple(schedule)
        self._last_factor = 1.0

    def factor(self, ts: int) -> float:
        day = max((ts - self._start) // DAY, 0)
        return self._schedule[day] if day < len(self._schedule) else 1.0

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        if not _increases(request, ctx):
            return ALLOW
        factor = self._last_factor = self.factor(ctx.ts)
        if factor >= 1:
            return ALLOW
        return _scale_entry(self.name, "drip_size", f"deployment day size factor {factor}", request, ctx,
                            factor, self.lot_size)

    def figures(self) -> dict[str, object]:
        return {"value": self._last_factor, "limit": 1.0, "deployment_start": self._start,
                "schedule": list(self._schedule)}


class StaleDataLayer(_Layer):
    """A decision on an old bar is a decision on a market that has moved on."""

    name = "stale_data"

    def __init__(self, cfg: StaleDataConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._max_age = cfg.max_age_seconds
        self._last_age: int | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        bar_ts = ctx.extras.get(BAR_TS)
        if not isinstance(bar_ts, int) or not _increases(request, ctx):
            return ALLOW  # without a bar time the bar guard's staleness check is the only one
        age = self._last_age = ctx.ts - bar_ts
        if age <= self._max_age:
            return ALLOW
        return _deny_entry(self.name, "stale_data", f"bar is {age} s old, limit {self._max_age} s", request,
                           ctx, self.lot_size)

    def figures(self) -> dict[str, object]:
        return {"value": self._last_age, "limit": self._max_age, "unit": "seconds"}


class ConfidenceLayer(_Layer):
    """Entries only when the model is sure enough; exits are never held hostage by its doubt."""

    name = "confidence"

    def __init__(self, cfg: ConfidenceConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._min = cfg.min_confidence
        self._last: float | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        confidence = ctx.confidence
        if confidence is None or not _increases(request, ctx):
            return ALLOW
        self._last = confidence
        if confidence >= self._min:  # NaN fails this too
            return ALLOW
        return _deny_entry(self.name, "low_confidence", f"confidence {confidence:.3f} < {self._min}", request,
                           ctx, self.lot_size)

    def figures(self) -> dict[str, object]:
        return {"value": self._last, "limit": self._min}


# ---------------------------------------------------------------------------- activity


class CooldownLayer(_Layer):
    """A pause after each order in a symbol, so a flickering signal cannot churn it."""

    name = "cooldown"

    def __init__(self, cfg: CooldownConfig, bar_seconds: int, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self.seconds = max(cfg.seconds, cfg.bars * bar_seconds)
        self._last_order: dict[str, int] = {}

    def on_order_sent(self, symbol: str, ts: int) -> None:
        self._last_order[symbol] = ts

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        last = self._last_order.get(request.symbol)
        if last is None or not _increases(request, ctx):
            return ALLOW
        waited = ctx.ts - last
        if waited >= self.seconds:
            return ALLOW
        return _deny_entry(self.name, "cooldown", f"{waited} s since the last {request.symbol} order, "
                           f"cooldown {self.seconds} s", request, ctx, self.lot_size)

    def figures(self) -> dict[str, object]:
        return {"value": dict(self._last_order), "limit": self.seconds, "unit": "seconds"}


class TradeCountLayer(_Layer):
    """Caps orders per UTC day, per symbol and in total; exits still pass (and count)."""

    name = "trade_count"

    def __init__(self, cfg: TradeCountConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._max_symbol = cfg.max_per_symbol
        self._max_total = cfg.max_total
        self._day = -1
        self._per_symbol: dict[str, int] = {}
        self._total = 0

    def on_order_sent(self, symbol: str, ts: int) -> None:
        self._roll(ts)
        self._per_symbol[symbol] = self._per_symbol.get(symbol, 0) + 1
        self._total += 1

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        self._roll(ctx.ts)
        if not _increases(request, ctx):
            return ALLOW
        count = self._per_symbol.get(request.symbol, 0)
        if count >= self._max_symbol:
            return _deny_entry(self.name, "max_trades_symbol", f"{count} {request.symbol} orders today, "
                               f"limit {self._max_symbol}", request, ctx, self.lot_size)
        if self._total >= self._max_total:
            return _deny_entry(self.name, "max_trades_day", f"{self._total} orders today, limit "
                               f"{self._max_total}", request, ctx, self.lot_size)
        return ALLOW

    def figures(self) -> dict[str, object]:
        return {"value": self._total, "limit": self._max_total, "per_symbol": dict(self._per_symbol),
                "per_symbol_limit": self._max_symbol}

    def _roll(self, ts: int) -> None:
        day = ts // DAY
        if day != self._day:
            self._day, self._per_symbol, self._total = day, {}, 0


class SubmitRateLayer(_Layer):
    """Stops a runaway loop from spraying orders, whatever their direction."""

    name = "submit_rate"

    def __init__(self, cfg: SubmitRateConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._max = cfg.max_orders
        self._window = cfg.window_seconds
        self._sent: deque[int] = deque()

    def on_order_sent(self, symbol: str, ts: int) -> None:
        self._sent.append(ts)
        self._prune(ts)

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        self._prune(ctx.ts)
        if len(self._sent) < self._max or _is_flatten(request, ctx):
            return ALLOW
        return block(self.name, "submit_rate", f"{len(self._sent)} orders in {self._window} s, limit {self._max}")

    def figures(self) -> dict[str, object]:
        return {"value": len(self._sent), "limit": self._max, "window_seconds": self._window}

    def _prune(self, now: int) -> None:
        sent, horizon = self._sent, now - self._window
        while sent and sent[0] <= horizon:
            sent.popleft()


# ---------------------------------------------------------------------------- exposure


class PositionLimitLayer(_Layer):
    """Caps each symbol's position; an entry is cut to what still fits rather than dropped."""

    name = "position_limit"

    def __init__(self, cfg: PositionLimitConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._max_units = cfg.max_units
        self._max_notional = cfg.max_notional
        self._max_units_float = float(cfg.max_units) if cfg.max_units is not None else math.inf
        self._max_notional_float = float(cfg.max_notional) if cfg.max_notional is not None else None
        self._last: tuple[str, Decimal, float] | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        if not _increases(request, ctx):
            return ALLOW
        self._last = (request.symbol, ctx.position, ctx.last_price)
        if _surely_fits(request, ctx, self._rough_cap(ctx.last_price)):
            return ALLOW
        cap, reason = self._cap(ctx.last_price)
        if cap is None:
            if reason:
                return _deny_entry(self.name, reason, f"no valid price ({ctx.last_price})", request, ctx,
                                   self.lot_size)
            return ALLOW
        allowed = _fit_entry(request, ctx, cap, self.lot_size)
        if allowed >= request.quantity:
            return ALLOW  # the common case: no message to format
        message = f"{request.symbol} position capped at {_floor_lot(cap, self.lot_size)} units"
        return _limit_entry(self.name, reason, message, request, allowed)

    def figures(self) -> dict[str, object]:
        if self._last is None:
            return {"value": None, "limit": self._max_units, "max_notional": self._max_notional}
        symbol, position, price = self._last
        notional = float(abs(position)) * price if _valid_price(price) else None
        return {"value": position, "limit": self._max_units, "symbol": symbol, "notional": notional,
                "max_notional": self._max_notional}

    def _rough_cap(self, price: float) -> float:
        """The binding cap in units as a float, for ``_surely_fits``; NaN when only ``_cap`` can say."""
        cap = self._max_units_float
        if self._max_notional_float is not None:
            if not _valid_price(price):
                return math.nan
            cap = min(cap, self._max_notional_float / price)
        return cap

    def _cap(self, price: float) -> tuple[Decimal | None, str]:
        """The binding cap in units and its reason code; (None, "no_price") when it cannot be valued."""
        cap, reason = self._max_units, "max_position_units"
        if self._max_notional is not None:
            if not _valid_price(price):
                return None, "no_price"
            by_notional = self._max_notional / _dec(price)
            if cap is None or by_notional < cap:
                cap, reason = by_notional, "max_position_notional"
        return cap, reason if cap is not None else ""


class GrossExposureLayer(_Layer):
    """Caps the book as a whole, since per-symbol caps add up across many symbols."""

    name = "gross_exposure"

    def __init__(self, cfg: GrossExposureConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._max_notional = float(cfg.max_notional) if cfg.max_notional is not None else None
        self._max_leverage = cfg.max_leverage
        self._last: tuple[float, float | None] = (0.0, None)

    def limit(self, equity: float) -> float | None:
        """The tighter of the notional and the leverage cap (the notional one on a tie), None when both are off."""
        limit = self._max_notional
        if self._max_leverage is not None:
            by_leverage = self._max_leverage * equity if math.isfinite(equity) else 0.0
            limit = by_leverage if limit is None or by_leverage < limit else limit
        return limit

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        limit = self.limit(ctx.equity)
        self._last = (ctx.gross_exposure, limit)
        if limit is None or not _increases(request, ctx):
            return ALLOW
        price = ctx.last_price
        if not _valid_price(price):
            return _deny_entry(self.name, "no_price", f"no valid price ({price})", request, ctx, self.lot_size)
        position = ctx.position
        # a flat symbol adds nothing (0.0 x a valid price is 0.0) and skips a Decimal->float conversion
        others = max(ctx.gross_exposure - (float(abs(position)) * price if position else 0.0), 0.0)
        room = max(limit - others, 0.0) / price
        if _surely_fits(request, ctx, room):
            return ALLOW
        allowed = _fit_entry(request, ctx, _dec(room), self.lot_size)
        if allowed >= request.quantity:
            return ALLOW  # the common case: no message to format
        return _limit_entry(self.name, "max_gross_exposure", f"gross exposure capped at {limit:.2f}", request,
                            allowed)

    def figures(self) -> dict[str, object]:
        gross, limit = self._last
        return {"value": gross, "limit": limit}


class FatFingerLayer(_Layer):
    """Catches absurd orders: a quantity nobody meant, or a limit price far from the market."""

    name = "fat_finger"

    def __init__(self, cfg: FatFingerConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._max_notional = cfg.max_order_notional
        # the float pre-check's bound, surely below the Decimal cap; NaN (never passes) for an absurdly small cap
        quiet = float(cfg.max_order_notional) * _FIT_MARGIN if cfg.max_order_notional is not None else math.nan
        self._quiet_notional = quiet if quiet >= _PLAIN_LOW else math.nan
        self._band = cfg.price_band
        # the last entry judged: (quantity, reference price); its notional is computed when asked for
        self._last_entry: tuple[Decimal, Decimal | float] | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        price = ctx.last_price
        if self._band is not None and request.limit_price is not None and not _is_flatten(request, ctx):
            if not _valid_price(price):
                return block(self.name, "price_band", f"no valid last price ({price}) to judge the limit price")
            deviation = abs(float(request.limit_price) / price - 1.0)
            if not deviation <= self._band:
                return block(self.name, "price_band", f"limit {request.limit_price} is {deviation:.2%} from "
                             f"last {price}, band {self._band:.2%}")
        if self._max_notional is None or not _increases(request, ctx):
            return ALLOW  # an exit is bounded by the position, which the position limit bounds
        reference = request.limit_price
        quantity = request.quantity
        if reference is None:
            if not _valid_price(price):
                return _deny_entry(self.name, "no_price", f"no valid price ({price})", request, ctx,
                                   self.lot_size)
            self._last_entry = (quantity, price)
            if self._surely_small(quantity, price):
                return ALLOW
            reference = _dec(price)
        self._last_entry = (quantity, reference)
        notional = quantity * reference
        if notional <= self._max_notional:
            return ALLOW
        return _deny_entry(self.name, "order_notional", f"order notional {notional:.2f} > "
                           f"{self._max_notional}", request, ctx, self.lot_size)

    def _surely_small(self, quantity: Decimal, price: float) -> bool:
        """True when ``quantity x Decimal(repr(price))`` is surely within the cap: a float pre-check.

        ``Decimal(repr(price))`` costs more than the rest of the layer. With both factors normal floats
        the float product is within a few ulps of the exact one (repr round-trips, so it is within half
        an ulp of ``price``); the margin of ``_quiet_notional`` is a million times wider. False only
        means "decide exactly".
        """
        units = float(quantity)
        return _PLAIN_LOW < units < _PLAIN_HIGH and _PLAIN_LOW < price < _PLAIN_HIGH and \
            units * price <= self._quiet_notional

    @property
    def last_notional(self) -> Decimal | None:
        """Notional of the last entry judged, exactly as the exact test computes it."""
        if self._last_entry is None:
            return None
        quantity, reference = self._last_entry
        return quantity * (reference if isinstance(reference, Decimal) else _dec(reference))

    def figures(self) -> dict[str, object]:
        return {"value": self.last_notional, "limit": self._max_notional, "price_band": self._band}


# ---------------------------------------------------------------------------- account


class DailyLossLimitLayer(_Layer):
    """Stops new exposure once the day's equity loss reaches the limit, then waits for a human.

    At the limit an exposure-increasing order gets HALT, which moves the
    governor to HALTED (an explicit resume is needed, even on the next day).
    Reductions pass this layer; once HALTED only flatten-marked exits pass the
    kill switch. ``on_equity`` requests HALTED as soon as the mark crosses the
    limit, so the halt does not wait for the next entry. With ``flatten`` on,
    ``flatten_requested`` tells the daemon to close everything.

    ``on_equity`` runs on every bar. While the loss is surely below the limit
    it only remembers the mark (the figure is computed from it on demand):
    one equality and one comparison against a band computed once per day start.
    """

    name = "daily_loss"

    def __init__(self, cfg: DailyLossConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._limit = cfg.limit
        self._flatten = cfg.flatten
        self.flatten_requested = False
        # the last (equity, day start) judged; NaN until the first mark
        self._equity = math.nan
        self._day_start = math.nan
        # equity above _quiet_above (for this day start) surely means a loss below the limit
        self._quiet_base = math.nan
        self._quiet_above = math.nan

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        if self._surely_below_limit(ctx.equity, ctx.day_start_equity):
            return ALLOW
        loss = self._assess(ctx.ts, ctx.equity, ctx.day_start_equity)
        if not _increases(request, ctx):
            return ALLOW
        if loss is None:
            return _deny_entry(self.name, "equity_unknown", f"equity {ctx.equity}, day start "
                               f"{ctx.day_start_equity}", request, ctx, self.lot_size)
        if loss >= self._limit:
            return halt(self.name, "daily_loss", self._message(loss))
        return ALLOW

    def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None:
        if not self._surely_below_limit(equity, day_start_equity):
            self._assess(ts, equity, day_start_equity)

    def _surely_below_limit(self, equity: float, day_start: float) -> bool:
        """True (and the mark remembered) when today's loss is surely known and below the limit.

        Then ``_assess`` would only remember the mark and every order passes this layer, so the per-bar
        hook and ``check`` skip it. The band is recomputed once per day start; an infinite equity has no
        known loss and goes the exact way.
        """
        if day_start != self._quiet_base:
            self._quiet_base = day_start
            self._quiet_above = _quiet_band(day_start, None, self._limit)[0]
        if self._quiet_above < equity < _INF:
            self._equity, self._day_start = equity, day_start
            return True
        return False

    def on_resume(self, ts: int) -> None:
        super().on_resume(ts)
        self.flatten_requested = False

    def figures(self) -> dict[str, object]:
        return {"value": self._loss(self._equity, self._day_start), "limit": self._limit,
                "unit": "fraction of day-start equity"}

    @staticmethod
    def _loss(equity: float, day_start: float) -> float | None:
        """Today's loss as a fraction of the day's start; None when either figure is unusable."""
        if not (math.isfinite(equity) and math.isfinite(day_start) and day_start > 0):
            return None
        return 1.0 - equity / day_start

    def _assess(self, ts: int, equity: float, day_start: float) -> float | None:
        """Today's loss (None when unknown); at the limit, requests HALTED (and a flatten when configured)."""
        self._equity, self._day_start = equity, day_start
        loss = self._loss(equity, day_start)
        if loss is not None and loss >= self._limit:
            self._request(TradingState.HALTED, "daily_loss", ts, self._message(loss))
            self.flatten_requested = self.flatten_requested or self._flatten
        return loss

    def _message(self, loss: float) -> str:
        return f"daily loss {loss:.2%} >= limit {self._limit:.2%}"


class DrawdownLayer(_Layer):
    """Tiers of drawdown from peak equity, from a warning to a flatten, halt and model rollback.

    * warn: an event; orders pass.
    * halve: entries aim at ``halve_factor`` of their target position.
    * reducing: entries are blocked ("drawdown_reducing") and REDUCING is requested.
    * halt: every order but a flatten-marked exit gets HALT ("drawdown_halt");
      HALTED is requested with ``flatten_requested`` and ``rollback_to_gold``.

    The tier follows the drawdown both ways; requests and flags stay latched
    until ``on_resume`` so a brief recovery cannot quietly undo a halt.

    ``on_equity`` runs on every bar. While the mark stays inside the equity
    band of the current tier (computed once per peak and tier) it only
    remembers the mark; ``drawdown`` is computed from it on demand.
    """

    name = "drawdown"
    TIERS = ("none", "warn", "halve", "reducing", "halt")

    def __init__(self, cfg: DrawdownConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._cfg = cfg
        # ascending (the config validates it), so the tier is a bisection
        self._bounds = (cfg.warn, cfg.halve, cfg.reducing, cfg.halt)
        self.tier = 0
        self.flatten_requested = False
        self.rollback_to_gold = False
        # the last (equity, peak) judged; NaN until the first mark
        self._equity = math.nan
        self._peak = math.nan
        # equity strictly between these (for _band_peak) surely stays in the current tier
        self._band_peak = math.nan
        self._band_low = math.nan
        self._band_high = math.nan

    @property
    def drawdown(self) -> float | None:
        """The drawdown from peak at the last mark; None when equity or peak is unusable."""
        equity, peak = self._equity, self._peak
        if not (math.isfinite(equity) and math.isfinite(peak) and peak > 0):
            return None
        return max(1.0 - equity / peak, 0.0)

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        tier = self._tier(ctx.ts, ctx.equity, ctx.peak_equity)
        if tier is None:
            if not _increases(request, ctx):
                return ALLOW
            return _deny_entry(self.name, "equity_unknown", f"equity {ctx.equity}, peak {ctx.peak_equity}",
                               request, ctx, self.lot_size)
        if tier == 4:
            if _is_flatten(request, ctx):
                return ALLOW
            return halt(self.name, "drawdown_halt", self._message())
        if tier < 2 or not _increases(request, ctx):
            return ALLOW
        if tier == 3:
            return _deny_entry(self.name, "drawdown_reducing", self._message(), request, ctx, self.lot_size)
        return _scale_entry(self.name, "drawdown_halve", self._message(), request, ctx, self._cfg.halve_factor,
                            self.lot_size)

    def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None:
        self._tier(ts, equity, peak_equity)

    def on_resume(self, ts: int) -> None:
        super().on_resume(ts)
        self.flatten_requested = self.rollback_to_gold = False

    def figures(self) -> dict[str, object]:
        return {"value": self.drawdown, "limit": self._cfg.halt, "tier": self.TIERS[self.tier],
                "tiers": dict(zip(self.TIERS[1:], self._bounds, strict=True)),
                "flatten_requested": self.flatten_requested, "rollback_to_gold": self.rollback_to_gold}

    def _tier(self, ts: int, equity: float, peak: float) -> int | None:
        """The tier at this mark: the current one while the mark stays inside its band, else ``_assess``'s.

        Inside the band ``_assess`` would find the same tier and change nothing but the remembered mark,
        so only the mark is remembered (on every bar, and on every order).
        """
        if peak == self._band_peak and self._band_low < equity < self._band_high:
            self._equity, self._peak = equity, peak
            return self.tier
        return self._assess(ts, equity, peak)

    def _assess(self, ts: int, equity: float, peak: float) -> int | None:
        self._equity, self._peak = equity, peak
        drawdown = self.drawdown
        if drawdown is None:
            return None
        tier = bisect_right(self._bounds, drawdown)  # how many tier bounds the drawdown has reached
        previous, self.tier = self.tier, tier
        if tier > previous:
            self._enter(tier, ts)
        if tier != previous or peak != self._band_peak:
            bounds = self._bounds
            self._band_peak = peak
            self._band_low, self._band_high = _quiet_band(peak, bounds[tier - 1] if tier else None,
                                                          bounds[tier] if tier < len(bounds) else None)
        return tier

    def _enter(self, tier: int, ts: int) -> None:
        reason = f"drawdown_{self.TIERS[tier]}"
        message = self._message()
        if tier == 4:
            self.flatten_requested = True
            self.rollback_to_gold = self.rollback_to_gold or self._cfg.rollback_to_gold
            self._request(TradingState.HALTED, reason, ts, message)
        elif tier == 3:
            self._request(TradingState.REDUCING, reason, ts, message)
        else:
            self._emit(ts, reason, message)

    def _message(self) -> str:
        return f"drawdown {self.drawdown:.2%} from peak: tier {self.TIERS[self.tier]}"


class VolatilityRegimeLayer(_Layer):
    """Smaller (or no) entries while volatility is extreme: stops slip and fills gap there."""

    name = "volatility_regime"

    def __init__(self, cfg: VolatilityRegimeConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._cfg = cfg
        self._last_z: float | None = None

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        z = ctx.extras.get(VOLATILITY_Z)
        if not isinstance(z, _NUMBER) or not _increases(request, ctx):
            return ALLOW
        self._last_z = float(z)
        if not z > self._cfg.z_threshold:
            return ALLOW
        message = f"volatility z {z:.2f} > {self._cfg.z_threshold}"
        if self._cfg.action == "block":
            return _deny_entry(self.name, "volatility_regime", message, request, ctx, self.lot_size)
        return _scale_entry(self.name, "volatility_regime", message, request, ctx, self._cfg.factor,
                            self.lot_size)

    def figures(self) -> dict[str, object]:
        return {"value": self._last_z, "limit": self._cfg.z_threshold, "action": self._cfg.action}


class LossStreakLayer(_Layer):
    """After several losing round trips in a row, stop entering for a while: the regime may have changed."""

    name = "loss_streak"

    def __init__(self, cfg: LossStreakConfig, lot_size: Decimal = _ONE) -> None:
        super().__init__(lot_size)
        self._max = cfg.max_consecutive
        self._cooldown = cfg.cooldown_seconds
        self.streak = 0
        self.blocked_until: int | None = None

    def record_trade(self, pnl: float | Decimal, ts: int) -> None:
        if pnl >= 0:
            self.streak = 0
            return
        self.streak += 1
        if self.streak >= self._max:
            self.blocked_until = ts + self._cooldown
            self._emit(ts, "loss_streak", f"{self.streak} losing round trips in a row; entries blocked "
                       f"for {self._cooldown} s")
            self.streak = 0

    def on_trade_closed(self, symbol: str, pnl: float | Decimal, ts: int) -> None:
        self.record_trade(pnl, ts)

    def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
        until = self.blocked_until
        if until is None or ctx.ts >= until or not _increases(request, ctx):
            return ALLOW
        return _deny_entry(self.name, "loss_streak", f"losing streak: entries blocked for {until - ctx.ts} s",
                           request, ctx, self.lot_size)

    def figures(self) -> dict[str, object]:
        return {"value": self.streak, "limit": self._max, "blocked_until": self.blocked_until}


# ---------------------------------------------------------------------------- assembly


def build_layers(cfg: RiskConfig, *, bar_seconds: int = 3600) -> list[RiskLayer]:
    """The enabled layers in the order the governor must run them.

    ``bar_seconds`` converts the cooldown's bars into seconds (the data
    config's bar length). Disabled layers, and the drip without a
    deployment start, are left out rather than built idle.
    """
    lot = cfg.lot_size
    layers: list[RiskLayer] = [
        KillSwitchLayer(cfg.kill_switch, lot),
        FillGuardLayer(lot),
        ReconciliationLayer(lot),
    ]
    if cfg.window.enabled:
        layers.append(TradingWindowLayer(cfg.window, lot))
    if cfg.drip.enabled and cfg.drip.deployment_start is not None and cfg.drip.schedule:
        layers.append(DripLayer(int(cfg.drip.deployment_start.timestamp()), cfg.drip.schedule, lot))
    optional: list[tuple[bool, RiskLayer]] = [
        (cfg.stale_data.enabled, StaleDataLayer(cfg.stale_data, lot)),
        (cfg.confidence.enabled, ConfidenceLayer(cfg.confidence, lot)),
        (cfg.cooldown.enabled, CooldownLayer(cfg.cooldown, bar_seconds, lot)),
        (cfg.trade_count.enabled, TradeCountLayer(cfg.trade_count, lot)),
        (cfg.submit_rate.enabled, SubmitRateLayer(cfg.submit_rate, lot)),
        (cfg.position.enabled, PositionLimitLayer(cfg.position, lot)),
        (cfg.gross_exposure.enabled, GrossExposureLayer(cfg.gross_exposure, lot)),
        (cfg.fat_finger.enabled, FatFingerLayer(cfg.fat_finger, lot)),
        (cfg.daily_loss.enabled, DailyLossLimitLayer(cfg.daily_loss, lot)),
        (cfg.drawdown.enabled, DrawdownLayer(cfg.drawdown, lot)),
        (cfg.volatility.enabled, VolatilityRegimeLayer(cfg.volatility, lot)),
        (cfg.loss_streak.enabled, LossStreakLayer(cfg.loss_streak, lot)),
    ]
    layers.extend(layer for enabled, layer in optional if enabled)
    return layers


class RiskHooks:
    """Fans the daemon's observations out to every layer that takes them, and gathers their requests.

    Works with any layer list: a hook is called on each layer that has it, so
    layers written elsewhere need only the hooks they use.
    """

    def __init__(self, layers: Iterable[RiskLayer]) -> None:
        self.layers = list(layers)
        self._cache: dict[str, list[Any]] = {}
        self._equity_watchers = self._having("on_equity")  # looked up once: ``equity`` runs on every bar

    def order_sent(self, symbol: str, ts: int) -> None:
        for layer in self._having("on_order_sent"):
            layer.on_order_sent(symbol, ts)

    def fill(self, fill: Fill, order_quantity: Decimal, filled_quantity: Decimal) -> None:
        for layer in self._having("on_fill"):
            layer.on_fill(fill, order_quantity, filled_quantity)

    def trade_closed(self, symbol: str, pnl: float | Decimal, ts: int) -> None:
        for layer in self._having("on_trade_closed"):
            layer.on_trade_closed(symbol, pnl, ts)

    def equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> bool:
        """Feed one equity mark. True when an equity-watching layer now asks for a state or a flatten.

        Runs on every bar, so it touches only the layers that watch equity; those keep their own
        per-bar fast path (see ``DailyLossLimitLayer`` and ``DrawdownLayer``).
        """
        asks = False
        for layer in self._equity_watchers:
            layer.on_equity(ts, equity, day_start_equity, peak_equity)
            if getattr(layer, "requested_state", None) is not None or getattr(layer, "flatten_requested", False):
                asks = True
        return asks

    def validate_fill(self, order_qty: Decimal, cumulative_filled: Decimal, *, ts: int = 0,
                      client_order_id: str = "") -> Verdict:
        verdict = ALLOW
        for layer in self._having("validate_fill"):
            result = layer.validate_fill(order_qty, cumulative_filled, ts=ts, client_order_id=client_order_id)
            verdict = result if result.kind is not _ALLOW_KIND else verdict
        return verdict

    def reconciliation_mismatch(self, detail: str, ts: int = 0) -> Verdict:
        verdict = halt("reconciliation", "reconciliation_mismatch", detail)
        for layer in self._having("report_mismatch"):
            verdict = layer.report_mismatch(detail, ts)
        return verdict

    def resumed(self, ts: int) -> None:
        for layer in self._having("on_resume"):
            layer.on_resume(ts)

    def requested_state(self) -> tuple[TradingState, str] | None:
        """The strictest state any layer asks for, with ``layer:reason``."""
        best: tuple[TradingState, str] | None = None
        for layer in self.layers:
            state = getattr(layer, "requested_state", None)
            if state is None or (best is not None and _SEVERITY[state] <= _SEVERITY[best[0]]):
                continue
            best = (state, f"{layer.name}:{getattr(layer, 'requested_reason', '')}")
        return best

    def apply(self, governor: RiskGovernor) -> TradingState | None:
        """Escalate the governor to the strictest requested state; never loosens it. Returns the new state."""
        requested = self.requested_state()
        if requested is None:
            return None
        state, reason = requested
        current = governor.state
        if _SEVERITY[state] <= _SEVERITY[current]:
            return None
        governor.transition(state, reason)
        return state

    @property
    def flatten_requested(self) -> bool:
        return any(getattr(layer, "flatten_requested", False) for layer in self.layers)

    @property
    def rollback_to_gold(self) -> bool:
        return any(getattr(layer, "rollback_to_gold", False) for layer in self.layers)

    def drain_events(self) -> list[RiskEvent]:
        events: list[RiskEvent] = []
        for layer in self._having("drain_events"):
            events.extend(layer.drain_events())
        return events

    def _having(self, hook: str) -> list[Any]:
        """Layers that really implement ``hook``: the inherited no-ops are skipped, computed once.

        ``equity`` runs on every bar, so calling a dozen empty methods there would be
        most of the hook's cost.
        """
        cached = self._cache.get(hook)
        if cached is None:
            base = getattr(_Layer, hook, None)
            always = hook in ("on_resume", "drain_events")  # the base versions do real work
            cached = [
                layer
                for layer in self.layers
                if callable(getattr(layer, hook, None)) and (always or getattr(type(layer), hook, None) is not base)
            ]
            self._cache[hook] = cached
        return cached
