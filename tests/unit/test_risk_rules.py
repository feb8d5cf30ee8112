"""The risk rules stated plainly, checked over generated inputs.

Each test states a rule in its simplest form (the drawdown tier is the number
of bounds reached, an allowed entry never ends past a cap, ...) and checks
the layers against it. The portfolio's cached equity, which the risk context
is built from, is checked against the from-scratch sum here too.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from bisect import bisect_right
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.base import Fill, OrderRequest, Side
from daemon.portfolio import Portfolio
from risk.config import DailyLossConfig, DrawdownConfig, FatFingerConfig, GrossExposureConfig, PositionLimitConfig
from risk.governor import RiskContext, RiskGovernor, TradingState, Verdict, VerdictKind
from risk.layers import (
    DailyLossLimitLayer,
    DrawdownLayer,
    FatFingerLayer,
    GrossExposureLayer,
    Hook,
    Layer,
    PositionLimitLayer,
    RiskHooks,
)

D = Decimal


def _ctx(position: Decimal, *, price: float = 1.0, equity: float = 1.0, gross: float = 0.0) -> RiskContext:
    return RiskContext(TradingState.ACTIVE, 0, position, price, equity, equity, equity, gross_exposure=gross)


def test_reduces_and_increases_exposure_by_their_definitions() -> None:
    """Reduces: |position + signed qty| < |position| without crossing zero. Increases: a positive quantity that
    does not reduce. Every sign and size combination."""
    values = [D(v) for v in ("-300", "-150", "-100", "-0.5", "0", "0.5", "1", "100", "100.0", "150", "300")]
    for position, quantity, side in itertools.product(values, values, (Side.BUY, Side.SELL)):
        request = OrderRequest("X", side, quantity)
        after = position + (quantity if side is Side.BUY else -quantity)
        reduces = position != 0 and abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))
        assert _ctx(position).reduces_exposure(request) is reduces, (position, quantity, side)
        assert _ctx(position).increases_exposure(request) is (quantity > 0 and not reduces), (position, quantity, side)


# Equity marks around the tier bounds, with the odd non-finite value the layers must survive.
_marks = st.lists(
    st.one_of(
        st.floats(min_value=90_000, max_value=101_000, allow_nan=False),
        st.sampled_from([100_000 * (1 - b) for b in (0.01, 0.015, 0.018, 0.02, 0.025)]),
        st.sampled_from([math.nan, math.inf, -math.inf, 0.0]),
    ),
    min_size=1,
    max_size=60,
)
_bases = st.lists(st.sampled_from([100_000.0, 100_500.0, 99_000.0, math.nan]), min_size=1)


def _fraction_below(equity: float, base: float) -> float | None:
    if not (math.isfinite(equity) and math.isfinite(base) and base > 0):
        return None
    return 1.0 - equity / base


@settings(max_examples=200, deadline=None)
@given(marks=_marks, bases=_bases)
def test_daily_loss_requests_a_halt_once_the_limit_is_reached(marks: list[float], bases: list[float]) -> None:
    """HALTED (and the flatten) is requested from the first mark whose loss reaches the limit until a resume,
    with one critical event."""
    limit = 0.018
    layer = DailyLossLimitLayer(DailyLossConfig(limit=limit, flatten=True))
    tripped = False
    for ts, equity in enumerate(marks):
        base = bases[ts % len(bases)]
        layer.on_equity(ts, equity, base, base)
        loss = _fraction_below(equity, base)
        newly = not tripped and loss is not None and loss >= limit
        tripped = tripped or newly
        assert (layer.requested_state is TradingState.HALTED) is tripped
        assert layer.flatten_requested is tripped
        assert [(e.reason, e.level, e.ts) for e in layer.drain_events()] == ([("daily_loss", "critical", ts)]
                                                                             if newly else [])
        assert layer.figures()["value"] == loss
        if ts % 17 == 16:
            layer.on_resume(ts)
            tripped = False


@settings(max_examples=200, deadline=None)
@given(marks=_marks, peaks=_bases)
def test_drawdown_tier_is_the_number_of_bounds_reached(marks: list[float], peaks: list[float]) -> None:
    """The tier follows the drawdown both ways. Each climb into warn or halve emits a warning; a climb into
    reducing or halt requests its state, with a critical event, unless as strict a request is already latched
    (until a resume)."""
    cfg = DrawdownConfig(warn=0.01, halve=0.015, reducing=0.02, halt=0.025)
    bounds = (cfg.warn, cfg.halve, cfg.reducing, cfg.halt)
    requests = {3: TradingState.REDUCING, 4: TradingState.HALTED}
    layer = DrawdownLayer(cfg)
    tier, latched = 0, 0
    for ts, equity in enumerate(marks):
        peak = peaks[ts % len(peaks)]
        layer.on_equity(ts, equity, peak, peak)
        drawdown = _fraction_below(equity, peak)
        previous, tier = tier, (tier if drawdown is None else bisect_right(bounds, max(drawdown, 0.0)))
        assert layer.tier == tier
        events = [(e.reason, e.level) for e in layer.drain_events()]
        reason = f"drawdown_{DrawdownLayer.TIERS[tier]}"
        if tier <= previous:
            assert events == []
        elif tier < 3:
            assert events == [(reason, "warning")]
        elif tier > latched:
            assert events == [(reason, "critical")]
            latched = tier
        else:
            assert events == []
        assert layer.requested_state is requests.get(latched)
        assert layer.flatten_requested is layer.rollback_to_gold is (latched == 4)
        if ts % 17 == 16:
            layer.on_resume(ts)
            latched = 0


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(-200_000, 200_000),
    quantity=st.integers(1, 400_000),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    price=st.one_of(st.floats(0.5, 2.0), st.sampled_from([1.0, 1.1])),
    max_units=st.one_of(st.none(), st.integers(1, 200_000)),
    max_notional=st.one_of(st.none(), st.integers(1, 300_000)),
    leverage=st.one_of(st.none(), st.floats(0.05, 3.0)),
)
def test_an_allowed_entry_never_ends_past_a_cap(
    position: int,
    quantity: int,
    side: Side,
    price: float,
    max_units: int | None,
    max_notional: int | None,
    leverage: float | None,
) -> None:
    """After the position and gross layers, |position| fits the position cap and the book fits the gross cap,
    unless the order only closes (a flip keeps its closing part)."""
    request = OrderRequest("EURUSD", side, D(quantity))
    ctx = _ctx(D(position), price=price, equity=100_000.0, gross=abs(position) * price)
    position_layer = PositionLimitLayer(PositionLimitConfig(max_units=max_units, max_notional=max_notional))
    gross_layer = GrossExposureLayer(GrossExposureConfig(max_notional=max_notional, max_leverage=leverage))
    verdict = RiskGovernor([position_layer, gross_layer]).check(request, ctx)
    if not verdict.allowed:
        return
    assert verdict.quantity is not None
    after = abs(D(position) + (verdict.quantity if side is Side.BUY else -verdict.quantity))
    if after <= abs(position) and (after == 0 or ctx.reduces_exposure(request)):
        return
    price_d = D(repr(price))
    if max_notional is not None:
        assert after <= max(D(max_notional) / price_d, abs(D(position)))
    if max_units is not None:
        assert after <= max(D(max_units), abs(D(position)))
    limit = gross_layer.limit(100_000.0)
    if limit is not None and after > abs(position):
        assert float(after) * price <= limit * (1 + 1e-9)


@settings(max_examples=300, deadline=None)
@given(
    quantity=st.one_of(st.integers(1, 200_000).map(D), st.decimals("0.001", "1e6", places=3),
                       st.sampled_from([D("1e-200"), D("47169.8113")])),
    price=st.one_of(st.floats(1e-6, 1e6), st.sampled_from([1.06, 50_000 / 47169.8113, 1e-200])),
    cap=st.sampled_from([D(50_000), D("50000.01"), D("1e-200"), D(1)]),
)
def test_order_notional_is_quantity_times_the_price_as_written(quantity: Decimal, price: float, cap: Decimal) -> None:
    """Notional = quantity x Decimal(repr(price)); an entry passes exactly when it is within the cap."""
    layer = FatFingerLayer(FatFingerConfig(max_order_notional=cap))
    verdict = layer.check(OrderRequest("X", Side.BUY, quantity), _ctx(D(0), price=price))
    notional = quantity * D(repr(price))
    assert layer.last_notional == notional == layer.figures()["value"]
    assert (verdict.kind is VerdictKind.ALLOW) is (notional <= cap)
    assert verdict.kind in (VerdictKind.ALLOW, VerdictKind.BLOCK)
    assert verdict.reason == ("" if notional <= cap else "order_notional")


def test_order_notional_at_the_cap() -> None:
    """A notional equal to the cap passes, one a hair above it is cut."""
    layer = FatFingerLayer(FatFingerConfig(max_order_notional=D(50_000)))
    assert layer.check(OrderRequest("X", Side.BUY, D(50_000)), _ctx(D(0), price=1.0)).kind is VerdictKind.ALLOW
    verdict = layer.check(OrderRequest("X", Side.BUY, D("50000.001")), _ctx(D(0), price=1.0))
    assert verdict.kind is VerdictKind.BLOCK and verdict.reason == "order_notional"


def test_verdict_and_context_are_frozen_dataclasses() -> None:
    verdict = Verdict(VerdictKind.RESIZE, "l", "r", "m", D(3))
    assert Verdict(VerdictKind.ALLOW) == Verdict(VerdictKind.ALLOW, "", "", "", None)
    assert dataclasses.replace(verdict, quantity=D(1)).quantity == D(1)
    ctx = RiskContext(TradingState.ACTIVE, 1, D(2), 3.0, 4.0, 5.0, 6.0)
    assert (ctx.gross_exposure, ctx.confidence, ctx.extras) == (0.0, None, {})
    assert ctx.extras is not RiskContext(TradingState.ACTIVE, 1, D(2), 3.0, 4.0, 5.0, 6.0).extras
    for frozen, name in ((verdict, "quantity"), (ctx, "ts")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(frozen, name, 0)


def test_a_hook_must_be_declared_exactly_when_implemented() -> None:
    """``Layer.hooks`` is checked against the overridden hook methods when the class is defined."""
    with pytest.raises(TypeError, match="on_equity is implemented but EQUITY is not in its hooks"):

        class Undeclared(Layer):
            def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
                raise NotImplementedError

            def on_equity(self, ts: int, equity: float, day_start_equity: float, peak_equity: float) -> None:
                return None

    with pytest.raises(TypeError, match="on_order_sent is not implemented but ORDER_SENT is in its hooks"):

        class Unimplemented(Layer):
            hooks = frozenset({Hook.ORDER_SENT})

            def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
                raise NotImplementedError


def test_hooks_refuse_a_layer_that_cannot_take_them() -> None:
    class Foreign:
        name = "foreign"

    with pytest.raises(TypeError, match=r"not a risk\.layers\.Layer"):
        RiskHooks([Foreign()])  # type: ignore[list-item]


@settings(max_examples=100, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.sampled_from(["mark", "fill", "cash"]),
            st.sampled_from(["EURUSD", "GBPUSD"]),
            st.integers(-30_000, 30_000),
            st.floats(0.8, 1.6),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_cached_equity_equals_the_full_sum(steps: list[tuple[str, str, int, float]]) -> None:
    """``equity()`` and ``unrealized()`` after any mix of marks, fills and cash are the from-scratch sums."""
    book = Portfolio(D(100_000))
    for n, (kind, symbol, quantity, price) in enumerate(steps):
        if kind == "mark":
            book.mark(symbol, price, n * 3600)
        elif kind == "fill" and quantity:
            side = Side.BUY if quantity > 0 else Side.SELL
            book.apply_fill(Fill(f"f{n}", f"c{n}", symbol, side, D(abs(quantity)), D(repr(price)), D("0.1"), n))
        elif kind == "cash":
            book.set_cash(book.cash + D(quantity))
        holdings = book._holdings.values()
        expected = float(book.cash)
        for h in holdings:
            if h.quantity and not math.isnan(h.last_price):
                expected += float(h.quantity) * h.last_price
        assert book.equity() == expected
        assert book.unrealized() == sum(h.unrealized() for h in holdings)
        assert type(book.unrealized()) is type(sum(h.unrealized() for h in holdings))
