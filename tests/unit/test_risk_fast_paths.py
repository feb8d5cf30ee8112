"""The per-bar and per-order fast paths give exactly what the full computations give.

Each fast path (the equity bands of the daily-loss and drawdown layers, on
the per-bar hook and in ``check``, the float pre-checks of the position caps
and the order notional, the sign test of ``reduces_exposure``, the
portfolio's cached equity) is compared with the exact computation it
stands in for, over generated inputs.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from brokers.base import Fill, OrderRequest, Side
from daemon.portfolio import Portfolio
from risk import layers as risk_layers
from risk.config import DailyLossConfig, DrawdownConfig, FatFingerConfig, GrossExposureConfig, PositionLimitConfig
from risk.governor import RiskContext, TradingState, Verdict, VerdictKind
from risk.layers import DailyLossLimitLayer, DrawdownLayer, FatFingerLayer, GrossExposureLayer, PositionLimitLayer

D = Decimal


def _ctx(position: Decimal, *, price: float = 1.0, equity: float = 1.0, gross: float = 0.0) -> RiskContext:
    return RiskContext(TradingState.ACTIVE, 0, position, price, equity, equity, equity, gross_exposure=gross)


def test_reduces_exposure_matches_the_definition() -> None:
    """|position + signed qty| < |position| without crossing zero, for every sign and size combination."""
    values = [D(v) for v in ("-300", "-150", "-100", "-0.5", "0", "0.5", "1", "100", "100.0", "150", "300")]
    for position, quantity, side in itertools.product(values, values, (Side.BUY, Side.SELL)):
        request = OrderRequest("X", side, quantity)
        after = position + request.signed_quantity
        expected = abs(after) < abs(position) and (after == 0 or (after > 0) == (position > 0))
        assert _ctx(position).reduces_exposure(request) is expected, (position, quantity, side)


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


def _observable(layer: DailyLossLimitLayer | DrawdownLayer) -> tuple[object, ...]:
    return (
        layer.requested_state,
        layer.requested_reason,
        layer.flatten_requested,
        getattr(layer, "tier", None),
        getattr(layer, "rollback_to_gold", None),
        layer.figures(),
        [(e.ts, e.reason, e.message, e.level) for e in layer.drain_events()],
    )


@settings(max_examples=200, deadline=None)
@given(marks=_marks, peaks=st.lists(st.sampled_from([100_000.0, 100_500.0, 99_000.0, math.nan]), min_size=1))
def test_equity_bands_change_nothing_but_the_cost(marks: list[float], peaks: list[float]) -> None:
    """``on_equity`` (banded) and ``_assess`` (always exact) leave every layer in the same state."""
    cfg = DrawdownConfig(warn=0.01, halve=0.015, reducing=0.02, halt=0.025)
    banded = [DailyLossLimitLayer(DailyLossConfig(limit=0.018, flatten=True)), DrawdownLayer(cfg)]
    exact = [DailyLossLimitLayer(DailyLossConfig(limit=0.018, flatten=True)), DrawdownLayer(cfg)]
    for ts, equity in enumerate(marks):
        base = peaks[ts % len(peaks)]
        for fast, slow in zip(banded, exact, strict=True):
            fast.on_equity(ts, equity, base, base)
            slow._assess(ts, equity, base)
            assert _observable(fast) == _observable(slow), (ts, equity, base)
        if ts % 17 == 16:  # an operator resume clears the latches, not the bands
            for layer in (*banded, *exact):
                layer.on_resume(ts)


def _cap_verdicts(request: OrderRequest, ctx: RiskContext, position_cfg: PositionLimitConfig,
                  gross_cfg: GrossExposureConfig) -> tuple[list[object], list[object]]:
    """The position and gross layers' verdicts with the float pre-check, and with it switched off."""
    fast = [PositionLimitLayer(position_cfg).check(request, ctx), GrossExposureLayer(gross_cfg).check(request, ctx)]
    original = risk_layers._surely_fits
    risk_layers._surely_fits = lambda *_args: False  # type: ignore[assignment]
    try:
        slow = [PositionLimitLayer(position_cfg).check(request, ctx), GrossExposureLayer(gross_cfg).check(request, ctx)]
    finally:
        risk_layers._surely_fits = original
    return fast, slow


@settings(max_examples=300, deadline=None)
@given(
    position=st.integers(-200_000, 200_000),
    quantity=st.integers(1, 400_000),
    side=st.sampled_from([Side.BUY, Side.SELL]),
    price=st.one_of(st.floats(0.5, 2.0), st.sampled_from([math.nan, 0.0, 1.0])),
    max_units=st.one_of(st.none(), st.integers(1, 200_000)),
    max_notional=st.one_of(st.none(), st.integers(1, 300_000)),
    leverage=st.one_of(st.none(), st.floats(0.05, 3.0)),
)
def test_cap_precheck_never_changes_a_verdict(
    position: int,
    quantity: int,
    side: Side,
    price: float,
    max_units: int | None,
    max_notional: int | None,
    leverage: float | None,
) -> None:
    """The float pre-check of the position and gross caps only skips work: verdicts equal the exact path's."""
    request = OrderRequest("EURUSD", side, D(quantity))
    ctx = _ctx(D(position), price=price, equity=100_000.0, gross=abs(position) * price if price == price else 0.0)
    fast, slow = _cap_verdicts(request, ctx, PositionLimitConfig(max_units=max_units, max_notional=max_notional),
                               GrossExposureConfig(max_notional=max_notional, max_leverage=leverage))
    assert fast == slow


def test_cap_precheck_at_the_cap() -> None:
    """Orders ending one unit inside, exactly at and one unit past each cap (where a margin error would show)."""
    for cap, position, side, overshoot in itertools.product(
        (100, 10_000, 150_000), (0, 50, -50, 10_000, -10_000), (Side.BUY, Side.SELL), (-1, 0, 1)
    ):
        direction = 1 if side is Side.BUY else -1
        after = direction * (cap + overshoot)
        quantity = (after - position) * direction
        if quantity <= 0:
            continue
        request = OrderRequest("EURUSD", side, D(quantity))
        for price in (1.0, 1.1):
            ctx = _ctx(D(position), price=price, equity=100_000.0, gross=abs(position) * price)
            fast, slow = _cap_verdicts(request, ctx, PositionLimitConfig(max_units=D(cap), max_notional=None),
                                       GrossExposureConfig(max_notional=D(cap) * D(repr(price)), max_leverage=None))
            assert fast == slow, (cap, position, side, overshoot, price)


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


def _exact_order_notional_verdict(layer: FatFingerLayer, request: OrderRequest, ctx: RiskContext) -> object:
    """The fat-finger verdict with the float pre-check switched off."""
    layer._quiet_notional = math.nan  # the pre-check never passes: every order goes the exact way
    return layer.check(request, ctx)


@settings(max_examples=300, deadline=None)
@given(
    quantity=st.one_of(st.integers(1, 200_000).map(D), st.decimals("0.001", "1e6", places=3),
                       st.sampled_from([D("1e-200"), D("1e200"), D("47169.8113")])),
    price=st.one_of(st.floats(1e-6, 1e6), st.sampled_from([1.06, 50_000 / 47169.8113, 5e-324, 1e-200, 1e200])),
    cap=st.sampled_from([D(50_000), D("50000.01"), D("1e-200"), D(1)]),
)
def test_order_notional_precheck_never_changes_a_verdict(quantity: Decimal, price: float, cap: Decimal) -> None:
    cfg = FatFingerConfig(max_order_notional=cap)
    request = OrderRequest("X", Side.BUY, quantity)
    ctx = _ctx(D(0), price=price)
    fast, exact = FatFingerLayer(cfg), FatFingerLayer(cfg)
    assert fast.check(request, ctx) == _exact_order_notional_verdict(exact, request, ctx)
    assert fast.last_notional == exact.last_notional == quantity * D(repr(price))
    assert fast.figures() == exact.figures()


def test_order_notional_precheck_at_the_cap() -> None:
    """A notional equal to the cap passes, one a hair above it is cut: neither is decided by floats."""
    layer = FatFingerLayer(FatFingerConfig(max_order_notional=D(50_000)))
    assert layer.check(OrderRequest("X", Side.BUY, D(50_000)), _ctx(D(0), price=1.0)).kind is VerdictKind.ALLOW
    verdict = layer.check(OrderRequest("X", Side.BUY, D("50000.001")), _ctx(D(0), price=1.0))
    assert verdict.kind is VerdictKind.BLOCK and verdict.reason == "order_notional"


@settings(max_examples=200, deadline=None)
@given(marks=_marks, peaks=st.lists(st.sampled_from([100_000.0, 100_500.0, 99_000.0, math.nan]), min_size=1),
       exits=st.lists(st.booleans(), min_size=1))
def test_checks_on_the_equity_bands_give_the_exact_verdicts(marks: list[float], peaks: list[float],
                                                             exits: list[bool]) -> None:
    """``check`` of the daily-loss and drawdown layers, on and off their bands, against ``_assess`` every time."""
    entry, exit_ = OrderRequest("X", Side.BUY, D(100)), OrderRequest("X", Side.SELL, D(50))
    for make in (lambda: DailyLossLimitLayer(DailyLossConfig()), lambda: DrawdownLayer(DrawdownConfig())):
        fast, exact = make(), make()
        exact._surely_below_limit = lambda equity, day_start: False  # type: ignore[method-assign]
        exact._tier = exact._assess  # type: ignore[method-assign]
        for i, equity in enumerate(marks):
            peak = peaks[i % len(peaks)]
            ctx = RiskContext(TradingState.ACTIVE, i, D(100), 1.0, equity, 100_000.0, peak)
            request = exit_ if exits[i % len(exits)] else entry
            fast.on_equity(i, equity, 100_000.0, peak)
            exact.on_equity(i, equity, 100_000.0, peak)
            assert fast.check(request, ctx) == exact.check(request, ctx)
            assert _observable(fast) == _observable(exact)
            assert fast.figures() == exact.figures()
            assert fast.drain_events() == exact.drain_events()


def test_hand_written_inits_match_the_dataclass_fields() -> None:
    """Verdict and RiskContext build by slot setters; they must still be the frozen dataclasses they declare."""
    verdict = Verdict(VerdictKind.RESIZE, "l", "r", "m", D(3))
    assert [getattr(verdict, f.name) for f in dataclasses.fields(Verdict)] == [VerdictKind.RESIZE, "l", "r", "m", D(3)]
    assert Verdict(VerdictKind.ALLOW) == Verdict(VerdictKind.ALLOW, "", "", "", None)
    assert dataclasses.replace(verdict, quantity=D(1)).quantity == D(1)
    ctx = RiskContext(TradingState.ACTIVE, 1, D(2), 3.0, 4.0, 5.0, 6.0)
    assert (ctx.gross_exposure, ctx.confidence, ctx.extras) == (0.0, None, {})
    assert ctx.extras is not RiskContext(TradingState.ACTIVE, 1, D(2), 3.0, 4.0, 5.0, 6.0).extras
    assert dataclasses.replace(ctx, ts=9) == RiskContext(TradingState.ACTIVE, 9, D(2), 3.0, 4.0, 5.0, 6.0, 0.0, None,
                                                         {})
    for frozen, name in ((verdict, "quantity"), (ctx, "ts")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(frozen, name, 0)
