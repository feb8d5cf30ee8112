"""Sizing math, checked by hand, and the decision → target → order path."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokers.base import Side
from risk.config import SizingConfig
from risk.sizing import (
    ATR,
    REALISED_VOL,
    PositionSizer,
    Sizer,
    TradeRecord,
    build_sizer,
    fixed_units,
    kelly_fraction,
    order_for_target,
    risk_fraction_units,
    round_to_lot,
    safe_f,
    target_quantity,
    volatility_scaled_units,
)
from strategies.base import Action, Decision, PositionView

D = Decimal


def decision(action: Action, **extras: object) -> Decision:
    return Decision("EURUSD", 0, action, extras=dict(extras))


def held(quantity: int) -> PositionView:
    return PositionView(quantity=D(quantity))


class TestRounding:
    @pytest.mark.parametrize(
        ("quantity", "lot", "expected"),
        [("1234.9", "1", "1234"), ("1234.9", "100", "1200"), ("-1234", "100", "-1200"), ("0.37", "0.1", "0.3")],
    )
    def test_round_toward_zero(self, quantity: str, lot: str, expected: str) -> None:
        assert round_to_lot(D(quantity), D(lot)) == D(expected)

    def test_fixed_units(self) -> None:
        assert fixed_units(D(10_000), D(1000)) == D(10_000)
        assert fixed_units(D(10_500), D(1000)) == D(10_000)


class TestRiskFraction:
    def test_by_hand(self) -> None:
        # 1 % of 100,000 = 1,000 at risk over a 2 x 0.0050 stop = 0.01 per unit -> 100,000 units.
        assert risk_fraction_units(100_000.0, 0.01, 0.0050, 2.0, D(1)) == D(100_000)
        # 2 % of 50,000 = 1,000 over 2 x 1.25 = 2.5 per unit -> 400 units.
        assert risk_fraction_units(50_000.0, 0.02, 1.25, 2.0, D(1)) == D(400)
        # 500 over 0.6 = 833.3 -> 800 in lots of 100.
        assert risk_fraction_units(50_000.0, 0.01, 0.3, 2.0, D(100)) == D(800)

    @pytest.mark.parametrize("atr", [None, 0.0, -1.0, float("nan"), float("inf")])
    def test_unknown_volatility_sizes_zero(self, atr: float | None) -> None:
        assert risk_fraction_units(100_000.0, 0.01, atr, 2.0, D(1)) == 0

    @given(
        equity=st.floats(1_000, 10_000_000),
        risk=st.floats(0.0001, 0.05),
        atr=st.floats(0.0001, 50),
        stop=st.floats(0.5, 5),
        lot=st.sampled_from(["1", "10", "1000", "0.01"]),
    )
    def test_loss_at_stop_is_within_budget_and_tight(
        self, equity: float, risk: float, atr: float, stop: float, lot: str
    ) -> None:
        units = risk_fraction_units(equity, risk, atr, stop, D(lot))
        per_unit = D(repr(atr)) * D(repr(stop))
        budget = D(repr(equity)) * D(repr(risk))
        assert units >= 0 and units % D(lot) == 0
        assert units * per_unit <= budget
        assert (units + D(lot)) * per_unit > budget


class TestVolatilityScaled:
    def test_by_hand(self) -> None:
        assert volatility_scaled_units(D(10_000), 0.10, 0.20, 2.0, D(1)) == D(5000)
        assert volatility_scaled_units(D(10_000), 0.10, 0.15, 2.0, D(1)) == D(6666)
        assert volatility_scaled_units(D(10_000), 0.10, 0.04, 2.0, D(1)) == D(20_000)  # capped at 2x
        assert volatility_scaled_units(D(10_000), 0.10, 0.30, 2.0, D(1000)) == D(3000)

    def test_unknown_volatility_sizes_zero(self) -> None:
        assert volatility_scaled_units(D(10_000), 0.10, None, 2.0, D(1)) == 0
        assert volatility_scaled_units(D(10_000), 0.10, 0.0, 2.0, D(1)) == 0


class TestKelly:
    def test_by_hand(self) -> None:
        assert kelly_fraction(0.6, 100.0, 50.0) == pytest.approx(0.4)  # 0.6 - 0.4 / 2
        assert kelly_fraction(0.4, 100.0, 100.0) == pytest.approx(-0.2)
        assert kelly_fraction(0.5, 100.0, 0.0) == 0.5  # no losses yet
        assert kelly_fraction(0.0, 0.0, 50.0) == -1.0  # no wins

    def test_record_and_safe_f(self) -> None:
        record = TradeRecord(window=10)
        for pnl in (100, -50, 100, -50, 100):
            record.add(pnl)
        assert (record.win_rate, record.avg_win, record.avg_loss) == (0.6, 100.0, 50.0)
        assert record.kelly() == pytest.approx(0.4)
        assert safe_f(record) == pytest.approx(0.1)

    def test_break_even_counts_as_a_trade_but_not_a_win(self) -> None:
        record = TradeRecord(window=10)
        for pnl in (10, 0, D("-10")):
            record.add(pnl)
        assert record.win_rate == pytest.approx(1 / 3)
        assert record.kelly() == pytest.approx(-1 / 3)

    def test_window_rolls(self) -> None:
        record = TradeRecord(window=3)
        for pnl in (-5, -5, 10, 10, 10):
            record.add(pnl)
        assert len(record) == 3 and record.win_rate == 1.0


class TestTargets:
    @pytest.mark.parametrize(
        ("action", "expected"),
        [(Action.BUY, D(5)), (Action.SELL, D(-5)), (Action.CLOSE, D(0)), (Action.HOLD, None)],
    )
    def test_target_quantity(self, action: Action, expected: Decimal | None) -> None:
        assert target_quantity(action, D(5)) == expected

    def test_order_for_target(self) -> None:
        entry = order_for_target("EURUSD", D(0), D(5), "buy")
        assert entry is not None and (entry.side, entry.quantity, entry.reason) == (Side.BUY, D(5), "buy")
        flip = order_for_target("EURUSD", D(5), D(-5))
        assert flip is not None and (flip.side, flip.quantity) == (Side.SELL, D(10))
        cover = order_for_target("EURUSD", D(-3), D(0))
        assert cover is not None and (cover.side, cover.quantity) == (Side.BUY, D(3))
        assert order_for_target("EURUSD", D(5), D(5)) is None


class TestSizer:
    def test_fixed_targets(self) -> None:
        sizer = PositionSizer(SizingConfig())
        assert sizer.target(decision(Action.BUY), equity=1e5, price=1.1) == D(10_000)
        assert sizer.target(decision(Action.SELL), equity=1e5, price=1.1) == D(-10_000)
        assert sizer.target(decision(Action.SELL), equity=1e5, price=1.1, position=held(10_000)) == D(-10_000)
        assert sizer.target(decision(Action.CLOSE), equity=1e5, price=1.1, position=held(10_000)) == D(0)
        assert sizer.target(decision(Action.HOLD), equity=1e5, price=1.1, position=held(10_000)) is None

    def test_open_position_is_kept_unless_resize_open(self) -> None:
        cfg = SizingConfig(method="volatility")
        sizer = PositionSizer(cfg)
        assert sizer.target(decision(Action.BUY, realised_vol=0.2), equity=1e5, price=1.1, position=held(7)) is None
        resizing = PositionSizer(cfg.model_copy(update={"resize_open": True}))
        buy = decision(Action.BUY, **{REALISED_VOL: 0.2})
        assert resizing.target(buy, equity=1e5, price=1.1, position=held(7)) == D(5000)

    def test_risk_fraction_reads_atr_from_the_decision(self) -> None:
        sizer = PositionSizer(SizingConfig(method="risk_fraction", max_quantity=None))
        assert sizer.target(decision(Action.BUY, **{ATR: 0.005}), equity=1e5, price=1.1) == D(100_000)
        assert sizer.target(decision(Action.BUY), equity=1e5, price=1.1, atr=0.01) == D(50_000)

    def test_zero_size_only_closes_the_opposite_side(self) -> None:
        sizer = PositionSizer(SizingConfig(method="risk_fraction"))  # no ATR anywhere: size 0
        assert sizer.target(decision(Action.BUY), equity=1e5, price=1.1) is None
        assert sizer.target(decision(Action.BUY), equity=1e5, price=1.1, position=held(-500)) == D(0)
        resizing = PositionSizer(SizingConfig(method="risk_fraction", resize_open=True))
        assert resizing.target(decision(Action.BUY), equity=1e5, price=1.1, position=held(500)) is None

    def test_cap_and_lot(self) -> None:
        assert PositionSizer(SizingConfig(max_quantity=D(5000))).size(equity=1e5) == D(5000)
        assert PositionSizer(SizingConfig(max_quantity=D(5000), lot_size=D(300))).size(equity=1e5) == D(4800)

    def test_safe_f_from_the_trade_record(self) -> None:
        cfg = SizingConfig.model_validate(
            {
                "method": "safe_f",
                "max_quantity": None,
                "safe_f": {"min_trades": 5, "max_risk_fraction": 0.5, "bootstrap_risk_fraction": 0.0025},
            }
        )
        sizer = PositionSizer(cfg)
        # Bootstrap: 0.25 % of 100,000 = 250 over a 2 x 0.005 stop -> 25,000 units.
        assert sizer.size(equity=1e5, atr=0.005) == D(25_000)
        for pnl in (100, -50, 100, -50):
            sizer.record_trade(pnl)
        assert sizer.size(equity=1e5, atr=0.005) == D(25_000)  # 4 < min_trades
        sizer.record_trade(100)
        # Kelly 0.4 -> safe-f 0.1: 10 % of 10,000 = 1,000 over 0.01 -> 100,000 units.
        assert sizer.size(equity=1e4, atr=0.005) == D(100_000)
        assert sizer.figures()["safe_f"] == pytest.approx(0.1)

    def test_safe_f_is_capped(self) -> None:
        sizer = PositionSizer(SizingConfig.model_validate({"method": "safe_f", "max_quantity": None,
                                                   "safe_f": {"min_trades": 1, "max_risk_fraction": 0.02}}))
        sizer.record_trade(100)  # Kelly 1.0 -> safe-f 0.25, capped at 0.02
        assert sizer.size(equity=1e4, atr=0.005) == D(20_000)

    @pytest.mark.parametrize(("floor", "expected"), [("0", D(0)), ("1000", D(1000))])
    def test_no_edge_sizes_to_the_floor(self, floor: str, expected: Decimal) -> None:
        cfg = SizingConfig.model_validate(
            {"method": "safe_f", "safe_f": {"min_trades": 2, "floor_quantity": floor}}
        )
        sizer = PositionSizer(cfg)
        for pnl in (-10, -10, 5):
            sizer.record_trade(pnl)
        assert sizer.record.kelly() < 0
        assert sizer.size(equity=1e5, atr=0.005) == expected

    @given(
        method=st.sampled_from(["fixed", "risk_fraction", "volatility", "safe_f"]),
        equity=st.floats(0, 1e7),
        atr=st.none() | st.floats(0, 10),
        vol=st.none() | st.floats(0, 2),
        lot=st.sampled_from(["1", "100", "0.1"]),
        cap=st.none() | st.integers(1, 1_000_000),
    )
    def test_sizes_are_whole_lots_within_the_cap(
        self, method: str, equity: float, atr: float | None, vol: float | None, lot: str, cap: int | None
    ) -> None:
        cfg = SizingConfig.model_validate({"method": method, "lot_size": lot, "max_quantity": cap})
        size = PositionSizer(cfg).size(equity=equity, atr=atr, realised_vol=vol)
        assert size >= 0 and size % D(lot) == 0
        if cap is not None:
            assert size <= cap


def test_a_degenerate_atr_sizes_to_nothing() -> None:
    """Found by hypothesis: an ATR of 1e-103 once sized ~1e100 units and broke Decimal arithmetic."""
    from risk.sizing import risk_fraction_units

    assert risk_fraction_units(1.0, 0.01, 7.78e-103, 2.0, Decimal("1")) == 0
    assert risk_fraction_units(100_000.0, 0.01, 0.001, 2.0, Decimal("1")) == Decimal("500000")


def test_the_configured_sizer_is_a_sizer() -> None:
    """Every part of the ``Sizer`` protocol the pipeline calls is there, with nothing to sniff for."""
    sizer: Sizer = build_sizer(SizingConfig())
    assert sizer.target(decision(Action.BUY), equity=1e5, price=1.1) == D(10_000)
    assert sizer.keeps_position(Action.BUY, 1)
    sizer.record_trade(D("12.5"))
    assert sizer.figures()["trades"] == 1
