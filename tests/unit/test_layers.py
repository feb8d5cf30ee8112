"""Each risk layer: the state or order that triggers it and the exact verdict it gives."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from brokers.base import Fill, OrderRequest, OrderType, Side
from risk.config import (
    ConfidenceConfig,
    CooldownConfig,
    DailyLossConfig,
    DrawdownConfig,
    DripConfig,
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
from risk.governor import RiskContext, RiskGovernor, Scope, TradingState, Verdict, VerdictKind
from risk.layers import (
    FLATTEN,
    ConfidenceLayer,
    CooldownLayer,
    DailyLossLimitLayer,
    DrawdownLayer,
    DripLayer,
    FatFingerLayer,
    FillGuardLayer,
    GrossExposureLayer,
    KillSwitchLayer,
    Layer,
    LossStreakLayer,
    PositionLimitLayer,
    ReconciliationLayer,
    RiskHooks,
    StaleDataLayer,
    SubmitRateLayer,
    TradeCountLayer,
    TradingWindowLayer,
    VolatilityRegimeLayer,
    build_layers,
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


def judge(layer: Layer, request: OrderRequest, context: RiskContext) -> Verdict:
    """The layer's verdict as the governor gives it: an entries-only layer never sees an exit."""
    return RiskGovernor([layer]).check(request, context)


def expect(verdict: Verdict, kind: VerdictKind, reason: str = "", quantity: int | str | None = None) -> None:
    assert verdict.kind is kind, verdict
    assert verdict.reason == reason, verdict
    if kind is RESIZE:
        assert verdict.quantity == D(quantity), verdict  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- kill switch


class TestKillSwitch:
    layer = KillSwitchLayer(KillSwitchConfig())

    def test_active_allows_everything(self) -> None:
        expect(judge(self.layer, buy(10), ctx()), ALLOW)
        expect(judge(self.layer, sell(10), ctx(5)), ALLOW)

    @pytest.mark.parametrize(("state", "reason"), [(PAUSED, "paused"), (HALTED, "halted")])
    def test_paused_and_halted_block_entries_and_exits(self, state: TradingState, reason: str) -> None:
        expect(judge(self.layer, buy(10), ctx(state=state)), BLOCK, reason)
        expect(judge(self.layer, sell(10), ctx(10, state=state)), BLOCK, reason)

    @pytest.mark.parametrize("state", [PAUSED, HALTED, REDUCING])
    def test_flatten_marked_exit_passes_any_state(self, state: TradingState) -> None:
        expect(judge(self.layer, sell(10), ctx(10, state=state, flatten=True)), ALLOW)
        expect(judge(self.layer, buy(4), ctx(-10, state=state, flatten=True)), ALLOW)

    def test_flatten_mark_does_not_let_an_entry_through(self) -> None:
        expect(judge(self.layer, buy(10), ctx(state=HALTED, flatten=True)), BLOCK, "halted")
        expect(judge(self.layer, sell(20), ctx(10, state=HALTED, flatten=True)), BLOCK, "halted")  # a flip

    def test_flatten_can_be_disallowed(self) -> None:
        strict = KillSwitchLayer(KillSwitchConfig(allow_flatten=False))
        expect(judge(strict, sell(10), ctx(10, state=HALTED, flatten=True)), BLOCK, "halted")

    def test_reducing_allows_only_reductions(self) -> None:
        expect(judge(self.layer, buy(10), ctx(state=REDUCING)), BLOCK, "reducing_only")
        expect(judge(self.layer, buy(10), ctx(5, state=REDUCING)), BLOCK, "reducing_only")
        expect(judge(self.layer, sell(3), ctx(5, state=REDUCING)), ALLOW)
        expect(judge(self.layer, sell(5), ctx(5, state=REDUCING)), ALLOW)

    def test_reducing_cuts_a_flip_to_its_closing_part(self) -> None:
        expect(judge(self.layer, sell(300), ctx(100, state=REDUCING)), RESIZE, "reducing_only", 100)
        expect(judge(self.layer, buy(300), ctx(-100, state=REDUCING)), RESIZE, "reducing_only", 100)

    def test_figures_show_the_last_state(self) -> None:
        layer = KillSwitchLayer(KillSwitchConfig())
        judge(layer, buy(1), ctx(state=PAUSED))
        assert layer.figures()["value"] == "paused"


# ---------------------------------------------------------------------------- max position


class TestPositionLimit:
    units = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=None))

    def test_entry_within_the_cap_passes(self) -> None:
        expect(judge(self.units, buy(1000), ctx()), ALLOW)
        expect(judge(self.units, buy(300), ctx(600)), ALLOW)
        expect(judge(self.units, sell(1000), ctx()), ALLOW)

    def test_entry_is_resized_to_what_fits(self) -> None:
        expect(judge(self.units, buy(1500), ctx()), RESIZE, "max_position_units", 1000)
        expect(judge(self.units, buy(600), ctx(600)), RESIZE, "max_position_units", 400)
        expect(judge(self.units, sell(700), ctx(-600)), RESIZE, "max_position_units", 400)

    def test_nothing_fits_blocks(self) -> None:
        expect(judge(self.units, buy(1), ctx(1000)), BLOCK, "max_position_units")
        expect(judge(self.units, buy(1), ctx(1200)), BLOCK, "max_position_units")  # already over (limit lowered)

    def test_exits_always_pass(self) -> None:
        expect(judge(self.units, sell(500), ctx(1200)), ALLOW)
        expect(judge(self.units, sell(1200), ctx(1200)), ALLOW)

    def test_flip_keeps_the_close_and_caps_the_new_side(self) -> None:
        expect(judge(self.units, sell(2000), ctx(500)), RESIZE, "max_position_units", 1500)
        expect(judge(self.units, sell(1400), ctx(500)), ALLOW)  # -900 fits

    def test_notional_cap_binds_when_tighter(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(100_000), max_notional=D(10_000)))
        expect(judge(layer, buy(8000), ctx(price=2.0)), RESIZE, "max_position_notional", 5000)
        expect(judge(layer, buy(8000), ctx(price=0.5)), ALLOW)  # 4,000 notional

    def test_units_cap_binds_when_tighter(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=D(10_000)))
        expect(judge(layer, buy(8000), ctx(price=2.0)), RESIZE, "max_position_units", 1000)

    def test_resize_is_rounded_down_to_the_lot(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=None, max_notional=D(10_000)), D(100))
        expect(judge(layer, buy(5000), ctx(price=3.0)), RESIZE, "max_position_notional", 3300)

    def test_no_price_blocks_entries_when_notional_is_capped(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=D(10_000)))
        expect(judge(layer, buy(10), ctx(price=0.0)), BLOCK, "no_price")
        expect(judge(layer, buy(10), ctx(price=float("nan"))), BLOCK, "no_price")
        expect(judge(layer, sell(10), ctx(10, price=0.0)), ALLOW)

    def test_figures(self) -> None:
        layer = PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=D(5000)))
        judge(layer, buy(10), ctx(200, price=2.0))
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
        expect(judge(self.layer, buy(40_000), ctx(price=1.1)), ALLOW)  # 44,000

    def test_order_over_notional_cap_is_blocked(self) -> None:
        expect(judge(self.layer, buy(50_000), ctx(price=1.1)), BLOCK, "order_notional")  # 55,000
        expect(judge(self.layer, sell(50_000), ctx(price=1.1)), BLOCK, "order_notional")

    def test_limit_price_values_a_limit_order(self) -> None:
        expect(judge(self.layer, buy(50_000, limit="1.01"), ctx(price=1.0)), BLOCK, "order_notional")
        expect(judge(self.layer, buy(49_000, limit="1.01"), ctx(price=1.0)), ALLOW)

    def test_exits_are_exempt_from_the_notional_cap(self) -> None:
        expect(judge(self.layer, sell(100_000), ctx(100_000, price=1.1)), ALLOW)

    def test_oversized_flip_keeps_only_its_close(self) -> None:
        expect(judge(self.layer, sell(60_000), ctx(10_000, price=1.1)), RESIZE, "order_notional", 10_000)

    def test_price_band(self) -> None:
        expect(judge(self.layer, buy(10, limit="1.019"), ctx(price=1.0)), ALLOW)
        expect(judge(self.layer, buy(10, limit="1.021"), ctx(price=1.0)), BLOCK, "price_band")
        expect(judge(self.layer, buy(10, limit="0.97"), ctx(price=1.0)), BLOCK, "price_band")

    def test_price_band_judges_exits_too(self) -> None:
        expect(judge(self.layer, sell(10, limit="0.5"), ctx(10, price=1.0)), BLOCK, "price_band")

    def test_market_orders_have_no_band_and_missing_price_blocks(self) -> None:
        expect(judge(self.layer, buy(10), ctx(price=float("nan"))), BLOCK, "no_price")
        expect(judge(self.layer, buy(10, limit="1.0"), ctx(price=0.0)), BLOCK, "price_band")

    def test_figures(self) -> None:
        layer = FatFingerLayer(FatFingerConfig())
        judge(layer, buy(1000), ctx(price=2.0))
        assert layer.figures() == {"value": D(2000), "limit": D(50_000), "price_band": 0.02}


# ---------------------------------------------------------------------------- daily loss


class TestDailyLoss:
    def test_within_the_limit_allows(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02))
        expect(judge(layer, buy(10), ctx(equity=98_500.0)), ALLOW)
        assert layer.requested_state is None

    def test_at_the_limit_entries_halt_and_exits_pass(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02))
        expect(judge(layer, buy(10), ctx(equity=97_900.0)), HALT, "daily_loss")
        expect(judge(layer, sell(10), ctx(5, equity=97_900.0)), HALT, "daily_loss")  # a flip adds exposure
        expect(judge(layer, sell(5), ctx(5, equity=97_900.0)), ALLOW)
        assert layer.requested_state is HALTED
        assert not layer.flatten_requested
        events = layer.drain_events()
        assert [(e.reason, e.level) for e in events] == [("daily_loss", "critical")]  # once, not per order
        assert layer.figures()["value"] == pytest.approx(0.021)

    def test_judged_on_equity_not_on_trades(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02))
        # Yesterday's peak does not matter; only today's start does.
        expect(judge(layer, buy(10), ctx(equity=97_000.0, day_start=98_000.0, peak=110_000.0)), ALLOW)
        expect(judge(layer, buy(10), ctx(equity=96_000.0, day_start=98_000.0)), HALT, "daily_loss")

    def test_flatten_option_requests_a_flatten(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02, flatten=True))
        layer.on_equity(T0, 97_000.0, 100_000.0, 100_000.0)
        assert layer.flatten_requested and layer.requested_state is HALTED

    def test_unknown_day_start_blocks_entries_only(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig())
        expect(judge(layer, buy(10), ctx(day_start=0.0)), BLOCK, "equity_unknown")
        expect(judge(layer, buy(10), ctx(equity=float("nan"))), BLOCK, "equity_unknown")
        expect(judge(layer, sell(10), ctx(10, day_start=0.0)), ALLOW)

    def test_resume_clears_the_request(self) -> None:
        layer = DailyLossLimitLayer(DailyLossConfig(limit=0.02, flatten=True))
        layer.on_equity(T0, 97_000.0, 100_000.0, 100_000.0)
        layer.on_resume(T0 + 86_400)
        assert layer.requested_state is None and not layer.flatten_requested
        expect(judge(layer, buy(10), ctx(ts=T0 + 86_400, equity=97_000.0, day_start=97_000.0)), ALLOW)

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


# ---------------------------------------------------------------------------- latches


class TestFillGuard:
    def test_fill_within_the_order_passes(self) -> None:
        layer = FillGuardLayer()
        expect(layer.validate_fill(D(10), D(4)), ALLOW)
        expect(layer.validate_fill(D(10), D(10)), ALLOW)
        assert not layer.tripped

    def test_overfill_halts_and_latches_until_resume(self) -> None:
        layer = FillGuardLayer()
        verdict = layer.validate_fill(D(10), D(11), ts=T0, client_order_id="c-1")
        expect(verdict, HALT, "overfill")
        assert verdict.message == "order c-1 filled 11 of 10"
        assert layer.requested_state is HALTED
        expect(judge(layer, sell(10), ctx(10, flatten=True)), HALT, "overfill")  # books untrusted: no flatten
        layer.on_resume(T0 + 60)
        assert layer.requested_state is None
        expect(judge(layer, buy(1), ctx()), ALLOW)

    def test_on_fill_hook_and_governor(self) -> None:
        layer = FillGuardLayer()
        governor = RiskGovernor([KillSwitchLayer(KillSwitchConfig()), layer])
        fill = Fill("f-1", "c-9", "EURUSD", Side.BUY, D(6), D("1.1"), D(0), T0)
        RiskHooks(governor.layers).fill(fill, D(10), D(12))
        assert layer.tripped
        expect(governor.check(buy(1), ctx()), HALT, "overfill")
        assert governor.state is HALTED


class TestReconciliation:
    def test_mismatch_halts_until_resume(self) -> None:
        layer = ReconciliationLayer()
        governor = RiskGovernor([KillSwitchLayer(KillSwitchConfig()), layer])
        hooks = RiskHooks(governor.layers)
        expect(hooks.reconciliation_mismatch("EURUSD broker 100 books 0", T0), HALT, "reconciliation_mismatch")
        assert hooks.apply(governor) is HALTED
        expect(judge(layer, buy(1), ctx()), HALT, "reconciliation_mismatch")
        assert layer.figures()["detail"] == "EURUSD broker 100 books 0"
        hooks.resumed(T0 + 60)
        governor.transition(ACTIVE, "operator resume")
        expect(governor.check(buy(1), ctx()), ALLOW)


# ---------------------------------------------------------------------------- trading window and drip


class TestFxWindow:
    layer = TradingWindowLayer(TradingWindowConfig(calendar=None, entry_cutoff_minutes=15))

    @pytest.mark.parametrize(
        ("when", "kind", "reason"),
        [
            (utc(2017, 3, 3, 20, 0), ALLOW, ""),  # Friday, an hour before the close
            (utc(2017, 3, 3, 20, 45), ALLOW, ""),  # exactly at the cut-off
            (utc(2017, 3, 3, 20, 50), BLOCK, "entry_cutoff"),
            (utc(2017, 3, 3, 21, 0), BLOCK, "market_closed"),
            (utc(2017, 3, 4, 12, 0), BLOCK, "market_closed"),  # Saturday
            (utc(2017, 3, 5, 20, 59), BLOCK, "market_closed"),
            (utc(2017, 3, 5, 21, 0), ALLOW, ""),  # Sunday open
            (utc(2017, 3, 6, 0, 0), ALLOW, ""),
        ],
    )
    def test_entries(self, when: int, kind: VerdictKind, reason: str) -> None:
        expect(judge(self.layer, buy(10), ctx(ts=when)), kind, reason)

    def test_exits_pass_on_the_weekend_and_flips_keep_the_close(self) -> None:
        saturday = utc(2017, 3, 4, 12, 0)
        expect(judge(self.layer, sell(10), ctx(10, ts=saturday)), ALLOW)
        expect(judge(self.layer, sell(30), ctx(10, ts=saturday)), RESIZE, "market_closed", 10)

    def test_figures(self) -> None:
        judge(self.layer, buy(10), ctx(ts=utc(2017, 3, 3, 20, 0)))
        assert self.layer.figures()["value"] == 60
        assert self.layer.figures()["calendar"] == "FX24x5"


@pytest.fixture(scope="module")
def nyse() -> TradingWindowLayer:
    return TradingWindowLayer(TradingWindowConfig(calendar="XNYS", entry_cutoff_minutes=15))


class TestExchangeWindow:
    @pytest.mark.parametrize(
        ("when", "kind", "reason"),
        [
            (utc(2017, 7, 5, 14, 0), ALLOW, ""),  # 10:00 New York
            (utc(2017, 7, 5, 13, 0), BLOCK, "market_closed"),  # before the 13:30 UTC open
            (utc(2017, 7, 5, 19, 50), BLOCK, "entry_cutoff"),  # 10 min before the 20:00 UTC close
            (utc(2017, 7, 4, 15, 0), BLOCK, "market_closed"),  # Independence Day
            (utc(2017, 7, 3, 16, 0), ALLOW, ""),  # early close at 17:00 UTC: an hour left
            (utc(2017, 7, 3, 16, 50), BLOCK, "entry_cutoff"),
            (utc(2017, 7, 3, 18, 0), BLOCK, "market_closed"),  # a normal day would still be open
            (utc(1990, 1, 3, 15, 0), BLOCK, "calendar_range"),
        ],
    )
    def test_entries(self, nyse: TradingWindowLayer, when: int, kind: VerdictKind, reason: str) -> None:
        expect(judge(nyse, buy(10), ctx(ts=when)), kind, reason)

    def test_exits_pass_on_a_holiday(self, nyse: TradingWindowLayer) -> None:
        expect(judge(nyse, sell(10), ctx(10, ts=utc(2017, 7, 4, 15, 0))), ALLOW)


class TestDrip:
    start = datetime(2017, 3, 1, tzinfo=UTC)
    layer = DripLayer(int(start.timestamp()), [0.25, 0.5, 0.75])

    @pytest.mark.parametrize(
        ("day", "quantity"), [(-1, 250), (0, 250), (1, 500), (2, 750)]
    )
    def test_schedule_scales_entries(self, day: int, quantity: int) -> None:
        when = utc(2017, 3, 1, 12) + day * 86_400
        expect(judge(self.layer, buy(1000), ctx(ts=when)), RESIZE, "drip_size", quantity)

    def test_full_size_after_the_schedule(self) -> None:
        expect(judge(self.layer, buy(1000), ctx(ts=utc(2017, 3, 4, 0))), ALLOW)

    def test_scales_the_target_not_each_order(self) -> None:
        day2 = utc(2017, 3, 2, 12)
        expect(judge(self.layer, buy(750), ctx(250, ts=day2)), RESIZE, "drip_size", 250)  # 1000 -> 500
        expect(judge(self.layer, buy(500), ctx(500, ts=day2)), BLOCK, "drip_size")
        expect(judge(self.layer, sell(500), ctx(500, ts=day2)), ALLOW)

    def test_built_from_config(self) -> None:
        cfg = RiskConfig(drip=DripConfig(deployment_start=self.start, schedule=[0.5]))
        layer = next(x for x in build_layers(cfg) if x.name == "drip")
        expect(judge(layer, buy(1000), ctx(ts=utc(2017, 3, 1, 1))), RESIZE, "drip_size", 500)


# ---------------------------------------------------------------------------- data and model


class TestStaleData:
    layer = StaleDataLayer(StaleDataConfig(max_age_seconds=300))

    def test_old_bar_blocks_entries(self) -> None:
        expect(judge(self.layer, buy(10), ctx(bar_ts=T0 - 300)), ALLOW)
        expect(judge(self.layer, buy(10), ctx(bar_ts=T0 - 301)), BLOCK, "stale_data")
        assert self.layer.figures()["value"] == 301

    def test_exits_and_unknown_bar_time_pass(self) -> None:
        expect(judge(self.layer, sell(10), ctx(10, bar_ts=T0 - 3600)), ALLOW)
        expect(judge(self.layer, buy(10), ctx()), ALLOW)


class TestConfidence:
    layer = ConfidenceLayer(ConfidenceConfig(min_confidence=0.35))

    @pytest.mark.parametrize(
        ("confidence", "kind", "reason"),
        [(None, ALLOW, ""), (0.35, ALLOW, ""), (0.9, ALLOW, ""), (0.34, BLOCK, "low_confidence"),
         (float("nan"), BLOCK, "low_confidence")],
    )
    def test_entries(self, confidence: float | None, kind: VerdictKind, reason: str) -> None:
        expect(judge(self.layer, buy(10), ctx(confidence=confidence)), kind, reason)

    def test_exits_pass(self) -> None:
        expect(judge(self.layer, sell(10), ctx(10, confidence=0.1)), ALLOW)


# ---------------------------------------------------------------------------- activity


class TestCooldown:
    def test_entries_wait_for_the_cooldown(self) -> None:
        layer = CooldownLayer(CooldownConfig(bars=1, seconds=0), bar_seconds=3600)
        expect(judge(layer, buy(10), ctx()), ALLOW)
        layer.on_order_sent("EURUSD", T0)
        expect(judge(layer, buy(10), ctx(ts=T0 + 1800)), BLOCK, "cooldown")
        expect(judge(layer, buy(10, "GBPUSD"), ctx(ts=T0 + 1800)), ALLOW)
        expect(judge(layer, sell(10), ctx(10, ts=T0 + 1800)), ALLOW)
        expect(judge(layer, buy(10), ctx(ts=T0 + 3600)), ALLOW)

    def test_longer_of_bars_and_seconds(self) -> None:
        assert CooldownLayer(CooldownConfig(bars=1, seconds=7200), bar_seconds=3600).seconds == 7200
        assert CooldownLayer(CooldownConfig(bars=3, seconds=60), bar_seconds=900).seconds == 2700


class TestTradeCount:
    def test_limits_per_symbol_and_per_day(self) -> None:
        layer = TradeCountLayer(TradeCountConfig(max_per_symbol=2, max_total=3))
        layer.on_order_sent("EURUSD", T0)
        layer.on_order_sent("EURUSD", T0 + 60)
        expect(judge(layer, buy(10), ctx(ts=T0 + 120)), BLOCK, "max_trades_symbol")
        expect(judge(layer, buy(10, "GBPUSD"), ctx(ts=T0 + 120)), ALLOW)
        layer.on_order_sent("GBPUSD", T0 + 120)
        expect(judge(layer, buy(10, "GBPUSD"), ctx(ts=T0 + 180)), BLOCK, "max_trades_day")
        expect(judge(layer, sell(10), ctx(10, ts=T0 + 180)), ALLOW)
        assert layer.figures()["value"] == 3

    def test_counts_reset_at_the_utc_day(self) -> None:
        layer = TradeCountLayer(TradeCountConfig(max_per_symbol=1, max_total=1))
        layer.on_order_sent("EURUSD", utc(2017, 3, 1, 23, 59))
        expect(judge(layer, buy(10), ctx(ts=utc(2017, 3, 1, 23, 59, 59))), BLOCK, "max_trades_symbol")
        expect(judge(layer, buy(10), ctx(ts=utc(2017, 3, 2, 0, 0))), ALLOW)


class TestSubmitRate:
    def test_rolling_window(self) -> None:
        layer = SubmitRateLayer(SubmitRateConfig(max_orders=3, window_seconds=60))
        for offset in (0, 10, 20):
            expect(judge(layer, buy(1), ctx(ts=T0 + offset)), ALLOW)
            layer.on_order_sent("EURUSD", T0 + offset)
        expect(judge(layer, buy(1), ctx(ts=T0 + 30)), BLOCK, "submit_rate")
        expect(judge(layer, sell(1), ctx(5, ts=T0 + 30)), BLOCK, "submit_rate")  # exits too: a runaway loop
        expect(judge(layer, sell(5), ctx(5, ts=T0 + 30, flatten=True)), ALLOW)
        expect(judge(layer, buy(1), ctx(ts=T0 + 60)), ALLOW)  # the first order left the window
        assert layer.figures()["value"] == 2


# ---------------------------------------------------------------------------- gross exposure


class TestGrossExposure:
    def test_resized_to_the_leverage_cap(self) -> None:
        layer = GrossExposureLayer(GrossExposureConfig(max_notional=None, max_leverage=2.0))
        # 150,000 in other symbols, flat here, price 2: room for 25,000 units.
        expect(judge(layer, buy(40_000), ctx(price=2.0, gross=150_000.0)), RESIZE, "max_gross_exposure", 25_000)
        expect(judge(layer, buy(20_000), ctx(price=2.0, gross=150_000.0)), ALLOW)

    def test_counts_its_own_position_once(self) -> None:
        layer = GrossExposureLayer(GrossExposureConfig(max_notional=None, max_leverage=2.0))
        # 10,000 units here at 2 (20,000) + 150,000 elsewhere; long 10,000 may grow to 25,000.
        expect(judge(layer, buy(20_000), ctx(10_000, price=2.0, gross=170_000.0)), RESIZE, "max_gross_exposure",
               15_000)

    def test_absolute_cap_and_full_book(self) -> None:
        layer = GrossExposureLayer(GrossExposureConfig(max_notional=D(100_000), max_leverage=2.0))
        expect(judge(layer, buy(10), ctx(price=1.0, gross=100_000.0)), BLOCK, "max_gross_exposure")
        expect(judge(layer, sell(10), ctx(10, price=1.0, gross=100_000.0)), ALLOW)
        assert layer.figures() == {"value": 100_000.0, "limit": 100_000.0}


# ---------------------------------------------------------------------------- drawdown tiers


class TestDrawdown:
    # A losing equity series from a 100,000 peak, each mark a little past the next tier.
    SERIES = [
        (100_000.0, 0, "none"),
        (99_000.0, 60, "none"),
        (98_490.0, 120, "warn"),
        (98_190.0, 180, "halve"),
        (97_990.0, 240, "reducing"),
        (97_490.0, 300, "halt"),
    ]

    def test_each_tier_action_in_order(self) -> None:
        layer = DrawdownLayer(DrawdownConfig())
        seen: list[tuple[str, VerdictKind, str, Decimal | None]] = []
        for equity, offset, _tier in self.SERIES:
            layer.on_equity(T0 + offset, equity, 100_000.0, 100_000.0)
            verdict = layer.check(buy(1000), ctx(ts=T0 + offset, equity=equity))  # an every-order layer
            seen.append((layer.figures()["tier"], verdict.kind, verdict.reason, verdict.quantity))  # type: ignore[arg-type]
        assert seen == [
            ("none", ALLOW, "", None),
            ("none", ALLOW, "", None),
            ("warn", ALLOW, "", None),
            ("halve", RESIZE, "drawdown_halve", D(500)),
            ("reducing", BLOCK, "drawdown_reducing", None),
            ("halt", HALT, "drawdown_halt", None),
        ]
        events = layer.drain_events()
        assert [(e.reason, e.level, e.ts) for e in events] == [
            ("drawdown_warn", "warning", T0 + 120),
            ("drawdown_halve", "warning", T0 + 180),
            ("drawdown_reducing", "critical", T0 + 240),
            ("drawdown_halt", "critical", T0 + 300),
        ]
        assert layer.requested_state is HALTED
        assert layer.flatten_requested and layer.rollback_to_gold

    def test_exits_by_tier(self) -> None:
        layer = DrawdownLayer(DrawdownConfig())
        reducing, halted = ctx(1000, equity=97_990.0), ctx(1000, equity=97_490.0)
        expect(judge(layer, sell(1000), reducing), ALLOW)
        expect(judge(layer, sell(3000), reducing), RESIZE, "drawdown_reducing", 1000)
        expect(judge(layer, sell(1000), halted), HALT, "drawdown_halt")  # the daemon's flatten does the exit
        expect(judge(layer, sell(1000), ctx(1000, equity=97_490.0, flatten=True)), ALLOW)

    def test_replayed_through_the_default_governor(self) -> None:
        # The day started at 99,000 so the daily loss limit (2 % of the day) stays out of the way.
        governor = RiskGovernor(build_layers(RiskConfig()))
        hooks = RiskHooks(governor.layers)
        states, entries, exits = [], [], []
        for equity, offset, _tier in self.SERIES:
            now = T0 + offset
            hooks.equity(now, equity, 99_000.0, 100_000.0)
            hooks.apply(governor)
            states.append(governor.state)
            marks = {"ts": now, "equity": equity, "day_start": 99_000.0, "state": governor.state, "bar_ts": now}
            entries.append(governor.check(buy(1000), ctx(**marks)))
            exits.append(governor.check(sell(1000), ctx(1000, **marks, **{FLATTEN: True})))
        assert states == [ACTIVE, ACTIVE, ACTIVE, ACTIVE, REDUCING, HALTED]
        assert [(v.kind, v.layer, v.reason) for v in entries] == [
            (ALLOW, "", ""),
            (ALLOW, "", ""),
            (ALLOW, "", ""),
            (RESIZE, "drawdown", "drawdown_halve"),
            (BLOCK, "kill_switch", "reducing_only"),
            (BLOCK, "kill_switch", "halted"),
        ]
        assert entries[3].quantity == D(500)
        assert all(v.kind is ALLOW and v.quantity == D(1000) for v in exits)
        assert hooks.flatten_requested and hooks.rollback_to_gold
        assert [e.reason for e in hooks.drain_events()] == [
            "drawdown_warn", "drawdown_halve", "drawdown_reducing", "drawdown_halt"
        ]

    def test_a_fast_intraday_loss_halts_where_a_slow_one_reduces(self) -> None:
        # 2.01 % lost today: the daily loss limit's HALTED beats the drawdown tier's REDUCING.
        governor = RiskGovernor(build_layers(RiskConfig()))
        hooks = RiskHooks(governor.layers)
        hooks.equity(T0, 97_990.0, 100_000.0, 100_000.0)
        assert hooks.requested_state() == (HALTED, "daily_loss:daily_loss")
        assert hooks.apply(governor) is HALTED

    def test_halt_tier_halts_the_governor_from_an_order(self) -> None:
        governor = RiskGovernor(build_layers(RiskConfig()), state=REDUCING)
        verdict = governor.check(sell(1000), ctx(1000, state=REDUCING, equity=97_000.0, bar_ts=T0))
        expect(verdict, HALT, "drawdown_halt")
        assert governor.state is HALTED

    def test_recovery_lowers_the_tier_but_keeps_requests_until_resume(self) -> None:
        layer = DrawdownLayer(DrawdownConfig())
        layer.on_equity(T0, 97_900.0, 100_000.0, 100_000.0)
        layer.on_equity(T0 + 60, 99_900.0, 100_000.0, 100_000.0)
        assert layer.figures()["tier"] == "none"
        assert layer.requested_state is REDUCING
        expect(judge(layer, buy(10), ctx(equity=99_900.0)), ALLOW)
        layer.on_resume(T0 + 120)
        assert layer.requested_state is None

    def test_unknown_peak_blocks_entries(self) -> None:
        layer = DrawdownLayer(DrawdownConfig())
        expect(judge(layer, buy(10), ctx(peak=0.0)), BLOCK, "equity_unknown")
        expect(judge(layer, sell(10), ctx(10, peak=0.0)), ALLOW)


# ---------------------------------------------------------------------------- volatility and streaks


class TestVolatilityRegime:
    def test_resize_mode(self) -> None:
        layer = VolatilityRegimeLayer(VolatilityRegimeConfig(z_threshold=2.5, action="resize", factor=0.5))
        expect(judge(layer, buy(1000), ctx(volatility_z=3.0)), RESIZE, "volatility_regime", 500)
        expect(judge(layer, buy(1000), ctx(volatility_z=2.5)), ALLOW)
        expect(judge(layer, buy(1000), ctx()), ALLOW)
        expect(judge(layer, sell(1000), ctx(1000, volatility_z=9.0)), ALLOW)

    def test_block_mode(self) -> None:
        layer = VolatilityRegimeLayer(VolatilityRegimeConfig(z_threshold=2.5, action="block"))
        expect(judge(layer, buy(1000), ctx(volatility_z=3.0)), BLOCK, "volatility_regime")
        assert layer.figures()["value"] == 3.0


class TestLossStreak:
    def test_streak_blocks_entries_for_the_cooldown(self) -> None:
        layer = LossStreakLayer(LossStreakConfig(max_consecutive=3, cooldown_seconds=3600))
        layer.on_trade_closed("EURUSD", -10.0, T0)
        layer.on_trade_closed("GBPUSD", D("-5"), T0 + 1)
        expect(judge(layer, buy(10), ctx(ts=T0 + 2)), ALLOW)
        layer.record_trade(-1.0, T0 + 2)
        assert layer.blocked_until == T0 + 3602
        expect(judge(layer, buy(10), ctx(ts=T0 + 100)), BLOCK, "loss_streak")
        expect(judge(layer, sell(10), ctx(10, ts=T0 + 100)), ALLOW)
        expect(judge(layer, buy(10), ctx(ts=T0 + 3602)), ALLOW)
        assert [e.reason for e in layer.drain_events()] == ["loss_streak"]

    def test_a_win_resets_the_streak(self) -> None:
        layer = LossStreakLayer(LossStreakConfig(max_consecutive=2, cooldown_seconds=3600))
        layer.record_trade(-1.0, T0)
        layer.record_trade(5.0, T0 + 1)
        layer.record_trade(-1.0, T0 + 2)
        assert layer.blocked_until is None and layer.streak == 1


# ---------------------------------------------------------------------------- composition


class TestComposition:
    def test_resize_then_block(self) -> None:
        governor = RiskGovernor(
            [
                PositionLimitLayer(PositionLimitConfig(max_units=D(1000), max_notional=None)),
                FatFingerLayer(FatFingerConfig(max_order_notional=D(500), price_band=None)),
            ]
        )
        expect(governor.check(buy(2000), ctx(price=1.0)), BLOCK, "order_notional")
        assert governor.counts == {
            "position_limit:resize:max_position_units": 1,
            "fat_finger:block:order_notional": 1,
        }

    def test_resizes_compose_to_the_smallest(self) -> None:
        governor = RiskGovernor(
            [
                DripLayer(T0 - 3600, [0.5]),
                PositionLimitLayer(PositionLimitConfig(max_units=D(800), max_notional=None)),
                VolatilityRegimeLayer(VolatilityRegimeConfig(factor=0.9)),
            ]
        )
        verdict = governor.check(buy(2000), ctx(volatility_z=5.0))
        expect(verdict, RESIZE, "volatility_regime", 720)
        assert verdict.layer == "volatility_regime"

    def test_default_stack_passes_an_ordinary_order(self) -> None:
        governor = RiskGovernor(build_layers(RiskConfig()))
        verdict = governor.check(buy(10_000), ctx(price=1.1, confidence=0.6, bar_ts=T0, volatility_z=0.3))
        assert verdict.kind is ALLOW and verdict.quantity == D(10_000)

    def test_build_layers_order_and_switches(self) -> None:
        assert [x.name for x in build_layers(RiskConfig())] == [
            "kill_switch", "fill_guard", "reconciliation", "trading_window", "stale_data", "broker_connection",
            "confidence", "cooldown", "trade_count", "submit_rate", "position_limit", "gross_exposure", "fat_finger",
            "daily_loss", "drawdown", "volatility_regime", "loss_streak",
        ]
        quiet = RiskConfig(
            window={"enabled": False}, confidence={"enabled": False}, drawdown={"enabled": False}
        )
        names = [x.name for x in build_layers(quiet)]
        assert "trading_window" not in names and "confidence" not in names and "drawdown" not in names
        assert all(isinstance(x, Layer) for x in build_layers(RiskConfig()))

    def test_hooks_fan_out_and_never_loosen(self) -> None:
        governor = RiskGovernor(build_layers(RiskConfig(cooldown={"bars": 0, "seconds": 600})))
        hooks = RiskHooks(governor.layers)
        hooks.order_sent("EURUSD", T0)
        expect(governor.check(buy(10), ctx(ts=T0 + 60, bar_ts=T0 + 60)), BLOCK, "cooldown")
        assert governor.figures()["trade_count"]["value"] == 1
        assert governor.figures()["submit_rate"]["value"] == 1
        hooks.equity(T0, 97_990.0, 100_000.0, 100_000.0)  # REDUCING requested
        governor.transition(HALTED, "test")
        assert hooks.apply(governor) is None and governor.state is HALTED
        paused = RiskGovernor(governor.layers, state=PAUSED)
        hooks.equity(T0, 97_000.0, 100_000.0, 100_000.0)  # HALTED requested
        assert hooks.apply(paused) is HALTED

    def test_declared_scopes_and_hooks(self) -> None:
        layers = build_layers(RiskConfig())
        every_order = [x.name for x in layers if x.scope is Scope.EVERY_ORDER]
        assert every_order == [
            "kill_switch", "fill_guard", "reconciliation", "submit_rate", "fat_finger", "daily_loss", "drawdown",
        ]
        assert {x.name: sorted(h.name for h in x.hooks) for x in layers if x.hooks} == {
            "fill_guard": ["FILL"], "reconciliation": ["MISMATCH"], "cooldown": ["ORDER_SENT"],
            "trade_count": ["ORDER_SENT"], "submit_rate": ["ORDER_SENT"], "daily_loss": ["EQUITY"],
            "drawdown": ["EQUITY"], "loss_streak": ["TRADE_CLOSED"],
        }

    def test_entries_only_layers_never_see_an_exit(self) -> None:
        seen: list[Decimal] = []

        class Recording(Layer):
            name = "recording"
            scope = Scope.ENTRIES

            def check(self, request: OrderRequest, ctx: RiskContext) -> Verdict:
                seen.append(request.quantity)
                return self.deny("entry", "an entry", request, ctx)

        governor = RiskGovernor([Recording()])
        expect(governor.check(sell(5), ctx(10)), ALLOW)  # a reduction
        expect(governor.check(sell(10), ctx(10)), ALLOW)  # a close
        expect(governor.check(buy(5), ctx(10)), BLOCK, "entry")  # an add
        expect(governor.check(sell(30), ctx(10)), RESIZE, "entry", 10)  # a flip keeps its close
        assert seen == [D(5), D(30)]

    def test_a_flip_cut_to_its_close_is_an_exit_for_the_layers_after(self) -> None:
        governor = RiskGovernor(
            [KillSwitchLayer(KillSwitchConfig()), ConfidenceLayer(ConfidenceConfig(min_confidence=0.5))]
        )
        verdict = governor.check(sell(300), ctx(100, state=REDUCING, confidence=0.1))
        expect(verdict, RESIZE, "reducing_only", 100)
        assert verdict.layer == "kill_switch"

    def test_state_guards_cannot_be_switched_off(self) -> None:
        with pytest.raises(ValidationError):
            RiskConfig(kill_switch={"enabled": False})
        with pytest.raises(ValidationError):
            RiskConfig(fill_guard={"enabled": False})


class TestConfig:
    def test_drawdown_tiers_must_ascend(self) -> None:
        with pytest.raises(ValidationError, match="warn <= halve"):
            DrawdownConfig(warn=0.02, halve=0.018)

    def test_unknown_keys_and_bad_values_are_refused(self) -> None:
        with pytest.raises(ValidationError):
            RiskConfig(position={"max_unit": 5})
        with pytest.raises(ValidationError):
            DripConfig(schedule=[0.5, 1.5])
        with pytest.raises(ValidationError, match="unknown exchange calendar"):
            TradingWindowConfig(calendar="XXXX")
        with pytest.raises(ValidationError):
            DripConfig(deployment_start=datetime(2017, 3, 1))  # naive: ambiguous

    def test_defaults_are_documented(self) -> None:
        def walk(model: type) -> None:
            for name, info in model.model_fields.items():
                annotation = info.annotation
                if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                    walk(annotation)
                else:
                    assert info.description, f"{model.__name__}.{name} has no description"

        walk(RiskConfig)
