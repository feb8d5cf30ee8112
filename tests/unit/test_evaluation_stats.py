"""Sharpe, Sortino and max drawdown against empyrical-reloaded; SQN and trade figures against plain arithmetic."""

from __future__ import annotations

import math
import statistics

import empyrical
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from brokers.history import load_bundled
from daemon.report import RunStats
from strategies.evaluation.stats import (
    curve_stats,
    max_drawdown,
    periods_per_year,
    returns_from_equity,
    sharpe,
    sortino,
    sqn,
    sqn_class,
    trade_stats,
)

HOURLY_FX = 6_000.0  # annualisation factor used where a test fixes one


def _bundled_returns() -> np.ndarray:
    """Real returns: hour-to-hour changes of the bundled EUR/USD 2017 closes."""
    closes = np.array([b.close for b in load_bundled()])
    return closes[1:] / closes[:-1] - 1.0


def _equity(returns: np.ndarray, start: float = 100_000.0) -> np.ndarray:
    return start * np.concatenate([[1.0], np.cumprod(1.0 + returns)])


def test_sharpe_sortino_and_max_drawdown_match_empyrical_on_real_returns() -> None:
    r = _bundled_returns()
    assert len(r) > 6000
    assert sharpe(r, HOURLY_FX) == pytest.approx(empyrical.sharpe_ratio(r, annualization=HOURLY_FX), rel=1e-12)
    assert sortino(r, HOURLY_FX) == pytest.approx(empyrical.sortino_ratio(r, annualization=HOURLY_FX), rel=1e-12)
    assert max_drawdown(_equity(r)) == pytest.approx(-empyrical.max_drawdown(r), rel=1e-12)
    assert max_drawdown(_equity(r)) > 0.01  # EUR/USD did fall more than 1 % from a peak in 2017


def test_returns_from_an_equity_curve_round_trip() -> None:
    r = _bundled_returns()[:500]
    assert returns_from_equity(_equity(r)) == pytest.approx(r, abs=1e-15)


# returns on a 0.1 basis-point grid, as prices are quoted: no denormal noise that neither side can divide by
returns_lists = st.lists(st.integers(-5_000, 5_000).map(lambda i: i / 100_000), min_size=3, max_size=200)


@given(returns_lists)
def test_matches_empyrical_on_any_series(values: list[float]) -> None:
    r = np.array(values)
    ours_sharpe, theirs_sharpe = sharpe(r, 252.0), empyrical.sharpe_ratio(r, annualization=252)
    if ours_sharpe is None:  # a flat series: no spread to divide by
        assert len(set(values)) == 1
    else:
        assert ours_sharpe == pytest.approx(theirs_sharpe, rel=1e-9, abs=1e-9)
    ours_sortino = sortino(r, 252.0)
    if ours_sortino is None:  # no period below the required return
        assert np.all(r >= 0)
    else:
        assert ours_sortino == pytest.approx(empyrical.sortino_ratio(r, annualization=252), rel=1e-9, abs=1e-9)
    assert max_drawdown(_equity(r)) == pytest.approx(-empyrical.max_drawdown(r), rel=1e-9, abs=1e-12)


def test_undefined_statistics_are_none_not_zero() -> None:
    assert sharpe([0.0, 0.0, 0.0], 252) is None
    assert sharpe([0.01], 252) is None
    assert sortino([0.01, 0.02, 0.0], 252) is None
    assert sqn([5.0]) is None
    assert sqn([2.0, 2.0, 2.0]) is None
    stats = trade_stats([])
    assert (stats.win_rate, stats.expectancy, stats.profit_factor, stats.sqn, stats.sqn_class) == (None,) * 5


def test_bad_series_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        sharpe([0.01, float("nan"), 0.0], 252)
    with pytest.raises(ValueError, match="positive"):
        returns_from_equity([100.0, 0.0, 50.0])
    with pytest.raises(ValueError, match="timestamps"):
        curve_stats([1, 2], [100.0])


def test_curve_stats_sharpe_equals_the_backtest_summarys() -> None:
    """A validation and ``tradectl backtest`` annualise one equity curve the same way."""
    bars = load_bundled()[:2000]
    ts = [b.ts for b in bars]
    equity = [100_000.0 * b.close / bars[0].close for b in bars]
    run = RunStats(equity[0])
    for t, e in zip(ts, equity, strict=True):
        run.add(t, e)
    stats = curve_stats(ts, equity)
    assert stats.sharpe == pytest.approx(run.sharpe(), rel=1e-9)
    assert stats.max_drawdown_pct == pytest.approx(run.worst_drawdown * 100, rel=1e-12)
    assert stats.periods_per_year == pytest.approx(periods_per_year(ts))
    assert stats.total_return_pct == pytest.approx((bars[-1].close / bars[0].close - 1) * 100)


# ---------------------------------------------------------------------- trades
TRADES = [120.0, -80.0, 45.5, -30.0, 0.0, 210.0, -95.25, 60.0, -15.0, 33.0]


def _plain_sqn(pnls: list[float], cap: int | None = 100) -> float:
    n = len(pnls) if cap is None else min(len(pnls), cap)
    return math.sqrt(n) * statistics.fmean(pnls) / statistics.stdev(pnls)


def test_sqn_and_trade_figures_match_a_plain_computation() -> None:
    stats = trade_stats(TRADES)
    assert stats.trades == 10 and stats.wins == 5 and stats.losses == 4  # 0.0 is neither
    assert stats.win_rate == 0.5
    assert stats.expectancy == pytest.approx(sum(TRADES) / 10)
    assert stats.average_win == pytest.approx((120 + 45.5 + 210 + 60 + 33) / 5)
    assert stats.average_loss == pytest.approx(-(80 + 30 + 95.25 + 15) / 4)
    assert stats.profit_factor == pytest.approx(468.5 / 220.25)
    assert stats.sqn == pytest.approx(_plain_sqn(TRADES), rel=1e-12)
    # by hand: mean 248.25 / 10 = 24.825, sample variance 75694.00625 / 9 = 8410.445, sd 91.708
    assert stats.sqn == pytest.approx(math.sqrt(10) * 24.825 / 91.70848, rel=1e-6)
    assert stats.sqn_class == "poor"


def test_sqn_counts_at_most_100_trades() -> None:
    many = TRADES * 30  # 300 trades, same mean and nearly the same spread
    assert sqn(many) == pytest.approx(_plain_sqn(many, cap=100), rel=1e-12)
    assert sqn(many, cap=None) == pytest.approx(_plain_sqn(many, cap=None), rel=1e-12)
    assert sqn(many, cap=None) == pytest.approx(sqn(many) * math.sqrt(3), rel=1e-12)


@pytest.mark.parametrize(
    ("value", "label"),
    [(-1.0, "poor"), (1.59, "poor"), (1.6, "below average"), (2.0, "average"), (2.49, "average"),
     (2.5, "good"), (3.0, "excellent"), (5.09, "excellent"), (5.1, "superb"), (7.0, "holy grail")],
)
def test_van_tharp_classes(value: float, label: str) -> None:
    assert sqn_class(value) == label


def test_profit_factor_without_losses_is_infinite() -> None:
    assert trade_stats([10.0, 5.0]).profit_factor == math.inf
    assert trade_stats([0.0, 0.0]).profit_factor is None
