"""Everything a report shows, read from the store (and the bars the run traded) before anything is drawn.

``gather`` runs on an event loop (store reads, the baselines' backtests);
what it returns is plain data, which ``sections`` turns into tables and
charts after the loop has closed. The figures are the store's: equity from
``equity_snapshots``, trades and their P&L from ``trades``, decisions from
``decisions`` — never a second bookkeeping.

Prices for the action trace are not in the store: they are the bars the run
replayed, loaded again from the run's recorded data settings (or ``--data``)
and checked against the decisions' timestamps; a run whose bars cannot be
found (a live venue's stream) says so instead of drawing a guess.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pydantic

from brokers.base import Bar, utc_datetime
from brokers.errors import TradectlError
from daemon.store import Store
from daemon.store import reports as q
from daemon.store.runs import RunTrade

if TYPE_CHECKING:
    from daemon.config import TradectlConfig

__all__ = ["ReportData", "gather"]


@dataclass
class ReportData:
    """One run's record (or a span's, for the weekly page), ready to be drawn."""

    title: str
    scope: q.Scope
    equity: list[tuple[int, float]]
    trace: list[q.TraceRow]
    counts: dict[str, int]
    trades: list[RunTrade]
    risk_events: list[q.DenialRow]
    rejections: dict[str, int]
    info: q.RunInfo | None = None
    bars: list[Bar] | None = None  # the bars decided on (with their warm-up), when they could be found
    sma_return_pct: float | None = None
    buy_and_hold_return_pct: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def first_decision_ts(self) -> int | None:
        return self.trace[0].ts if self.trace else None

    @property
    def last_decision_ts(self) -> int | None:
        return max(r.last_ts for r in self.trace) if self.trace else None


async def gather(
    store: Store, scope: q.Scope, title: str, *, config: TradectlConfig | None = None, data: Path | None = None,
    baselines: bool = True,
) -> ReportData:
    """The scope's rows; for a run also its bars (for prices) and, with ``baselines``, the SMA-cross and
    buy-and-hold returns on the same bars through the same backtest pipeline (for the two gates)."""
    report = ReportData(
        title=title,
        scope=scope,
        equity=await q.equity(store, scope),
        trace=await q.trace(store, scope),
        counts=await q.decision_counts(store, scope),
        trades=await q.trades(store, scope),
        risk_events=await q.risk_events(store, scope),
        rejections=await q.bar_rejections(store, scope),
    )
    if scope.run_id is not None:
        report.info = await q.run_info(store, scope.run_id)
    if report.info is None or not report.trace or config is None:
        return report
    run_config = _run_config(report.info, config, report.notes)
    report.bars = await asyncio.to_thread(_run_bars, run_config, data, report)
    if baselines and report.bars:
        await _baselines(run_config, report)
    return report


def _run_config(info: q.RunInfo, fallback: TradectlConfig, notes: list[str]) -> TradectlConfig:
    """The configuration the run recorded (its data, costs, risk and strategy settings)."""
    from daemon.config import TradectlConfig

    try:
        return TradectlConfig(**info.config)
    except (pydantic.ValidationError, TradectlError) as exc:
        first = str(exc).splitlines()[0]
        notes.append(f"the run's recorded configuration does not load here ({first}); the current one is used")
        return fallback


def _run_bars(config: TradectlConfig, data: Path | None, report: ReportData) -> list[Bar] | None:
    """The run's bars from its data file, cut to its decisions (with warm-up before); None with a note when
    the file is not there or does not hold every bar the run decided on."""
    from daemon.venues import load_data

    where = str(data or config.data.path or "the bundled data")
    if config.broker.kind != "sim" and data is None:
        report.notes.append(f"prices not shown: the run traded {config.broker.kind}'s stream (pass --data FILE)")
        return None
    try:
        bars = load_data(config, data)
    except TradectlError as exc:
        report.notes.append(f"prices not shown: {exc}")
        return None
    index = {b.ts for b in bars}
    missing = [r.ts for r in report.trace if r.ts not in index]
    if missing:
        report.notes.append(
            f"prices not shown: {len(missing)} of the run's decisions are on bars not in {where} "
            f"(first {utc_datetime(missing[0]):%Y-%m-%d %H:%M} UTC); pass --data with the file the run replayed"
        )
        return None
    last = report.last_decision_ts
    return [b for b in bars if b.ts <= (last or 0)]


async def _baselines(config: TradectlConfig, report: ReportData) -> None:
    """SMA cross and buy-and-hold on the run's bars, deciding first on the run's first decision bar."""
    from daemon.app import build_strategy
    from daemon.validate import trade_bars
    from strategies.buy_and_hold import BuyAndHoldStrategy

    bars: Sequence[Bar] = report.bars or []
    first = next(i for i, b in enumerate(bars) if b.ts == report.first_decision_ts)
    sma_cfg = config.model_copy(update={"strategy": config.strategy.model_copy(update={"kind": "sma_cross"})})
    jobs = (("sma", sma_cfg, build_strategy(sma_cfg)), ("buy_and_hold", config, BuyAndHoldStrategy()))
    with tempfile.TemporaryDirectory(prefix="tradectl-report-") as tmp:
        for name, cfg, strategy in jobs:
            if first - strategy.warmup_bars + 1 < 0:
                report.notes.append(
                    f"{strategy.name}: its {strategy.warmup_bars}-bar warm-up does not fit before the run's first "
                    "decision; that baseline is not computed"
                )
                continue
            run = await trade_bars(cfg, strategy, bars, first, len(bars) - 1, Path(tmp) / f"{name}.db")
            setattr(report, f"{name}_return_pct", run.curve.total_return_pct)
