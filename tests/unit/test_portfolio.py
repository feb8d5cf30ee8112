"""Portfolio accounting: P&L equals the sum over fills, exactly."""

from __future__ import annotations

from decimal import Decimal

from brokers.base import Fill, Side
from daemon.portfolio import Portfolio

D = Decimal


def _fill(n: int, side: Side, qty: str, price: str, fee: str, ts: int = 0, symbol: str = "EURUSD") -> Fill:
    return Fill(f"f{n}", f"o{n}", symbol, side, D(qty), D(price), D(fee), ts or n * 3600)


def test_round_trip_pnl_is_exact_sum_over_fills() -> None:
    book = Portfolio(D("100000"))
    fills = [
        _fill(1, Side.BUY, "10000", "1.10005", "0.22"),
        _fill(2, Side.BUY, "5000", "1.10105", "0.11"),
        _fill(3, Side.SELL, "12000", "1.10300", "0.26"),
        _fill(4, Side.SELL, "3000", "1.09950", "0.07"),
    ]
    for fill in fills:
        book.apply_fill(fill)
    # by hand: FIFO lots 10000@1.10005 and 5000@1.10105
    # sell 12000@1.10300: 10000*(0.00295) + 2000*(0.00195) = 29.5 + 3.9 = 33.4
    # sell 3000@1.09950: 3000*(1.09950-1.10105) = -4.65
    assert book.realized == D("28.75")
    assert book.fees == D("0.66")
    assert book.quantity("EURUSD") == 0
    # cash moved by exactly -sum(signed qty * price) - fees
    expected_cash = D("100000") - sum((f.signed_quantity * f.price + f.fee for f in fills), D(0))
    assert book.cash == expected_cash
    assert book.cash - D("100000") == book.realized - book.fees


def test_flip_closes_one_trade_and_opens_the_next() -> None:
    book = Portfolio(D("1000"))
    book.apply_fill(_fill(1, Side.BUY, "100", "10.00", "1.00"))
    effect = book.apply_fill(_fill(2, Side.SELL, "300", "11.00", "3.00"))
    assert book.quantity("EURUSD") == D("-200")
    (trade,) = effect.closed
    # closing part: 100 * 1.00 gain; fee split 1/3 of 3.00 to the closed trip, plus the entry fee 1.00
    assert trade.direction == 1
    assert trade.fees == D("2.00")
    assert trade.pnl == D("98.00")
    effect = book.apply_fill(_fill(3, Side.BUY, "200", "10.50", "2.00"))
    (short_trade,) = effect.closed
    assert short_trade.direction == -1
    assert short_trade.pnl == D("100.00") - D("2.00") - D("2.00")
    assert book.realized - book.fees == trade.pnl + short_trade.pnl


def test_mark_to_market_and_day_rollover() -> None:
    book = Portfolio(D("1000"))
    book.mark("EURUSD", 10.0, 86_400 * 10 + 3600)
    book.apply_fill(_fill(1, Side.BUY, "10", "10", "0", ts=86_400 * 10 + 3600))
    book.mark("EURUSD", 12.0, 86_400 * 10 + 7200)
    assert book.unrealized() == 20.0
    assert book.equity() == 1020.0
    assert book.day_start_equity == 1000.0
    book.mark("EURUSD", 11.0, 86_400 * 11 + 3600)  # next UTC day
    assert book.day_start_equity == 1010.0
    assert book.peak_equity == 1020.0
    view = book.view("EURUSD")
    assert view.side == 1 and view.bars_held == 2 and view.peak_unrealized == 20.0


def test_drawdown_is_measured_from_the_equity_peak() -> None:
    book = Portfolio(D("1000"))
    assert book.drawdown() == 0.0
    book.apply_fill(_fill(1, Side.BUY, "10", "10", "0"), reason="buy")
    book.mark("EURUSD", 12.0, 3600)  # equity 1020: a new peak
    book.mark("EURUSD", 9.0, 7200)  # equity 990
    assert book.peak_equity == 1020.0
    assert abs(book.drawdown() - (1 - 990 / 1020)) < 1e-12
