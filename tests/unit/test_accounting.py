"""FIFO-lot position accounting: the one rule the portfolio and the training environment book by."""

from __future__ import annotations

import math
from decimal import Decimal as D

from brokers.accounting import FifoPosition, Lot


def test_a_fill_against_the_position_closes_the_oldest_lots_first() -> None:
    position = FifoPosition()
    position.book(D(100), D("1.10"))
    position.book(D(100), D("1.20"))
    booked = position.book(D(-150), D("1.30"))
    # 100 from the 1.10 lot, then 50 from the 1.20 lot
    assert booked.realized == D(100) * D("0.20") + D(50) * D("0.10")
    assert (booked.closed, booked.opened, booked.direction, booked.flat_between) == (D(150), 0, 1, False)
    assert list(position.lots) == [Lot(D(50), D("1.20"))]
    assert position.quantity == D(50) and position.average == D("1.20")


def test_a_short_position_realizes_falling_prices_as_profit() -> None:
    position = FifoPosition()
    position.book(D(-200), D("1.50"))
    booked = position.book(D(200), D("1.40"))
    assert booked.realized == D(200) * D("0.10") and booked.direction == -1
    assert booked.flat_between and not position.lots and position.quantity == 0
    assert position.average == 0 and position.average_float == 0.0


def test_a_flip_closes_the_position_and_opens_the_rest_the_other_way() -> None:
    position = FifoPosition()
    position.book(D(100), D("1.00"))
    booked = position.book(D(-300), D("1.10"))
    assert (booked.closed, booked.opened, booked.flat_between) == (D(100), D(200), True)
    assert booked.realized == D(100) * D("0.10")
    assert list(position.lots) == [Lot(D(-200), D("1.10"))]
    assert position.quantity_float == -200.0 and position.average_float == 1.1


def test_the_average_is_volume_weighted_over_the_open_lots() -> None:
    position = FifoPosition()
    position.book(D(100), D("1.00"))
    position.book(D(300), D("1.20"))
    assert position.average == (D(100) * D("1.00") + D(300) * D("1.20")) / D(400)
    assert position.unrealized_at(1.3) == 400.0 * (1.3 - float(position.average))


def test_marks_count_bars_held_and_the_peak_until_the_position_goes_flat() -> None:
    position = FifoPosition()
    position.mark(1.0)  # flat: nothing to count
    assert (position.bars_held, position.peak_unrealized) == (0, 0.0)
    position.book(D(1000), D("1.00000"))
    for price in (1.001, 1.003, 1.002):
        position.mark(price)
    assert position.bars_held == 3
    assert position.peak_unrealized == 1000.0 * (1.003 - 1.0)
    position.book(D(500), D("1.00200"))  # adding keeps counting
    assert position.bars_held == 3
    position.book(D(-1500), D("1.00100"))  # flat again: both restart
    assert (position.bars_held, position.peak_unrealized) == (0, 0.0)
    position.book(D(-100), D("1.00100"))
    position.mark(1.0)
    assert position.bars_held == 1


def test_a_flip_restarts_the_count() -> None:
    position = FifoPosition()
    position.book(D(100), D("1.00"))
    position.mark(1.5)
    position.book(D(-200), D("1.50"))
    assert (position.bars_held, position.peak_unrealized) == (0, 0.0)


def test_an_adopted_position_is_one_lot() -> None:
    position = FifoPosition()
    position.book(D(100), D("1.00"))
    position.adopt(D(-300), D("1.25"))
    assert list(position.lots) == [Lot(D(-300), D("1.25"))]
    assert position.quantity == D(-300) and position.average == D("1.25")
    position.adopt(D(0), D("1.25"))
    assert not position.lots and position.quantity_float == 0.0


def test_unrealized_is_zero_when_flat_or_unpriced() -> None:
    position = FifoPosition()
    assert position.unrealized_at(1.2) == 0.0
    position.book(D(100), D("1.00"))
    assert position.unrealized_at(math.nan) == 0.0
    position.mark(math.nan)  # an unpriced mark counts the bar but sets no peak
    assert position.bars_held == 1 and position.peak_unrealized == 0.0
