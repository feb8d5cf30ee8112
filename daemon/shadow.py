"""`tradectl shadow CANDIDATE`: the candidate beside the production model over the last trading days.

Both models trade the same last ``--days`` trading days (UTC dates with bars) of the data through
``BacktestRunner`` — bar guard, features, policy, sizing, risk governor, order manager, simulated
broker with the configured costs — each with a fresh account (``daemon.validate.trade_bars``, the
same runs ``tradectl validate`` makes), and every figure is read back from the two runs' stores:

* decision agreement: the share of bars on which both decided the same action;
* P&L of each from its fills: gross realized P&L, fees, and the net of the two (``Decimal``), with
  the position still open at the end marked separately;
* the days each gate passed: the validation gates that mean something for one day
  (``promotion.shadow_gates``) judged on each day's decisions, closed round trips and equity.

The production model is the registry's (``tradectl models promote``), else the configured model
(the bundled default unless ``strategy.recurrent.model`` says otherwise). The replay passes when
each required day gate passed on at least ``promotion.shadow_min_pass_share`` of the days and (with
``promotion.shadow_not_worse``) the candidate's net P&L is at least the production model's. The
result is recorded for the candidate's SHA-256; ``tradectl models promote`` requires a passed one
made beside the current production model.

``judge_day`` is also how a running daemon judges a drifted model's trading day
(``daemon.model_switch``): one rule for a day, replayed or live.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokers.base import Bar, utc_datetime
from brokers.errors import DataError, ModelError
from strategies.evaluation.gates import Evidence, GateResult, judge

if TYPE_CHECKING:
    from daemon.config import TradectlConfig
    from daemon.store import Store
    from daemon.store.runs import RunTrade
    from daemon.validate import StrategyRun

__all__ = [
    "DayJudgement", "ModelReplay", "Shadow", "add_arguments", "day_bounds", "judge_day", "judge_stored_day", "run",
    "shadow_replay",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``shadow`` subcommand's options (the CLI adds ``--config``)."""
    parser.add_argument("candidate", type=Path, help="candidate model zip (its <model>.meta.json beside it)")
    parser.add_argument("--days", type=int, default=None, help="trading days to replay (default promotion.shadow_days)")
    parser.add_argument(
        "--data", type=Path, default=None, help="CSV/Parquet bars (default: config data.path, else the bundled data)"
    )
    parser.add_argument("--db", type=Path, default=None, help="registry database (default: store.path)")
    parser.add_argument("--json", action="store_true", help="print the whole report as JSON")


# ---------------------------------------------------------------------- one day
@dataclass(frozen=True, slots=True)
class DayJudgement:
    """One trading day of one model, judged by the day gates."""

    day: date
    decisions: int
    round_trips: int
    return_pct: float
    gates: list[GateResult]

    @property
    def failed(self) -> list[str]:
        return [g.name for g in self.gates if g.required and not g.passed]

    def as_dict(self) -> dict[str, Any]:
        return {
            "day": self.day.isoformat(), "decisions": self.decisions, "round_trips": self.round_trips,
            "return_pct": self.return_pct, "gates": {g.name: g.passed for g in self.gates}, "failed": self.failed,
        }


def judge_day(
    day: date,
    actions: Sequence[str],
    trades: Sequence[RunTrade],
    equity: Sequence[tuple[int, float]],
    action_map: Sequence[str],
    config: TradectlConfig,
) -> DayJudgement:
    """Judge one day: its decisions' ``actions``, the round trips closed that day and its equity points
    (the day's, preceded by the last point before it so that the day's first move counts)."""
    from strategies.evaluation.stats import max_drawdown

    counts: dict[str, int] = {}
    for action in actions:
        counts[action] = counts.get(action, 0) + 1
    curve = [e for _, e in equity]
    ret = (curve[-1] / curve[0] - 1.0) * 100.0 if len(curve) > 1 and curve[0] else 0.0
    evidence = Evidence(
        decisions=len(actions),
        action_counts=counts,
        invalid_actions=sum(n for a, n in counts.items() if a not in action_map),
        trading_days=1,
        round_trips=len(trades),
        return_pct=ret,
        max_drawdown_pct=max_drawdown(curve) * 100.0 if curve else 0.0,
        sharpe=None,
        sma_return_pct=None,
        buy_and_hold_return_pct=None,
        action_map=tuple(action_map),
    )
    wanted = set(config.promotion.shadow_gates)
    gates = [g for g in judge(evidence, config.validation) if g.name in wanted]
    return DayJudgement(day, len(actions), len(trades), ret, gates)


def day_bounds(day: date) -> tuple[int, int]:
    """The day's bar timestamps: [UTC midnight, next UTC midnight)."""
    start = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
    return start, start + 86_400


async def judge_stored_day(
    store: Store, run_id: int, day: date, action_map: Sequence[str], config: TradectlConfig
) -> DayJudgement:
    """``judge_day`` on one day of a run as its store recorded it (a replay's or the live daemon's)."""
    from daemon.store.runs import run_day

    actions, trades, equity = await run_day(store, run_id, *day_bounds(day))
    return judge_day(day, actions, trades, equity, action_map, config)


# ---------------------------------------------------------------------- one model's replay
@dataclass(frozen=True, slots=True)
class ModelReplay:
    """One model's trading of the shadow days, as its store recorded it."""

    role: str  # "candidate" | "production"
    path: Path
    sha256: str
    source: str  # where the production model came from; "given" for the candidate
    run: StrategyRun
    fills: int
    realized_pnl: Decimal
    fees: Decimal
    unrealized_at_end: float
    decisions: dict[int, str]  # bar ts -> action (folded rows expanded)
    days: list[DayJudgement]

    @property
    def net_pnl(self) -> Decimal:
        return self.realized_pnl - self.fees

    def gate_days(self) -> dict[str, int]:
        """Gate -> days it passed."""
        passed: dict[str, int] = {}
        for day in self.days:
            for g in day.gates:
                passed[g.name] = passed.get(g.name, 0) + int(g.passed)
        return passed

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role, "model": str(self.path), "sha256": self.sha256, "source": self.source,
            "fills": self.fills, "realized_pnl": str(self.realized_pnl), "fees": str(self.fees),
            "net_pnl": str(self.net_pnl), "unrealized_at_end": self.unrealized_at_end,
            "return_pct": self.run.curve.total_return_pct, "max_drawdown_pct": self.run.curve.max_drawdown_pct,
            "round_trips": self.run.trades.trades, "decisions": len(self.decisions),
            "gate_days": self.gate_days(), "days": [d.as_dict() for d in self.days],
        }


@dataclass(frozen=True, slots=True)
class Shadow:
    candidate: ModelReplay
    production: ModelReplay
    days: list[date]
    first_ts: int
    last_ts: int
    bars: int
    compared: int  # bars on which both models decided
    agreeing: int
    min_pass_share: float
    failed: list[str] = field(default_factory=list)

    @property
    def agreement(self) -> float | None:
        return self.agreeing / self.compared if self.compared else None

    @property
    def passed(self) -> bool:
        return not self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "start": utc_datetime(self.first_ts).isoformat(), "end": utc_datetime(self.last_ts).isoformat(),
            "days": [d.isoformat() for d in self.days], "bars": self.bars,
            "agreement": self.agreement, "agreeing_bars": self.agreeing, "compared_bars": self.compared,
            "candidate": self.candidate.as_dict(), "production": self.production.as_dict(),
            "min_pass_share": self.min_pass_share, "passed": self.passed, "failed": self.failed,
        }

    def render(self) -> str:
        c, p = self.candidate, self.production
        n = len(self.days)
        agree = "n/a" if self.agreement is None else f"{self.agreement:.1%}"
        lines = [
            f"shadow replay  {utc_datetime(self.first_ts):%Y-%m-%d %H:%M} .. "
            f"{utc_datetime(self.last_ts):%Y-%m-%d %H:%M} UTC: {n} trading days, {self.bars:,} bars; "
            "both models through the backtest pipeline, after costs",
            f"candidate   {c.sha256[:16]}  {c.path}",
            f"production  {p.sha256[:16]}  {p.path} ({p.source})",
            "",
            f"decision agreement  {agree} ({self.agreeing} of {self.compared} bars with the same action)",
            "",
        ]
        rows = [("", "net P&L", "realized", "fees", "open P&L", "fills", "round trips", "return", "max dd")]
        for r in (c, p):
            rows.append((
                r.role, f"{r.net_pnl:+.2f}", f"{r.realized_pnl:+.2f}", f"{r.fees:.2f}", f"{r.unrealized_at_end:+.2f}",
                str(r.fills), str(r.run.trades.trades), f"{r.run.curve.total_return_pct:+.2f}%",
                f"{r.run.curve.max_drawdown_pct:.2f}%",
            ))
        lines += _table(rows)
        lines += ["", f"days each gate passed (of {n}; needed: {self.min_pass_share:.0%} of the days)"]
        cd, pd = c.gate_days(), p.gate_days()
        gate_rows = [(g, f"{cd[g]}/{n}", f"{pd.get(g, 0)}/{n}") for g in cd]
        lines += _table([("gate", "candidate", "production"), *gate_rows])
        lines.append("")
        if self.failed:
            lines.append(f"REJECTED: {'; '.join(self.failed)}")
        else:
            lines.append("PASSED: the candidate may be promoted as far as the shadow replay goes")
        return "\n".join(lines)


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join([row[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True))])
            for row in rows]


def _expand(rows: Sequence[Any], bar_ts: Sequence[int], since_ts: int) -> dict[int, str]:
    """Decision rows (``TraceRow``) as bar ts -> action; a folded row stands for the accepted bars from its ts
    to its last_ts, which are exactly the series' bars in that span (a rejected bar ends a folded run)."""
    out: dict[int, str] = {}
    for row in rows:
        if row.bars == 1:
            span = [row.ts]
        else:
            span = list(bar_ts[bisect.bisect_left(bar_ts, row.ts) : bisect.bisect_right(bar_ts, row.last_ts)])
        for ts in span:
            if ts >= since_ts:
                out[ts] = row.action
    return out


async def _read_back(
    role: str, path: Path, source: str, run: StrategyRun, db: Path, bars: Sequence[Bar], first: int,
    days: Sequence[date], action_map: Sequence[str], config: TradectlConfig,
) -> ModelReplay:
    from daemon.store import Store
    from daemon.store.reports import Scope, trace
    from daemon.store.runs import run_fill_totals, run_last_unrealized
    from strategies.model_file import read_metadata

    store = await Store.open(db, batched=True)
    try:
        rows = await trace(store, Scope(run_id=run.run_id))
        totals = await run_fill_totals(store, run.run_id)
        unrealized = await run_last_unrealized(store, run.run_id)
        judged = [await judge_stored_day(store, run.run_id, day, action_map, config) for day in days]
    finally:
        await store.close()
    decisions = _expand(rows, [b.ts for b in bars], bars[first].ts)
    return ModelReplay(
        role, path, str(read_metadata(path)["sha256"]), source, run, totals.fills, totals.realized, totals.fees,
        unrealized, decisions, judged,
    )


async def production_model(store: Store, config: TradectlConfig) -> tuple[Path, str]:
    """The model in production: the registry's, else the configured one (the bundled default unless set)."""
    from strategies.recurrent import default_model_path

    entry = await store.production_model()
    if entry is not None:
        return entry.path, "registry production"
    configured = config.strategy.recurrent.model
    return (configured, "configured") if configured is not None else (default_model_path(), "bundled default")


def _window(bars: Sequence[Bar], days: int, warmup: int) -> tuple[int, list[date]]:
    """Index of the first bar of the last ``days`` UTC dates with bars, and those dates."""
    dates = sorted({utc_datetime(b.ts).date() for b in bars})
    chosen = dates[-days:]
    first = next(i for i, b in enumerate(bars) if utc_datetime(b.ts).date() >= chosen[0])
    if first < warmup - 1:
        raise DataError(
            f"the last {len(chosen)} trading days start at bar {first}, but the models need {warmup} bars of warm-up "
            "before them: fewer --days or more data"
        )
    return first, chosen


def shadow_replay(
    config: TradectlConfig, candidate: Path, *, days: int | None = None, data: Path | None = None,
    db: Path | None = None, bars: Sequence[Bar] | None = None, workdir: Path | None = None, record: bool = True,
) -> Shadow:
    """Replay the candidate and the production model over the last trading days and compare them.

    ``db``: the registry (default ``store.path``): where the production model is looked up and the
    result recorded. ``workdir`` keeps the two runs' stores (default: a temporary directory). Runs
    its own event loop, like ``tradectl validate``.
    """
    from daemon.app import build_strategy
    from daemon.validate import fresh_db, model_config, trade_bars
    from daemon.venues import load_data
    from strategies.model_file import read_metadata

    if not candidate.is_file():
        raise ModelError(f"model file {candidate} not found")
    meta = read_metadata(candidate)
    n_days = days if days is not None else config.promotion.shadow_days
    if n_days < 1:
        raise DataError(f"--days must be at least 1 (got {n_days})")
    registry = db or config.store.path
    series = list(bars) if bars is not None else load_data(config, data)
    if not series:
        raise DataError("no bars to replay")

    async def replay(root: Path) -> Shadow:
        from daemon.store import ModelEvaluation, Store

        store = await Store.open(registry)
        try:
            prod_path, source = await production_model(store, config)
        finally:
            await store.close()
        jobs = [("candidate", candidate, "given"), ("production", prod_path, source)]
        built = [(role, path, src, model_config(config, path)) for role, path, src in jobs]
        strategies = [build_strategy(cfg) for *_, cfg in built]
        first, chosen = _window(series, n_days, max(s.warmup_bars for s in strategies))
        last = len(series) - 1
        action_map = tuple(str(a) for a in meta["action_map"])
        replays = []
        for (role, path, src, cfg), strategy in zip(built, strategies, strict=True):
            db_path = fresh_db(root / f"{role}.db")
            run = await trade_bars(cfg, strategy, series, first, last, db_path)
            replays.append(await _read_back(role, path, src, run, db_path, series, first, chosen, action_map, config))
        cand, prod = replays
        common = cand.decisions.keys() & prod.decisions.keys()
        agreeing = sum(1 for ts in common if cand.decisions[ts] == prod.decisions[ts])
        result = Shadow(
            cand, prod, chosen, series[first].ts, series[last].ts, last - first + 1, len(common), agreeing,
            config.promotion.shadow_min_pass_share, _failures(cand, prod, len(chosen), config),
        )
        if record:
            store = await Store.open(registry)
            try:
                await store.record_evaluation(ModelEvaluation(
                    cand.sha256, "shadow", int(time.time()), result.passed, prod.sha256, result.as_dict(),
                ))
            finally:
                await store.close()
        return result

    if workdir is not None:
        return asyncio.run(replay(workdir))
    with tempfile.TemporaryDirectory(prefix="tradectl-shadow-") as tmp:
        return asyncio.run(replay(Path(tmp)))


def _failures(cand: ModelReplay, prod: ModelReplay, n_days: int, config: TradectlConfig) -> list[str]:
    settings = config.promotion
    failed = []
    passed = cand.gate_days()
    required = {g.name for d in cand.days for g in d.gates if g.required}
    for gate in sorted(required):
        if passed.get(gate, 0) < settings.shadow_min_pass_share * n_days:
            failed.append(f"{gate} passed on {passed.get(gate, 0)} of {n_days} days")
    if settings.shadow_not_worse and cand.net_pnl < prod.net_pnl:
        failed.append(f"net P&L {cand.net_pnl:+.2f} below the production model's {prod.net_pnl:+.2f}")
    return failed


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    """Print the shadow report; 0 when it passed, ``EXIT_REJECTED`` (5) when it did not."""
    from daemon.validate import EXIT_REJECTED

    result = shadow_replay(config, args.candidate, days=args.days, data=args.data, db=args.db)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2, default=str))
    else:
        print(result.render())
    sys.stdout.flush()
    return 0 if result.passed else EXIT_REJECTED
