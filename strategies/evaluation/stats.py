"""Performance statistics that do not flatter.

Two families, each from what a run records:

* from the equity curve (one point per bar): Sharpe, Sortino and the maximum
  drawdown. Returns are simple per-bar returns of the equity; annualisation
  uses the run's own bar frequency (``periods_per_year``), never an assumed
  252, because hourly FX bars run 24 hours a day five days a week. The
  formulas are empyrical's (``empyrical-reloaded``, which the tests compare
  against): Sharpe = mean / sample std · √periods, Sortino = mean · periods /
  (root-mean-square of the returns below the required return · √periods),
  drawdown measured from the starting equity on.
* from the closed round trips (P&L net of fees): win rate, expectancy,
  profit factor and Van Tharp's System Quality Number with his classes.
  SQN counts at most 100 trades (Tharp's own cap): a long record must not
  turn a thin edge into an "excellent" score by its length alone.

A statistic that is undefined on the data (no trades, a flat curve, fewer
than two returns) is ``None``, not 0: a zero Sharpe would read as a real
measurement and could pass a gate set at 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "SQN_CLASSES",
    "SQN_TRADE_CAP",
    "YEAR_SECONDS",
    "CurveStats",
    "TradeStats",
    "curve_stats",
    "max_drawdown",
    "periods_per_year",
    "returns_from_equity",
    "sharpe",
    "sortino",
    "sqn",
    "sqn_class",
    "trade_stats",
]

YEAR_SECONDS = 365.25 * 86_400
SQN_TRADE_CAP = 100

# Van Tharp's SQN classes (lower bound inclusive, label), from his "System Quality Number" tables.
SQN_CLASSES: tuple[tuple[float, str], ...] = (
    (7.0, "holy grail"),
    (5.1, "superb"),
    (3.0, "excellent"),
    (2.5, "good"),
    (2.0, "average"),
    (1.6, "below average"),
)
_SQN_POOR = "poor"

FloatArray = npt.NDArray[np.float64]


def _array(values: Sequence[float] | FloatArray) -> FloatArray:
    out = np.asarray(values, dtype=np.float64)
    if out.ndim != 1:
        raise ValueError(f"expected a one-dimensional series, got shape {out.shape}")
    if not np.all(np.isfinite(out)):
        raise ValueError("series holds NaN or infinite values")
    return out


# ---------------------------------------------------------------------- equity curve
def returns_from_equity(equity: Sequence[float] | FloatArray) -> FloatArray:
    """Simple per-period returns of an equity curve (one fewer than its points)."""
    curve = _array(equity)
    if np.any(curve <= 0):
        raise ValueError("equity must stay positive to have returns")
    return curve[1:] / curve[:-1] - 1.0


def periods_per_year(timestamps: Sequence[int] | npt.NDArray[np.int64]) -> float | None:
    """Returns per year implied by a curve's own timestamps (epoch seconds): returns / span in years.

    The same rule as the run summary's Sharpe (``daemon.report.RunStats``), so a
    validation and a backtest summary of the same run annualise alike.
    """
    if len(timestamps) < 2:
        return None
    span = float(timestamps[-1]) - float(timestamps[0])
    if span <= 0:
        return None
    return (len(timestamps) - 1) / (span / YEAR_SECONDS)


def sharpe(returns: Sequence[float] | FloatArray, periods: float) -> float | None:
    """Annualised Sharpe ratio with no risk-free rate: mean / sample std (ddof 1) · √periods."""
    r = _array(returns)
    if len(r) < 2 or np.ptp(r) == 0:  # all equal: no spread (np.std would return rounding noise, not 0)
        return None
    return float(np.mean(r)) / float(np.std(r, ddof=1)) * math.sqrt(periods)


def sortino(returns: Sequence[float] | FloatArray, periods: float, required_return: float = 0.0) -> float | None:
    """Annualised Sortino ratio: mean excess · periods / (downside deviation · √periods).

    The downside deviation is the root mean square of min(r - required, 0) over
    ALL periods (not only the losing ones), as empyrical and Sortino define it.
    """
    r = _array(returns)
    if len(r) < 2:
        return None
    excess = r - required_return
    downside = math.sqrt(float(np.mean(np.minimum(excess, 0.0) ** 2)))
    if downside == 0.0:
        return None
    return float(np.mean(excess)) * periods / (downside * math.sqrt(periods))


def max_drawdown(equity: Sequence[float] | FloatArray) -> float:
    """Largest fall from a running peak, as a positive fraction of that peak (0.05 = 5 %)."""
    curve = _array(equity)
    if len(curve) == 0:
        return 0.0
    peaks = np.maximum.accumulate(curve)
    return float(np.max((peaks - curve) / peaks))


@dataclass(frozen=True, slots=True)
class CurveStats:
    """What an equity curve says: return, risk-adjusted return and the worst fall."""

    points: int
    total_return_pct: float
    max_drawdown_pct: float
    sharpe: float | None
    sortino: float | None
    periods_per_year: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def curve_stats(timestamps: Sequence[int], equity: Sequence[float] | FloatArray) -> CurveStats:
    """Return, drawdown, Sharpe and Sortino of one equity curve sampled at ``timestamps``."""
    curve = _array(equity)
    if len(curve) != len(timestamps):
        raise ValueError(f"{len(curve)} equity points but {len(timestamps)} timestamps")
    if len(curve) == 0:
        return CurveStats(0, 0.0, 0.0, None, None, None)
    periods = periods_per_year(timestamps)
    returns = returns_from_equity(curve)
    return CurveStats(
        points=len(curve),
        total_return_pct=(float(curve[-1]) / float(curve[0]) - 1.0) * 100.0,
        max_drawdown_pct=max_drawdown(curve) * 100.0,
        sharpe=None if periods is None else sharpe(returns, periods),
        sortino=None if periods is None else sortino(returns, periods),
        periods_per_year=periods,
    )


# ---------------------------------------------------------------------- trade list
def sqn(pnls: Sequence[float] | FloatArray, cap: int | None = SQN_TRADE_CAP) -> float | None:
    """Van Tharp's System Quality Number: √min(N, cap) · mean / sample std of the trades' P&L.

    Tharp defines it on R-multiples (P&L over the initial risk). The pipeline
    sizes every entry the same way and records no stop, so the P&L itself
    stands in for R: SQN is unchanged by a common scale factor.
    """
    p = _array(pnls)
    if len(p) < 2 or np.ptp(p) == 0:  # all equal: no spread
        return None
    n = len(p) if cap is None else min(len(p), cap)
    return math.sqrt(n) * float(np.mean(p)) / float(np.std(p, ddof=1))


def sqn_class(value: float | None) -> str | None:
    """Van Tharp's label for an SQN: poor below 1.6, ..., holy grail from 7.0."""
    if value is None:
        return None
    for bound, label in SQN_CLASSES:
        if value >= bound:
            return label
    return _SQN_POOR


@dataclass(frozen=True, slots=True)
class TradeStats:
    """What the closed round trips say, P&L net of fees in the account currency."""

    trades: int
    wins: int
    losses: int
    win_rate: float | None
    expectancy: float | None  # mean P&L per trade
    average_win: float | None
    average_loss: float | None  # negative
    profit_factor: float | None  # gross profit / gross loss; inf when nothing was lost
    sqn: float | None
    sqn_class: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def trade_stats(pnls: Sequence[float] | FloatArray) -> TradeStats:
    """Win rate, expectancy, profit factor and SQN of a trade list. A trade at exactly 0 is neither."""
    p = _array(pnls)
    n = len(p)
    wins, losses = p[p > 0], p[p < 0]
    gross_win, gross_loss = float(wins.sum()), float(-losses.sum())
    if n == 0:
        factor = None
    elif gross_loss > 0:
        factor = gross_win / gross_loss
    else:
        factor = math.inf if gross_win > 0 else None
    value = sqn(p)
    return TradeStats(
        trades=n,
        wins=len(wins),
        losses=len(losses),
        win_rate=len(wins) / n if n else None,
        expectancy=float(p.mean()) if n else None,
        average_win=float(wins.mean()) if len(wins) else None,
        average_loss=float(losses.mean()) if len(losses) else None,
        profit_factor=factor,
        sqn=value,
        sqn_class=sqn_class(value),
    )
