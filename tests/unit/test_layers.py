"""Each risk layer: the state or order that triggers it and the exact verdict it gives."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokers.base import OrderRequest, OrderType, Side
from risk.config import (
    DailyLossConfig,
    FatFingerConfig,
    KillSwitchConfig,
    PositionLimitConfig,
)
from risk.governor import RiskContext, RiskGovernor, TradingState, Verdict, VerdictKind
from risk.layers import (
    FLATTEN,
    DailyLossLimitLayer,
    FatFingerLayer,
    KillSwitchLayer,
    PositionLimitLayer,
    RiskHooks,
)

D = Decimal
ACTIVE, REDUCING, HALTED, PAUSED = (
    TradingState.ACTIVE,
    TradingState.REDUCING,
    TradingState.HALTED,
    TradingState.PAUSED,
)
ALLOW, RESIZE, BLOCK, HALT = VerdictKind.ALLOW, VerdictKind.RESIZE, VerdictKind.BLOCK, VerdictKind.HALT


def utc(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


T0 = utc(2017, 3, 1, 12)  # a Wednesday noon: every market is open


def ctx(
    position: int | str | Decimal = 0,
    *,
    state: TradingState = ACTIVE,
    ts: int = T0,
    price: float = 1.0,
    equity: float = 100_000.0,
    day_start: float = 100_000.0,
    peak: float = 100_000.0,
    gross: float | None = None,
    confidence: float | None = None,
    **extras: object,
) -> RiskContext:
    pos = D(position)
    return RiskContext(
        state=state,
        ts=ts,
        position=pos,
        last_price=price,
        equity=equity,
        day_start_equity=day_start,
        peak_equity=peak,
        gross_exposure=float(abs(pos)) * price if gross is None else gross,
        confidence=confidence,
        extras=dict(extras),
    )


def buy(qty: int | str, symbol: str = "EURUSD", limit: str | None = None) -> OrderRequest:
    return _order(Side.BUY, qty, symbol, limit)


def sell(qty: int | str, symbol: str = "EURUSD", limit: str | None = None) -> OrderRequest:
    return _order(Side.SELL, qty, symbol, limit)


def _order(side: Side, qty: int | str, symbol: str, limit: str | None) -> OrderRequest:
    if limit is None:
        return OrderRequest(symbol, side, D(qty))
    return OrderRequest(symbol, side, D(qty), OrderType.LIMIT, D(limit))


def expect(verdict: Verdict, kind: VerdictKind, reason: str = "", quantity: int | str | None = None) -> None:
    assert verdict.kind is kind, verdict
    assert verdict.reason == reason, verdict
    if kind is RESIZE:
        assert verdict.quantity == D(quantity), verdict  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- kill switch


class TestKillSwitch:
    layer = KillSwitchLayer(KillSwitchConfig())

    def test_active_allows_everything(self) -> None:
        expect(self.layer.check(buy(10), ctx()), ALLOW)
        expect(self.layer.check(sell(10), ctx(5)), ALLOW)

    @pytest.mark.parametrize(("state", "reason"), [(PAUSED, "paused"), (HALTED, "halted")])
    def test_paused_and_halted_block_entries_and_exits(self, state: TradingState, reason: str) -> None:
        expect(self.layer.check(buy(10), ctx(state=state)), BLOCK, reason)
        expect(self.layer.check(sell(10), ctx(10, state=state)), BLOCK, reason)

    @pytest.mark.parametrize("state", [PAUSED, HALTED, REDUCING])
    def test_flatten_marked_exit_passes_any_state(self, state: TradingState) -> None:
        expect(self.layer.check(sell(10), ctx(10, state=state, flatten=True)), ALLOW)
        expect(self.layer.check(buy(4), ctx(-10, state=state, flatten=True)), ALLOW)

    def test_flatten_mark_does_not_let_an_entry_through(self) -> None:
        expect(self.layer.check(buy(10), ctx(state=HALTED, flatten=True)), BLOCK, "halted")
        expect(self.layer.check(sell(20), ctx(10, state=HALTED, flatten=True)), BLOCK, "halted")  # a flip

    def test_flatten_can_be_disallowed(self) -> None:
        strict = KillSwitchLayer(KillSwitchConfig(allow_flatten=False))
        expect(strict.check(sell(10), ctx(10, state=HALTED, flatten=True)), BLOCK, "halted")

    def test_reducing_allows_only_reductions(self) -> None:
        expect(self.layer.check(buy(10), ctx(state=REDUCING)), BLOCK, "reducing_only")
        expect(self.layer.check(buy(10), ctx(5, state=REDUCING)), BLOCK, "reducing_only")
        expect(self.layer.check(sell(3), ctx(5, state=REDUCING)), ALLOW)
        expect(self.layer.check(sell(5), ctx(5, state=REDUCING)), ALLOW)

    def test_reducing_cuts_a_flip_to_its_closing_part(self) -> None:
        expect(self.layer.check(sell(300), ctx(100, state=REDUCING)), RESIZE, "reducing_only", 100)
        expect(self.layer.check(buy(300), ctx(-100, state=REDUCING)), RESIZE, "reducing_only", 100)

    def test_figures_show_the_last_state(self) -> None:
        layer = KillSwitchLayer(KillSwitchConfig())
        layer.check(buy(1), ctx(state=PAUSED))
        assert layer.figures()["value"] == "paused"


# ---------------------------------------------------------------------------- max position


class TestPositionLimit:
    units = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=None))

    def test_entry_within_the_cap_passes(self) -> None:
        expect(self.units.check(buy(1000), ctx()), ALLOW)
        expect(self.units.check(buy(300), ctx(600)), ALLOW)
        expect(self.units.check(sell(1000), ctx()), ALLOW)

    def test_entry_is_resized_to_what_fits(self) -> None:
        expect(self.units.check(buy(1500), ctx()), RESIZE, "max_position_units", 1000)
        expect(self.units.check(buy(600), ctx(600)), RESIZE, "max_position_units", 400)
        expect(self.units.check(sell(700), ctx(-600)), RESIZE, "max_position_units", 400)

    def test_nothing_fits_blocks(self) -> None:
        expect(self.units.check(buy(1), ctx(1000)), BLOCK, "max_position_units")
        expect(self.units.check(buy(1), ctx(1200)), BLOCK, "max_position_units")  # already over (limit lowered)

    def test_exits_always_pass(self) -> None:
        expect(self.units.check(sell(500), ctx(1200)), ALLOW)
        expect(self.units.check(sell(1200), ctx(1200)), ALLOW)

    def test_flip_keeps_the_close_and_caps_the_new_side(self) -> None:
        expect(self.units.check(sell(2000), ctx(500)), RESIZE, "max_position_units", 1500)
        expect(self.units.check(sell(1400), ctx(500)), ALLOW)  # -900 fits

    def test_notional_cap_binds_when_tighter(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(100_000), max_notional=D(10_000)))
        expect(layer.check(buy(8000), ctx(price=2.0)), RESIZE, "max_position_notional", 5000)
        expect(layer.check(buy(8000), ctx(price=0.5)), ALLOW)  # 4,000 notional

    def test_units_cap_binds_when_tighter(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=D(10_000)))
        expect(layer.check(buy(8000), ctx(price=2.0)), RESIZE, "max_position_units", 1000)

    def test_resize_is_rounded_down_to_the_lot(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=None, max_notional=D(10_000)), D(100))
        expect(layer.check(buy(5000), ctx(price=3.0)), RESIZE, "max_position_notional", 3300)

    def test_no_price_blocks_entries_when_notional_is_capped(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=D(10_000)))
        expect(layer.check(buy(10), ctx(price=0.0)), BLOCK, "no_price")
        expect(layer.check(buy(10), ctx(price=float("nan"))), BLOCK, "no_price")
        expect(layer.check(sell(10), ctx(10, price=0.0)), ALLOW)

    def test_figures(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=D(5000)))
        layer.check(buy(10), ctx(200, price=2.0))
        figures = layer.figures()
        assert figures["value"] == D(200)
        assert figures["limit"] == D(1000)
        assert figures["notional"] == 400.0

    @given(
        position=st.integers(-5000, 5000),
        quantity=st.integers(1, 20_000),
        side=st.sampled_from(Side),
        max_units=st.integers(1, 5000),
        max_notional=st.integers(1, 50_000),
        price=st.floats(0.01, 100.0),
        lot=st.sampled_from([1, 10, 100]),
    )
    def test_cap_never_exceeded_after_resize(
        self, position: int, quantity: int, side: Side, max_units: int, max_notional: int, price: float, lot: int
    ) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(max_units), max_notional=D(max_notional)), D(lot))
        governor = RiskGovernor([layer])
        request = OrderRequest("X", side, D(quantity))
        context = ctx(position, price=price)
        verdict = governor.check(request, context)
        cap = min(D(max_units), D(max_notional) / D(repr(price)))
        if context.reduces_exposure(request):
            assert verdict.kind is ALLOW and verdict.quantity == D(quantity)
            return
        flip = position != 0 and (position + quantity * side.sign) * position < 0
        if not verdict.allowed:
            assert not flip  # a flip keeps at least its closing part
            assert verdict.reason in ("max_position_units", "max_position_notional")
            assert cap - abs(position) < lot  # nothing fits
            return
        assert verdict.quantity is not None and 0 < verdict.quantity <= quantity
        after = position + verdict.quantity * side.sign
        assert abs(after) <= cap
        if verdict.kind is RESIZE:
            assert (abs(after) if flip else verdict.quantity) % lot == 0


# ---------------------------------------------------------------------------- fat finger


class TestFatFinger:
    layer = FatFingerLayer(FatFingerConfig(max_order_notional=D(50_000), price_band=0.02))

    def test_order_within_notional_cap_passes(self) -> None:
        expect(self.layer.check(buy(40_000), ctx(price=1.1)), ALLOW)  # 44,000

    def test_order_over_notional_cap_is_blocked(self) -> None:
        expect(self.layer.check(buy(50_000), ctx(price=1.1)), BLOCK, "order_notional")  # 55,000
        expect(self.layer.check(sell(50_000), ctx(price=1.1)), BLOCK, "order_notional")

    def test_limit_price_values_a_limit_order(self) -> None:
        expect(self.layer.check(buy(50_000, limit="1.01"), ctx(price=1.0)), BLOCK, "order_notional")
        expect(self.layer.check(buy(49_000, limit="1.01"), ctx(price=1.0)), ALLOW)

    def test_exits_are_exempt_from_the_notional_cap(self) -> None:
        expect(self.layer.check(sell(100_000), ctx(100_000, price=1.1)), ALLOW)

    def test_oversized_flip_keeps_only_its_close(self) -> None:
        expect(self.layer.check(sell(60_000), ctx(10_000, price=1.1)), RESIZE, "order_notional", 10_000)

    def test_price_band(self) -> None:
        expect(self.layer.check(buy(10, limit="1.019"), ctx(price=1.0)), ALLOW)
        expect(self.layer.check(buy(10, limit="1.021"), ctx(price=1.0)), BLOCK, "price_band")
        expect(self.layer.check(buy(10, limit="0.97"), ctx(price=1.0)), BLOCK, "price_band")

    def test_price_band_judges_exits_too(self) -> None:
        expect(self.layer.check(sell(10, limit="0.5"), ctx(10, price=1.0)), BLOCK, "price_band")

    def test_market_orders_have_no_band_and_missing_price_blocks(self) -> None:
        expect(self.layer.check(buy(10), ctx(price=float("nan"))), BLOCK, "no_price")
        expect(self.layer.check(buy(10, limit="1.0"), ctx(price=0.0)), BLOCK, "price_band")

    def test_figures(self) -> None:
        layer = FatFingerLayer(FatFingerConfig())
        layer.check(buy(1000), ctx(price=2.0))
        assert layer.figures() == {"value": D(2000), "limit": D(50_000), "price_band": 0.02}


# ---------------------------------------------------------------------------- daily loss


class TestDailyLoss:
    def test_within_the_limit_allows(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02))
        expect(layer.check(buy(10), ctx(equity=98_500.0)), ALLOW)
        assert layer.requested_state is None

    def test_at_the_limit_entries_halt_and_exits_pass(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02))
        expect(layer.check(buy(10), ctx(equity=97_900.0)), HALT, "daily_loss")
        expect(layer.check(sell(10), ctx(5, equity=97_900.0)), HALT, "daily_loss")  # a flip adds exposure
        expect(layer.check(sell(5), ctx(5, equity=97_900.0)), ALLOW)
        assert layer.requested_state is HALTED
        assert not layer.flatten_requested
        events = layer.drain_events()
        assert [(e.reason, e.level) for e in events] == [("daily_loss", "critical")]  # once, not per order
        assert layer.figures()["value"] == pytest.approx(0.021)

    def test_judged_on_equity_not_on_trades(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02))
        # Yesterday's peak does not matter; only today's start does.
        expect(layer.check(buy(10), ctx(equity=97_000.0, day_start=98_000.0, peak=110_000.0)), ALLOW)
        expect(layer.check(buy(10), ctx(equity=96_000.0, day_start=98_000.0)), HALT, "daily_loss")

    def test_flatten_option_requests_a_flatten(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02, flatten=True))
        layer.on_equity(T0, 97_000.0, 100_000.0, 100_000.0)
        assert layer.flatten_requested and layer.requested_state is HALTED

    def test_unknown_day_start_blocks_entries_only(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig())
        expect(layer.check(buy(10), ctx(day_start=0.0)), BLOCK, "equity_unknown")
        expect(layer.check(buy(10), ctx(equity=float("nan"))), BLOCK, "equity_unknown")
        expect(layer.check(sell(10), ctx(10, day_start=0.0)), ALLOW)

    def test_resume_clears_the_request(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02, flatten=True))
        layer.on_equity(T0, 97_000.0, 100_000.0, 100_000.0)
        layer.on_resume(T0 + 86_400)
        assert layer.requested_state is None and not layer.flatten_requested
        expect(layer.check(buy(10), ctx(ts=T0 + 86_400, equity=97_000.0, day_start=97_000.0)), ALLOW)

    def test_governor_halts_and_only_a_flatten_gets_out(self) -> None:
        governor = RiskGovernor(
            [KillSwitchLayer(KillSwitchConfig()), DailyLossLimitLayer(DailyLossConfig(limit=0.02))]
        )
        transitions: list[tuple[TradingState, TradingState, str]] = []
        governor.on_transition(lambda a, b, why: transitions.append((a, b, why)))
        losing = {"equity": 97_000.0}
        expect(governor.check(buy(10), ctx(**losing)), HALT, "daily_loss")
        assert governor.state is HALTED
        assert transitions == [(ACTIVE, HALTED, "daily_loss:daily_loss")]
        expect(governor.check(buy(10), ctx(state=governor.state, **losing)), BLOCK, "halted")
        expect(governor.check(sell(10), ctx(10, state=governor.state, **losing)), BLOCK, "halted")
        exit_verdict = governor.check(sell(10), ctx(10, state=governor.state, **{FLATTEN: True}, **losing))
        assert exit_verdict.kind is ALLOW and exit_verdict.quantity == D(10)

    def test_equity_hook_halts_without_an_order(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02))
        governor = RiskGovernor([KillSwitchLayer(KillSwitchConfig()), layer])
        hooks = RiskHooks(governor.layers)
        hooks.equity(T0, 99_000.0, 100_000.0, 100_000.0)
        assert hooks.apply(governor) is None and governor.state is ACTIVE
        hooks.equity(T0 + 60, 97_999.0, 100_000.0, 100_000.0)
        assert hooks.apply(governor) is HALTED
        assert governor.state is HALTED
        assert hooks.requested_state() == (HALTED, "daily_loss:daily_loss")
