"""Run and backtest summaries computed from the equity curve and closed trades."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from decimal import Decimal

_YEAR = 365.25 * 86_400
_CENT = Decimal("0.01")  # display only: the store keeps every fill's exact figures


@dataclass(frozen=True, slots=True)
class Summary:
    bars: int
    rejected_bars: int
    orders: int
    fills: int
    trades: int
    win_rate: float | None
    starting_equity: float
    final_equity: float
    total_return_pct: float
    max_drawdown_pct: float
    sharpe: float | None
    fees: str
    realized_pnl: str
    elapsed_seconds: float
    bars_per_second: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def render(self) -> str:
        def pct(value: float | None) -> str:
            return "—" if value is None else f"{value:.2f}%"

        rows = [
            ("bars processed", f"{self.bars:,} ({self.rejected_bars:,} rejected)"),
            ("orders / fills", f"{self.orders:,} / {self.fills:,}"),
            ("round-trip trades", f"{self.trades:,}"),
            ("win rate", pct(None if self.win_rate is None else self.win_rate * 100)),
            ("equity", f"{self.starting_equity:,.2f} → {self.final_equity:,.2f}"),
            ("return", pct(self.total_return_pct)),
            ("max drawdown", pct(self.max_drawdown_pct)),
            ("Sharpe (annualised)", "—" if self.sharpe is None else f"{self.sharpe:.2f}"),
            ("fees paid", self.fees),
            ("realized P&L (net of fees)", self.realized_pnl),
            ("elapsed", f"{self.elapsed_seconds:.1f}s ({self.bars_per_second:,.0f} bars/s)"),
        ]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)


@dataclass(slots=True)
class RunStats:
    """Equity-curve and trade statistics kept incrementally.

    A daemon can run for months; keeping every equity point and trade in
    memory to summarise at the end would grow without bound, so the summary's
    figures are accumulated as the run goes (Welford for the return variance).
    """

    starting_equity: float
    peak: float = 0.0
    worst_drawdown: float = 0.0
    first_ts: int | None = None
    last_ts: int = 0
    last_equity: float | None = None
    returns: int = 0
    _mean: float = 0.0
    _m2: float = 0.0
    trades: int = 0
    wins: int = 0

    def __post_init__(self) -> None:
        self.peak = self.starting_equity

    def add(self, ts: int, equity: float) -> None:
        if equity > self.peak:
            self.peak = equity
        elif self.peak > 0:
            fall = (self.peak - equity) / self.peak
            if fall > self.worst_drawdown:
                self.worst_drawdown = fall
        previous = self.last_equity
        if previous is not None and previous > 0:
            r = equity / previous - 1.0
            self.returns += 1
            delta = r - self._mean
            self._mean += delta / self.returns
            self._m2 += delta * (r - self._mean)
        if self.first_ts is None:
            self.first_ts = ts
        self.last_ts = ts
        self.last_equity = equity

    def add_trade(self, pnl: Decimal) -> None:
        self.trades += 1
        self.wins += pnl > 0

    def sharpe(self) -> float | None:
        """Annualised Sharpe of per-bar returns (no risk-free rate), bars per year from the run's own span."""
        n = self.returns
        if n < 2 or self.first_ts is None or self.last_ts <= self.first_ts:
            return None
        var = self._m2 / (n - 1)
        if var <= 0:
            return None
        periods_per_year = n / ((self.last_ts - self.first_ts) / _YEAR)
        return self._mean / math.sqrt(var) * math.sqrt(periods_per_year)


def summarize(
    *,
    stats: RunStats,
    counts: dict[str, int],
    fees: Decimal,
    realized_net: Decimal,
    elapsed: float,
) -> Summary:
    start = stats.starting_equity
    final = stats.last_equity if stats.last_equity is not None else start
    sharpe = stats.sharpe()
    return Summary(
        bars=counts.get("bars", 0),
        rejected_bars=counts.get("rejected_bars", 0),
        orders=counts.get("orders", 0),
        fills=counts.get("fills", 0),
        trades=stats.trades,
        win_rate=stats.wins / stats.trades if stats.trades else None,
        starting_equity=start,
        final_equity=round(final, 2),
        total_return_pct=round((final / start - 1.0) * 100, 4),
        max_drawdown_pct=round(stats.worst_drawdown * 100, 4),
        sharpe=None if sharpe is None else round(sharpe, 4),
        fees=str(fees.quantize(_CENT)),
        realized_pnl=str(realized_net.quantize(_CENT)),
        elapsed_seconds=round(elapsed, 3),
        bars_per_second=round(counts.get("bars", 0) / elapsed, 1) if elapsed > 0 else 0.0,
    )
