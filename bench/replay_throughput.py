"""Replay throughput: tradectl's full pipeline vs backtesting.py, same bars, same strategy, same run.

Workload: the SMA-cross baseline (fast 10 / slow 30, long/short, fixed 10,000
units) on 100,000 hourly bars (the bundled EUR/USD 2017 year repeated, shifted
by whole weeks). tradectl runs the whole daemon pipeline in backtest mode: bar
guard, strategy, sizing, every risk layer, order manager journaling each order
to SQLite before the simulated broker sees it, fills, portfolio, and every
decision and equity snapshot written to the store.

The drawdown tiers and the losing-streak pause are widened/disabled here so
that both engines take the same trades (backtesting.py has no risk layers);
every layer still runs on every order.

Not a test: prints bars/s for both and the ratio. Run: `.venv/bin/python bench/replay_throughput.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from brokers.base import Bar
from brokers.history import load_bundled, repeat_bars
from daemon.config import TradectlConfig
from daemon.logs import configure_logging
from daemon.runners import BacktestRunner


def _config(db: Path) -> TradectlConfig:
    return TradectlConfig(
        store={"path": str(db)},
        strategy={"kind": "sma_cross", "sma_cross": {"fast": 10, "slow": 30, "allow_short": True}},
        risk={
            "drawdown": {"warn": 0.5, "halve": 0.6, "reducing": 0.7, "halt": 0.8},
            "loss_streak": {"enabled": False},
            "daily_loss": {"limit": 0.5},
        },
    )


def _rss_bytes() -> int:
    """Resident set size now (not the peak): Linux /proc, 0 where it is not available."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0
    return pages * resource.getpagesize()


class _MemoryProbe:
    """Samples RSS through the backtest's progress callback: once after warm-up, then at the end."""

    def __init__(self, warmup_bars: int) -> None:
        self.warmup_bars = warmup_bars
        self.bars = 0
        self.after_warmup: tuple[int, int] | None = None  # (bars, rss)

    def __call__(self, advanced: int) -> None:
        self.bars += advanced
        if self.after_warmup is None and self.bars >= self.warmup_bars:
            self.after_warmup = (self.bars, _rss_bytes())


async def _tradectl(bars: list[Bar], db: Path, probe: _MemoryProbe) -> tuple[float, int, int]:
    # the same in-memory bars as backtesting.py
    runner = await BacktestRunner.open(_config(db), db_path=db, bars=bars)
    started = time.perf_counter()
    summary = await runner.run(install_signals=False, progress=probe)
    elapsed = time.perf_counter() - started
    return elapsed, summary.trades, summary.orders


def _backtesting_py(bars: list[Bar]) -> tuple[float, int]:
    import pandas as pd
    from backtesting import Backtest, Strategy
    from backtesting.lib import crossover

    warnings.filterwarnings("ignore")
    frame = pd.DataFrame(
        {
            "Open": [b.open for b in bars],
            "High": [b.high for b in bars],
            "Low": [b.low for b in bars],
            "Close": [b.close for b in bars],
            "Volume": [b.volume for b in bars],
        },
        index=pd.to_datetime([b.ts for b in bars], unit="s"),
    )

    def sma(values: object, n: int) -> object:
        return pd.Series(values).rolling(n).mean()

    class SmaCross(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.fast = self.I(sma, self.data.Close, 10)
            self.slow = self.I(sma, self.data.Close, 30)

        def next(self) -> None:
            if crossover(self.fast, self.slow):
                self.position.close()
                self.buy(size=10_000)
            elif crossover(self.slow, self.fast):
                self.position.close()
                self.sell(size=10_000)

    started = time.perf_counter()
    stats = Backtest(frame, SmaCross, cash=100_000, commission=0.00002, spread=0.0001, finalize_trades=True).run()
    return time.perf_counter() - started, int(stats["# Trades"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=100_000)
    args = parser.parse_args()
    configure_logging("error")
    bars = repeat_bars(load_bundled(), args.bars)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    probe = _MemoryProbe(warmup_bars=min(20_000, len(bars) // 5))
    with tempfile.TemporaryDirectory() as tmp:
        ours, our_trades, our_orders = asyncio.run(_tradectl(bars, Path(tmp) / "bench.db", probe))
        rss_end = _rss_bytes()  # before the store's files go: the same process state as during the run
    rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    theirs, their_trades = _backtesting_py(bars)
    ours_rate, theirs_rate = len(bars) / ours, len(bars) / theirs
    print(f"replay throughput, SMA-cross 10/30 on {len(bars):,} hourly bars (bundled EUR/USD 2017 repeated)")
    print(f"  tradectl full pipeline + SQLite store  {ours_rate:>10,.0f} bars/s  ({ours:.2f}s, {our_orders} orders,"
          f" {our_trades} round trips)")
    print(f"  backtesting.py {_version()}                 {theirs_rate:>10,.0f} bars/s  ({theirs:.2f}s,"
          f" {their_trades} trades)")
    print(f"  ratio tradectl / backtesting.py        {ours_rate / theirs_rate:>10.2f}x   (target >= 0.5x)")
    print(f"  peak RSS growth during the tradectl run: {(rss_after - rss_before) / 1024:.1f} MB")
    if probe.after_warmup is not None and probe.after_warmup[1] and probe.bars > probe.after_warmup[0]:
        warm_bars, warm_rss = probe.after_warmup
        per_100k = (rss_end - warm_rss) / (probe.bars - warm_bars) * 100_000 / 2**20
        print(f"  RSS growth after warm-up ({warm_bars:,} bars): {per_100k:+.2f} MB per 100,000 bars"
              "   (target <= 1 MB)")


def _version() -> str:
    from importlib.metadata import version

    return version("backtesting")


if __name__ == "__main__":
    main()
