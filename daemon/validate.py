"""`tradectl validate MODEL`: may this model trade? The gates, judged on data it did not train on.

The model is not evaluated by a copy of the trading logic: it trades the
held-out bars through ``BacktestRunner`` — bar guard, features, policy,
sizing, risk governor, order manager, simulated broker with the configured
costs, portfolio, store — exactly as ``tradectl backtest`` would. The
SMA-cross baseline and buy-and-hold trade the same bars through the same
runner, each starting with a fresh account and making its first decision on
the same bar as the model (each replay begins early enough to cover that
strategy's own warm-up, whose bars make no decision). Every figure is then
read back from the run's store (``daemon.store.runs``), the record the
pipeline wrote.

Held-out bars: those stamped after the model's recorded ``train_end`` (else
those before its ``train_start``). Warm-up may reach back into the training
span; no decision is made on it. A model that records no training span
cannot be validated: nothing would say which bars it has seen.

The ``invalid_actions`` gate counts decisions whose action is not in the
model's recorded action map; loading already refuses a model whose map
differs from the running one, so through this pipeline it guards that
promise rather than finding anything new.

Exit codes: 0 every required gate passed, 5 a required gate failed (the
table says which and why), 1 the validation could not run (bad model or data
file, no held-out bars).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokers.base import Bar, utc_datetime
from brokers.errors import DataError, ModelError
from strategies.evaluation.gates import Evidence, GateResult, failed_required, judge, render_gates

if TYPE_CHECKING:  # numpy-backed modules load when a validation runs, not when the CLI builds its parser
    from daemon.config import TradectlConfig
    from strategies.base import Strategy
    from strategies.evaluation.montecarlo import MonteCarloResult
    from strategies.evaluation.stats import CurveStats, TradeStats

__all__ = [
    "EXIT_REJECTED", "StrategyRun", "Validation", "add_arguments", "fresh_db", "held_out_range", "model_config", "run",
    "trade_bars", "validate",
]

EXIT_REJECTED = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``validate`` subcommand's options (the CLI adds ``--config``)."""
    parser.add_argument("model", type=Path, help="model zip (its <model>.meta.json must be beside it)")
    parser.add_argument(
        "--data", type=Path, default=None, help="CSV/Parquet bars (default: config data.path, else the bundled data)"
    )
    parser.add_argument("--json", action="store_true", help="print the whole validation as JSON")
    parser.add_argument(
        "--record", action="store_true",
        help="record the result for the model's SHA-256 in the registry database (`tradectl models promote` needs it)",
    )
    parser.add_argument("--db", type=Path, default=None, help="registry database for --record (default: store.path)")


# ---------------------------------------------------------------------- held-out bars
def _parse_time(meta: dict[str, Any], key: str) -> int | None:
    value = meta.get(key)
    if value is None:
        return None
    try:
        return int(datetime.fromisoformat(str(value)).timestamp())
    except ValueError:
        raise ModelError(f"model metadata: {key} {value!r} is not an ISO time") from None


def held_out_range(bars: Sequence[Bar], meta: dict[str, Any], warmup: int) -> tuple[int, int]:
    """Inclusive indexes of the first and last bar to decide on: outside the model's training span,
    after the longest warm-up any compared strategy needs."""
    train_start, train_end = _parse_time(meta, "train_start"), _parse_time(meta, "train_end")
    if train_start is None or train_end is None:
        raise ModelError(
            "model metadata records no training span (train_start/train_end): "
            "cannot tell which bars it did not train on"
        )
    after = [i for i, b in enumerate(bars) if b.ts > train_end]
    if after:
        first, last = max(after[0], warmup - 1), len(bars) - 1
    else:
        before = [i for i, b in enumerate(bars) if b.ts < train_start]
        first, last = warmup - 1, (before[-1] if before else -1)
    if last < first:
        span = f"{utc_datetime(train_start):%Y-%m-%d %H:%M} .. {utc_datetime(train_end):%Y-%m-%d %H:%M} UTC"
        raise DataError(
            f"no held-out bars: every bar (after a warm-up of {warmup}) lies in the model's training span {span}"
        )
    return first, last


# ---------------------------------------------------------------------- one strategy's run
@dataclass(frozen=True, slots=True)
class StrategyRun:
    """One strategy's trading of the held-out bars, as its store recorded it."""

    name: str
    curve: CurveStats
    trades: TradeStats
    trade_pnls: tuple[float, ...]
    decisions_by_action: dict[str, int]
    rejected_bars: int
    orders: int
    run_id: int = 0  # the run's id in its store (a shadow replay reads its decisions and fills back)

    @property
    def decisions(self) -> int:
        return sum(self.decisions_by_action.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "curve": self.curve.as_dict(),
            "trades": self.trades.as_dict(),
            "decisions_by_action": self.decisions_by_action,
            "decisions": self.decisions,
            "rejected_bars": self.rejected_bars,
            "orders": self.orders,
        }


async def trade_bars(
    config: TradectlConfig, strategy: Strategy, bars: Sequence[Bar], first: int, last: int, db: Path
) -> StrategyRun:
    """Replay ``bars[first - warm-up + 1 .. last]`` through ``BacktestRunner``; figures from ``bars[first]`` on."""
    from daemon.runners import BacktestRunner
    from daemon.store import Store
    from daemon.store.runs import run_equity, run_trades
    from strategies.evaluation.stats import curve_stats, trade_stats

    replay = bars[first - strategy.warmup_bars + 1 : last + 1]
    runner = await BacktestRunner.open(config, db_path=db, bars=replay, strategy=strategy)
    await runner.run(install_signals=False)
    daemon = runner.daemon
    run_id, counts = daemon.store.run_id, daemon.pipeline.counts
    store = await Store.open(db, batched=True)
    try:
        equity = await run_equity(store, run_id, since_ts=bars[first].ts)
        pnls = tuple(float(t.pnl) for t in await run_trades(store, run_id))
    finally:
        await store.close()
    return StrategyRun(
        name=strategy.name,
        curve=curve_stats([ts for ts, _ in equity], [e for _, e in equity]),
        trades=trade_stats(pnls),
        trade_pnls=pnls,
        decisions_by_action=dict(counts.decisions_by_action),
        rejected_bars=counts.rejected_bars,
        orders=counts.orders,
        run_id=run_id,
    )


def model_config(config: TradectlConfig, model: Path) -> TradectlConfig:
    """``config`` trading ``model`` with the recurrent strategy (validation and shadow replays)."""
    strategy_cfg = config.strategy
    return config.model_copy(update={"strategy": strategy_cfg.model_copy(update={
        "kind": "recurrent", "recurrent": strategy_cfg.recurrent.model_copy(update={"model": model}),
    })})


def fresh_db(db: Path) -> Path:
    """``db`` with any earlier database at that path (and its WAL files) removed: every run starts afresh."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    return db


# ---------------------------------------------------------------------- the validation
@dataclass(frozen=True, slots=True)
class Validation:
    model: Path
    model_sha256: str
    action_map: tuple[str, ...]
    first_ts: int
    last_ts: int
    held_out_bars: int
    trading_days: int
    model_run: StrategyRun
    sma_run: StrategyRun
    buy_and_hold_run: StrategyRun
    evidence: Evidence
    gates: list[GateResult]
    monte_carlo: MonteCarloResult | None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not failed_required(self.gates)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": str(self.model),
            "model_sha256": self.model_sha256,
            "held_out": {
                "start": utc_datetime(self.first_ts).isoformat(),
                "end": utc_datetime(self.last_ts).isoformat(),
                "bars": self.held_out_bars,
                "trading_days": self.trading_days,
            },
            "runs": {r.name: r.as_dict() for r in (self.model_run, self.sma_run, self.buy_and_hold_run)},
            "monte_carlo": None if self.monte_carlo is None else self.monte_carlo.as_dict(),
            "gates": [g.as_dict() for g in self.gates],
            "passed": self.passed,
            "notes": self.notes,
        }

    def render(self) -> str:
        lines = [
            f"model     {self.model}  (sha256 {self.model_sha256[:16]}…)",
            f"held out  {utc_datetime(self.first_ts):%Y-%m-%d %H:%M} .. {utc_datetime(self.last_ts):%Y-%m-%d %H:%M} "
            f"UTC: {self.held_out_bars:,} bars on {self.trading_days} dates; each strategy through the "
            "backtest pipeline, after costs",
            "",
            _runs_table((self.model_run, self.sma_run, self.buy_and_hold_run)),
            "",
            _trade_line(self.model_run.trades),
            _monte_carlo_line(self.monte_carlo),
            "",
            render_gates(self.gates),
        ]
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _runs_table(runs: Sequence[StrategyRun]) -> str:
    rows = [("", "return", "max dd", "Sharpe", "Sortino", "round trips", "win rate", "orders")]
    for r in runs:
        c, t = r.curve, r.trades
        rows.append((
            r.name, f"{c.total_return_pct:+.2f}%", f"{c.max_drawdown_pct:.2f}%", _num(c.sharpe, ".2f"),
            _num(c.sortino, ".2f"), str(t.trades), "n/a" if t.win_rate is None else f"{t.win_rate:.0%}",
            str(r.orders),
        ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [row[0].ljust(widths[0]), *(cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True))]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def _trade_line(t: TradeStats) -> str:
    pf = "n/a" if t.profit_factor is None else f"{t.profit_factor:.2f}"
    return (
        f"model trades: expectancy {_num(t.expectancy, '+.2f')} per trade, profit factor {pf}, "
        f"SQN {_num(t.sqn, '.2f')} ({t.sqn_class or 'n/a'})"
    )


def _monte_carlo_line(mc: MonteCarloResult | None) -> str:
    if mc is None:
        return "Monte Carlo: no closed trade to resample"
    return (
        f"Monte Carlo ({mc.runs:,} bootstrap runs of {mc.trades_per_run} trades, seed {mc.seed}): "
        f"CAR25 {mc.car25_pct:+.2f}%, CAR50 {mc.car50_pct:+.2f}%, 95th pct max drawdown "
        f"{mc.max_drawdown_p95_pct:.2f}%, P(loss{f' >= {mc.loss_pct:g}%' if mc.loss_pct else ''}) "
        f"{mc.loss_probability:.1%}"
    )


def validate(
    config: TradectlConfig, model: Path, *, data: Path | None = None, bars: Sequence[Bar] | None = None,
    workdir: Path | None = None,
) -> Validation:
    """Trade the held-out bars with the model and both baselines, and judge the model by the gates.

    ``workdir`` holds the three runs' stores (default: a temporary directory,
    removed afterwards). Runs its own event loop, like ``tradectl backtest``.
    """
    from daemon.app import build_strategy
    from daemon.venues import load_data
    from strategies.buy_and_hold import BuyAndHoldStrategy
    from strategies.evaluation.montecarlo import bootstrap_trades
    from strategies.evaluation.stats import YEAR_SECONDS
    from strategies.model_file import read_metadata

    if not model.is_file():
        raise ModelError(f"model file {model} not found")
    meta = read_metadata(model)  # corrupt or missing metadata: a ModelError naming the file
    strategy_cfg = config.strategy
    model_cfg = model_config(config, model)
    sma_cfg = config.model_copy(update={"strategy": strategy_cfg.model_copy(update={"kind": "sma_cross"})})
    strategies = (build_strategy(model_cfg), build_strategy(sma_cfg), BuyAndHoldStrategy())
    series = list(bars) if bars is not None else load_data(config, data)
    if not series:
        raise DataError("no bars to validate on")
    first, last = held_out_range(series, meta, max(s.warmup_bars for s in strategies))

    with tempfile.TemporaryDirectory(prefix="tradectl-validate-") as tmp:
        root = workdir or Path(tmp)
        jobs = []
        for strategy, cfg in zip(strategies, (model_cfg, sma_cfg, config), strict=True):
            jobs.append((cfg, strategy, fresh_db(root / f"{strategy.name}.db")))

        async def trade_all() -> list[StrategyRun]:
            return [await trade_bars(cfg, strategy, series, first, last, db) for cfg, strategy, db in jobs]

        runs = asyncio.run(trade_all())
    model_run, sma_run, bh_run = runs

    held = series[first : last + 1]
    days = len({utc_datetime(b.ts).date() for b in held})
    action_map = tuple(str(a) for a in meta["action_map"])
    invalid = sum(n for action, n in model_run.decisions_by_action.items() if action not in action_map)
    settings = config.validation
    evidence = Evidence(
        decisions=model_run.decisions,
        action_counts=model_run.decisions_by_action,
        invalid_actions=invalid,
        trading_days=days,
        round_trips=model_run.trades.trades,
        return_pct=model_run.curve.total_return_pct,
        max_drawdown_pct=model_run.curve.max_drawdown_pct,
        sharpe=model_run.curve.sharpe,
        sma_return_pct=sma_run.curve.total_return_pct,
        buy_and_hold_return_pct=bh_run.curve.total_return_pct,
        action_map=action_map,
    )
    years = (held[-1].ts - held[0].ts) / YEAR_SECONDS
    mc = None
    if model_run.trade_pnls and years > 0:
        mc = bootstrap_trades(
            model_run.trade_pnls, starting_equity=float(config.broker.sim.starting_cash), years=years,
            runs=settings.monte_carlo_runs, seed=settings.monte_carlo_seed, loss_pct=settings.monte_carlo_loss_pct,
        )
    notes = [
        f"{r.name}: {r.decisions} decisions, the model {model_run.decisions}: they did not decide on the same bars"
        for r in (sma_run, bh_run) if r.decisions != model_run.decisions
    ]
    notes += [f"{r.name}: {r.rejected_bars} bars rejected by the bar guard" for r in runs if r.rejected_bars]
    return Validation(
        model=model, model_sha256=str(meta["sha256"]), action_map=action_map, first_ts=held[0].ts,
        last_ts=held[-1].ts, held_out_bars=len(held), trading_days=days, model_run=model_run, sma_run=sma_run,
        buy_and_hold_run=bh_run, evidence=evidence, gates=judge(evidence, settings), monte_carlo=mc, notes=notes,
    )


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    """Print the validation (table or JSON); 0 when every required gate passed, ``EXIT_REJECTED`` otherwise."""
    result = validate(config, args.model, data=args.data)
    if args.record:
        from daemon.promotion import record_validation

        asyncio.run(record_validation(args.db or config.store.path, result))
    if args.json:
        print(json.dumps(_strict_json(result.as_dict()), indent=2, default=str))
    else:
        print(result.render())
    sys.stdout.flush()
    return 0 if result.passed else EXIT_REJECTED


def _strict_json(value: Any) -> Any:
    """Non-finite floats (a profit factor with no losing trade is infinite) as strings: strict JSON has no inf."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _strict_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strict_json(v) for v in value]
    return value
