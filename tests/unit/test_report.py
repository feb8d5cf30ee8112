"""Run statistics accumulate incrementally and agree with a direct computation."""

from __future__ import annotations

import itertools
import math
import statistics
from decimal import Decimal

from daemon.report import RunStats, summarize

HOUR = 3600


def test_drawdown_sharpe_and_win_rate_match_a_direct_computation() -> None:
    equity = [100.0, 110.0, 99.0, 104.5, 121.0, 108.9, 130.0]
    ts = [i * HOUR for i in range(len(equity))]
    stats = RunStats(100.0)
    for t, e in zip(ts, equity, strict=True):
        stats.add(t, e)
    for pnl in ("5", "-2", "0", "7"):
        stats.add_trade(Decimal(pnl))
    # worst fall: 121 -> 108.9 is 10%, 110 -> 99 is 10% as well
    assert math.isclose(stats.worst_drawdown, 0.10)
    returns = [b / a - 1 for a, b in itertools.pairwise(equity)]
    per_year = len(returns) / ((ts[-1] - ts[0]) / (365.25 * 86400))
    expected = statistics.mean(returns) / statistics.stdev(returns) * math.sqrt(per_year)
    assert math.isclose(stats.sharpe() or 0.0, expected, rel_tol=1e-12)
    summary = summarize(stats=stats, counts={"bars": 7}, fees=Decimal("1.234"), realized_net=Decimal("9"), elapsed=1.0)
    assert summary.trades == 4 and summary.win_rate == 0.5
    assert summary.final_equity == 130.0 and summary.total_return_pct == 30.0
    assert summary.max_drawdown_pct == 10.0
    assert summary.fees == "1.23"


def test_too_short_or_flat_runs_have_no_sharpe() -> None:
    stats = RunStats(100.0)
    assert stats.sharpe() is None
    for i in range(5):
        stats.add(i * HOUR, 100.0)
    assert stats.sharpe() is None
    assert stats.worst_drawdown == 0.0
