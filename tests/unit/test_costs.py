"""The shared cost model: fills rounded against the trader, fees rounded half-even with a floor."""

from __future__ import annotations

from decimal import Decimal

from brokers.base import Side
from brokers.costs import CostModel

D = Decimal


def test_adverse_fraction_is_half_spread_plus_slippage() -> None:
    assert CostModel().adverse_fraction == D("0.0001")  # (1.0 / 2 + 0.5) bps
    assert CostModel(spread_bps=D(3), slippage_bps=D(0)).adverse_fraction == D("0.00015")


def test_buy_rounds_up_to_the_tick() -> None:
    # 1.23456 * 1.0001 = 1.234683456 -> up to 1.23469
    assert CostModel().fill_price(Side.BUY, 1.23456) == D("1.23469")
    assert CostModel().fill_price(Side.BUY, D("1.23456")) == D("1.23469")


def test_sell_rounds_down_to_the_tick() -> None:
    # 1.23456 * 0.9999 = 1.234436544 -> down to 1.23443
    assert CostModel().fill_price(Side.SELL, 1.23456) == D("1.23443")


def test_price_already_on_the_tick_is_not_moved() -> None:
    # 1.1 * 1.0001 = 1.10011 exactly: no rounding either way
    assert CostModel().fill_price(Side.BUY, 1.1) == D("1.10011")
    free = CostModel(spread_bps=D(0), slippage_bps=D(0))
    assert free.fill_price(Side.BUY, 1.1) == D("1.10000")
    assert free.fill_price(Side.SELL, 1.1) == D("1.10000")


def test_float_reference_uses_its_shortest_repr() -> None:
    # 0.1 + 0.2 is 0.30000000000000004; the repr keeps that, so a buy rounds up one tick.
    free = CostModel(spread_bps=D(0), slippage_bps=D(0), price_increment=D("0.01"))
    assert free.fill_price(Side.BUY, 0.1 + 0.2) == D("0.31")
    assert free.fill_price(Side.SELL, 0.1 + 0.2) == D("0.30")


def test_coarser_tick() -> None:
    model = CostModel(price_increment=D("0.0001"))
    assert model.fill_price(Side.BUY, D("1.1020")) == D("1.1022")  # 1.1021102 -> 1.1022
    assert model.fill_price(Side.SELL, D("1.1020")) == D("1.1018")  # 1.1018898 -> 1.1018


def test_commission_rounds_half_even_to_the_fee_increment() -> None:
    model = CostModel(commission_bps=D(1))
    assert model.commission(D(1250), D(1)) == D("0.12")  # 0.125 -> 0.12 (even)
    assert model.commission(D(1350), D(1)) == D("0.14")  # 0.135 -> 0.14 (even)
    assert model.commission(D(1251), D(1)) == D("0.13")  # 0.1251 -> 0.13
    # default 0.2 bps: 10000 * 1.23469 * 0.00002 = 0.2469380 -> 0.25
    assert CostModel().commission(D(10000), D("1.23469")) == D("0.25")


def test_commission_uses_absolute_quantity() -> None:
    model = CostModel(commission_bps=D(1))
    assert model.commission(D(-10000), D("1.1")) == model.commission(D(10000), D("1.1")) == D("1.10")


def test_minimum_commission_applies_to_small_fills() -> None:
    model = CostModel(commission_bps=D(1), min_commission=D(2))
    assert model.commission(D(100), D("1.1")) == D("2.00")
    assert model.commission(D(1_000_000), D("1.1")) == D("110.00")


def test_zero_commission_is_zero_at_the_fee_increment() -> None:
    fee = CostModel(commission_bps=D(0)).commission(D(10000), D("1.1"))
    assert fee == 0 and fee.as_tuple().exponent == -2


def test_round_price_is_half_even() -> None:
    model = CostModel(price_increment=D("0.01"))
    assert model.round_price(D("1.125")) == D("1.12")
    assert model.round_price(D("1.135")) == D("1.14")
    assert model.round_price(1.5) == D("1.50")
