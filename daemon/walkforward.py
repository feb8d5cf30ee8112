"""`tradectl walkforward`: train a model per fold, trade each fold's next stretch unseen, stitch what it made.

The folds are ``strategies.evaluation.walkforward.folds`` (rolling or
anchored) over the data's bars. For each fold:

1. a model is trained on the fold's training bars alone by the train
   command's own code (``strategies.training.command.train``, every training
   flag as for ``tradectl train``; no held-out tail inside the fold: the
   fold's test window is its held-out data);
2. out of sample, the model trades the fold's test window through the backtest
   pipeline beside the SMA baseline and buy-and-hold, and is judged by the
   gates — exactly ``tradectl validate`` (``daemon.validate.validate``) on the
   bars up to the window's end, whose held-out part is that window;
3. in sample, it trades its own training bars through the same pipeline
   (``daemon.validate.trade_bars``), for walk-forward efficiency.

The folds' out-of-sample equity curves are stitched into one curve
(``stitch_equity``) and summarised; walk-forward efficiency is annualised
out-of-sample over in-sample return, pooled over the folds.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokers.base import Bar, utc_datetime
from brokers.errors import ConfigError, DataError

if TYPE_CHECKING:
    from daemon.config import TradectlConfig
    from daemon.validate import Validation
    from strategies.evaluation.stats import CurveStats
    from strategies.evaluation.walkforward import Fold, FoldResult

__all__ = ["FoldRun", "WalkForward", "add_arguments", "run", "walk_forward"]

DEFAULT_WORKDIR = Path("var/walkforward")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Fold options, then every ``tradectl train`` option (the per-fold training budget)."""
    group = parser.add_argument_group("folds")
    group.add_argument("--mode", choices=("rolling", "anchored"), default="rolling",
                       help="rolling: fixed-length training window; anchored: training always starts at bar 0")
    group.add_argument("--train-bars", type=int, default=2000, help="bars of the first fold's training window")
    group.add_argument("--test-bars", type=int, default=500, help="bars of each out-of-sample window")
    group.add_argument("--max-folds", type=int, default=None, help="only the first N folds")
    group.add_argument("--workdir", type=Path, default=DEFAULT_WORKDIR, help="fold models and run stores")
    group.add_argument("--json", action="store_true", help="print the whole analysis as JSON")
    from strategies.training.command import add_arguments as train_arguments

    train_arguments(parser)


# ---------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class FoldRun:
    result: FoldResult
    model: Path
    model_sha256: str
    in_sample: CurveStats
    validation: Validation
    equity: tuple[tuple[int, float], ...]  # out-of-sample (bar ts, equity), first decision on

    def as_dict(self) -> dict[str, Any]:
        v = self.validation
        return {
            **self.result.as_dict(), "model": str(self.model), "model_sha256": self.model_sha256,
            "efficiency": self.result.efficiency, "in_sample": self.in_sample.as_dict(),
            "out_of_sample": v.model_run.as_dict(), "sma_return_pct": v.sma_run.curve.total_return_pct,
            "buy_and_hold_return_pct": v.buy_and_hold_run.curve.total_return_pct,
            "gates_passed": sum(g.passed for g in v.gates), "gates_total": len(v.gates),
            "gates_failed": [g.name for g in v.gates if g.required and not g.passed],
        }  # fmt: skip


@dataclass(frozen=True, slots=True)
class WalkForward:
    mode: str
    folds: tuple[FoldRun, ...]
    stitched: CurveStats
    stitched_start: int
    stitched_end: int
    efficiency: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "folds": [f.as_dict() for f in self.folds], "efficiency": self.efficiency,
            "stitched_out_of_sample": {**self.stitched.as_dict(), "start": _iso(self.stitched_start),
                                       "end": _iso(self.stitched_end)},
        }  # fmt: skip

    def render(self) -> str:
        rows = [("fold", "train bars", "test window", "IS return", "OOS return", "OOS Sharpe", "OOS max dd",
                 "trips", "buy&hold", "WFE", "gates")]  # fmt: skip
        for f in self.folds:
            r, v = f.result, f.validation
            fold, curve = r.fold, v.model_run.curve
            rows.append((
                str(fold.index + 1), f"{fold.train_start}..{fold.train_end - 1}",
                f"{utc_datetime(v.first_ts):%Y-%m-%d}..{utc_datetime(v.last_ts):%Y-%m-%d}",
                f"{r.in_sample_return_pct:+.2f}%", f"{r.out_of_sample_return_pct:+.2f}%", _num(curve.sharpe, ".2f"),
                f"{curve.max_drawdown_pct:.2f}%", str(v.model_run.trades.trades),
                f"{v.buy_and_hold_run.curve.total_return_pct:+.2f}%", _num(r.efficiency, ".2f"),
                f"{sum(g.passed for g in v.gates)}/{len(v.gates)}",
            ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
        s = self.stitched
        lines += [
            "",
            f"stitched out-of-sample equity ({len(self.folds)} {self.mode} folds, "
            f"{utc_datetime(self.stitched_start):%Y-%m-%d} .. {utc_datetime(self.stitched_end):%Y-%m-%d}, "
            f"{s.points:,} points): return {s.total_return_pct:+.2f}%, max drawdown {s.max_drawdown_pct:.2f}%, "
            f"Sharpe {_num(s.sharpe, '.2f')}, Sortino {_num(s.sortino, '.2f')}",
            "walk-forward efficiency "
            + ("n/a (in-sample return not positive)" if self.efficiency is None else f"{self.efficiency:.2f}")
            + " (annualised out-of-sample / in-sample return, pooled over folds)",
        ]
        return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _iso(ts: int) -> str:
    return utc_datetime(ts).isoformat()


# ---------------------------------------------------------------------- the analysis
def _fold_args(args: argparse.Namespace, fold: Fold, workdir: Path) -> argparse.Namespace:
    """The train options for one fold: its own model file, no held-out tail, no checkpoints, no bar."""
    fold_args = copy.copy(args)
    fold_args.out = workdir / f"fold-{fold.index + 1:02d}.zip"
    fold_args.eval_fraction = 0.0
    fold_args.checkpoint_every = 0
    fold_args.no_progress = True
    return fold_args


def _in_sample(config: TradectlConfig, model: Path, bars: list[Bar], fold: Fold, db: Path) -> tuple[CurveStats, int]:
    """The model over its own training bars, through the backtest pipeline (decisions after its warm-up)."""
    import asyncio

    from daemon.app import build_strategy
    from daemon.validate import fresh_db, model_config, trade_bars

    cfg = model_config(config, model)
    strategy = build_strategy(cfg)
    first = fold.train_start + strategy.warmup_bars - 1
    if first >= fold.train_end - 1:
        raise DataError(f"fold {fold.index + 1}: {fold.train_end - fold.train_start} training bars do not cover "
                        f"the model's warm-up of {strategy.warmup_bars}")
    run = asyncio.run(trade_bars(cfg, strategy, bars, first, fold.train_end - 1, fresh_db(db)))
    return run.curve, first


def _equity(db: Path, run_id: int, since_ts: int) -> tuple[tuple[int, float], ...]:
    import asyncio

    from daemon.store import Store
    from daemon.store.runs import run_equity

    async def read() -> list[tuple[int, float]]:
        store = await Store.open(db, batched=True)
        try:
            return await run_equity(store, run_id, since_ts=since_ts)
        finally:
            await store.close()

    return tuple(asyncio.run(read()))


def walk_forward(args: argparse.Namespace, config: TradectlConfig, *, progress: bool = True) -> WalkForward:
    """Train, trade out of sample and in sample, fold by fold; stitch and pool."""
    from daemon.validate import validate
    from strategies.evaluation.stats import YEAR_SECONDS, curve_stats
    from strategies.evaluation.walkforward import FoldResult, folds, stitch_equity, walk_forward_efficiency
    from strategies.training.command import load_data, train

    if args.cycles is not None:
        raise ConfigError("walkforward trains each fold in one go: --cycles is for tradectl train")
    if args.max_folds is not None and args.max_folds < 1:
        raise ConfigError("walkforward: --max-folds must be >= 1")
    data_path, symbol, bars = load_data(args, config)
    try:
        cuts = folds(len(bars), train_bars=args.train_bars, test_bars=args.test_bars, mode=args.mode)
    except ValueError as e:
        raise DataError(f"walkforward: {e}") from None
    cuts = cuts[: args.max_folds] if args.max_folds else cuts
    workdir: Path = args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    runs: list[FoldRun] = []
    for fold in cuts:
        if progress:
            print(f"fold {fold.index + 1}/{len(cuts)}: training on bars {fold.train_start}..{fold.train_end - 1}",
                  file=sys.stderr)
        fold_args = _fold_args(args, fold, workdir)
        meta, _ = train(fold_args, config, source=(data_path, symbol, bars[fold.train_start : fold.train_end]))
        fold_dir = workdir / f"fold-{fold.index + 1:02d}"
        fold_dir.mkdir(exist_ok=True)
        validation = validate(config, fold_args.out, bars=bars[: fold.test_end], workdir=fold_dir)
        model_run = validation.model_run
        equity = _equity(fold_dir / f"{model_run.name}.db", model_run.run_id, validation.first_ts)
        if not equity:
            raise DataError(f"fold {fold.index + 1}: the out-of-sample run recorded no equity")
        in_sample, is_first = _in_sample(config, fold_args.out, bars, fold, fold_dir / "in_sample.db")
        result = FoldResult(
            fold=fold,
            in_sample_return_pct=in_sample.total_return_pct,
            in_sample_years=(bars[fold.train_end - 1].ts - bars[is_first].ts) / YEAR_SECONDS,
            out_of_sample_return_pct=model_run.curve.total_return_pct,
            out_of_sample_years=(validation.last_ts - validation.first_ts) / YEAR_SECONDS,
        )
        runs.append(FoldRun(result, fold_args.out, meta["sha256"], in_sample, validation, equity))
    starting = float(config.broker.sim.starting_cash)
    curves = [[e for _, e in r.equity] for r in runs]
    stitched = stitch_equity(curves, starting)
    stamps = [runs[0].equity[0][0]] + [ts for r in runs for ts, _ in r.equity[1:]]
    return WalkForward(
        mode=args.mode, folds=tuple(runs), stitched=curve_stats(stamps, stitched), stitched_start=stamps[0],
        stitched_end=stamps[-1], efficiency=walk_forward_efficiency([r.result for r in runs]),
    )


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    result = walk_forward(args, config, progress=not args.json)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(result.render())
    return 0
