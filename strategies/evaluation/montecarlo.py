"""Monte Carlo over the trade list: how the same trades could have come out in another order and mix.

One backtest is one path. Resampling its closed round trips WITH replacement
(a bootstrap; Bandy's method for CAR25) gives a distribution of outcomes the
same system could have produced over the same period: some runs draw more of
the losers, some string them together into a deeper drawdown. The figures
taken from that distribution are deliberately the pessimistic ones:

* CAR25 — the compound annual return that 75 % of runs beat (CAR50 is the
  median), each run ``trades`` draws long over ``years`` years;
* the 95th percentile of the runs' maximum drawdowns;
* the probability that a run ends down at least ``loss_pct`` of its start.

Trades add their P&L in money to the equity (no compounding): the pipeline's
sizing sets a position's size in units, not in a fraction of equity, so a
trade's P&L does not scale with the equity it happens to follow.

Draws come from a seeded ``numpy.random.Generator`` (PCG64): the same trade
list, runs and seed give the same figures everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MIN_RUNS", "MonteCarloResult", "bootstrap_curves", "bootstrap_trades", "resample_indices"]

MIN_RUNS = 1_000


@dataclass(frozen=True, slots=True)
class MonteCarloResult:
    runs: int
    trades_per_run: int
    years: float
    seed: int
    car25_pct: float
    car50_pct: float
    max_drawdown_p95_pct: float
    loss_pct: float
    loss_probability: float  # share of runs ending at least loss_pct below the start (loss_pct 0: any loss)
    ruin_probability: float  # share of runs whose equity reached zero or below

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def resample_indices(n_trades: int, runs: int, draws: int, seed: int) -> npt.NDArray[np.int64]:
    """The bootstrap's draws: ``runs`` rows of ``draws`` trade indices in [0, n_trades), with replacement."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_trades, size=(runs, draws))


def bootstrap_curves(
    pnls: npt.NDArray[np.float64], *, starting_equity: float, runs: int, draws: int, seed: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The bootstrap's equity curves (``runs`` rows of ``draws + 1`` points, the start first) and, per
    point, whether the run was ruined by then. ``bootstrap_trades`` takes its figures from these; a
    report draws their distribution from the very same curves."""
    paths = starting_equity + np.cumsum(pnls[resample_indices(len(pnls), runs, draws, seed)], axis=1)
    ruined = np.minimum.accumulate(paths, axis=1) <= 0
    paths = np.where(ruined, 0.0, paths)  # once at zero, a run stays there
    return np.hstack([np.full((runs, 1), starting_equity), paths]), ruined


def bootstrap_trades(
    pnls: Sequence[float] | npt.NDArray[np.float64],
    *,
    starting_equity: float,
    years: float,
    runs: int = 5_000,
    trades_per_run: int | None = None,
    loss_pct: float = 0.0,
    seed: int = 0,
    min_runs: int = MIN_RUNS,
) -> MonteCarloResult:
    """Bootstrap the trade list ``runs`` times (at least ``min_runs``; the issue's floor is 1,000).

    ``trades_per_run`` defaults to the number of trades recorded, so a run
    spans the same ``years`` as the backtest did. A run whose equity reaches
    zero is ruined: it stays at zero (CAR -100 %, drawdown 100 %). Memory is
    runs x trades_per_run floats (5,000 x 1,000 trades: 40 MB).
    """
    p = np.asarray(pnls, dtype=np.float64)
    if p.ndim != 1 or len(p) == 0:
        raise ValueError("Monte Carlo needs at least one closed trade")
    if not np.all(np.isfinite(p)):
        raise ValueError("trade P&L holds NaN or infinite values")
    if runs < min_runs:
        raise ValueError(f"{runs} Monte Carlo runs; at least {min_runs} are needed for stable percentiles")
    if starting_equity <= 0 or years <= 0:
        raise ValueError("starting_equity and years must be positive")
    if loss_pct < 0:
        raise ValueError("loss_pct is a loss size in percent, >= 0")
    draws = len(p) if trades_per_run is None else trades_per_run
    if draws < 1:
        raise ValueError("trades_per_run must be >= 1")

    curves, ruined = bootstrap_curves(p, starting_equity=starting_equity, runs=runs, draws=draws, seed=seed)
    peaks = np.maximum.accumulate(curves, axis=1)
    drawdowns = np.max((peaks - curves) / peaks, axis=1)
    final = curves[:, -1]
    car = (final / starting_equity) ** (1.0 / years) - 1.0
    loss_line = starting_equity * (1.0 - loss_pct / 100.0)
    lost = final < loss_line if loss_pct == 0 else final <= loss_line
    return MonteCarloResult(
        runs=runs,
        trades_per_run=draws,
        years=years,
        seed=seed,
        car25_pct=float(np.percentile(car, 25)) * 100.0,
        car50_pct=float(np.percentile(car, 50)) * 100.0,
        max_drawdown_p95_pct=float(np.percentile(drawdowns, 95)) * 100.0,
        loss_pct=loss_pct,
        loss_probability=float(np.mean(lost)),
        ruin_probability=float(np.mean(ruined[:, -1])),
    )
