"""Run and backtest summaries computed from the equity curve and closed trades."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal

from daemon.portfolio import ClosedTrade

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


def max_drawdown(equity: Sequence[float]) -> float:
    """Largest peak-to-trough fall, as a fraction of the peak."""
    peak = -math.inf
    worst = 0.0
    for value in equity:
        if value > peak:
            peak = value
        elif peak > 0:
            fall = (peak - value) / peak
            if fall > worst:
                worst = fall
    return worst


def sharpe_ratio(ts: Sequence[int], equity: Sequence[float]) -> float | None:
    """Annualised Sharpe of per-bar returns (no risk-free rate), bars per year from the data's own span."""
    if len(equity) < 3 or ts[-1] <= ts[0]:
        return None
    returns = [b / a - 1.0 for a, b in itertools.pairwise(equity) if a > 0]
    n = len(returns)
    mean = sum(returns) / n
    var = sum((r - mean) ** 2 for r in returns) / (n - 1)
    if var <= 0:
        return None
    periods_per_year = n / ((ts[-1] - ts[0]) / _YEAR)
    return mean / math.sqrt(var) * math.sqrt(periods_per_year)


def summarize(
    *,
    ts: Sequence[int],
    equity: Sequence[float],
    starting_equity: float,
    trades: Sequence[ClosedTrade],
    counts: dict[str, int],
    fees: Decimal,
    realized_net: Decimal,
    elapsed: float,
) -> Summary:
    final = equity[-1] if equity else starting_equity
    wins = sum(1 for t in trades if t.pnl > 0)
    return Summary(
        bars=counts.get("bars", 0),
        rejected_bars=counts.get("rejected_bars", 0),
        orders=counts.get("orders", 0),
        fills=counts.get("fills", 0),
        trades=len(trades),
        win_rate=wins / len(trades) if trades else None,
        starting_equity=starting_equity,
        final_equity=round(final, 2),
        total_return_pct=round((final / starting_equity - 1.0) * 100, 4),
        max_drawdown_pct=round(max_drawdown([starting_equity, *equity]) * 100, 4),
        sharpe=None if (s := sharpe_ratio(ts, equity)) is None else round(s, 4),
        fees=str(fees.quantize(_CENT)),
        realized_pnl=str(realized_net.quantize(_CENT)),
        elapsed_seconds=round(elapsed, 3),
        bars_per_second=round(counts.get("bars", 0) / elapsed, 1) if elapsed > 0 else 0.0,
    )
