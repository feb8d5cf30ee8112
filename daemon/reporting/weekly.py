"""`tradectl report --weekly`: the one-pager over the live store's last seven days of bars.

Performance, the gates on the week's own figures, incidents (risk denials
and halts, rejected bars, reconciliation problems, error alerts) and the
risks standing at the end of the week (trading state, open positions,
drawdown against the tiers, the losing streak). The week ends at the newest
bar the store booked equity on, so a replay of old data gets a page about its
own last week rather than an empty one about today.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING

from daemon.reporting import sections
from daemon.reporting.data import ReportData
from daemon.reporting.page import Cell, Section
from daemon.store import reports as q

if TYPE_CHECKING:
    from daemon.config import TradectlConfig
    from daemon.store import Store

__all__ = ["WEEK_SECONDS", "WeeklyExtras", "gather_weekly", "weekly_sections"]

WEEK_SECONDS = 7 * 86_400
_BASELINE_GATES = ["beats_sma", "beats_buy_and_hold"]


class WeeklyExtras:
    """What only the weekly page shows: incidents outside the decisions and the state at the end."""

    def __init__(self, reconciliation: list[q.ReconRow], errors: list[q.AlertRow], state: str | None,
                 positions: dict[str, object], error_since: float, error_until: float) -> None:
        self.reconciliation = reconciliation
        self.errors = errors
        self.state = state
        self.positions = positions
        self.error_since, self.error_until = error_since, error_until


async def gather_weekly(store: Store) -> tuple[ReportData, WeeklyExtras]:
    end = await q.last_bar_ts(store)
    if end is None:
        from brokers.errors import DataError

        raise DataError(f"{store.path}: no equity recorded yet: nothing to report on")
    scope = q.Scope(since_ts=end - WEEK_SECONDS, until_ts=end)
    report = await sections_data(store, scope)
    now = time.time()
    extras = WeeklyExtras(
        reconciliation=await q.reconciliation_problems(store, scope),
        errors=await q.alerts_between(store, ("error",), now - WEEK_SECONDS, now),
        state=await q.trading_state(store),
        positions=dict(await q.net_positions(store)),
        error_since=now - WEEK_SECONDS,
        error_until=now,
    )
    return report, extras


async def sections_data(store: Store, scope: q.Scope) -> ReportData:
    from daemon.reporting.data import gather

    return await gather(store, scope, "weekly", baselines=False)


def weekly_sections(report: ReportData, extras: WeeklyExtras, config: TradectlConfig) -> list[Section]:
    validation = config.validation.model_copy(
        update={"advisory": sorted({*config.validation.advisory, *_BASELINE_GATES})}
    )
    gate_section, _ = sections.gates(report, validation)
    gate_section.note("beats_sma and beats_buy_and_hold are advisory here: live bars are not replayed for "
                      "baseline runs, so those two figures are n/a")
    return [
        sections.performance(report),
        sections.equity(report),
        gate_section,
        _incidents(report, extras),
        _risks(report, extras, config),
        sections.trade_list(report.trades),
    ]


def _incidents(report: ReportData, extras: WeeklyExtras) -> Section:
    section = Section("Incidents", "incidents")
    halts = [e for e in report.risk_events if e.kind == "halt"]
    rows = [
        ("risk denials", str(len(report.risk_events)), "incident_denials"),
        ("halts", str(len(halts)), "incident_halts"),
        ("bars rejected by the guard", str(sum(report.rejections.values())), "incident_rejected_bars"),
        ("reconciliation problems", str(len(extras.reconciliation)), "incident_reconciliation"),
        ("errors alerted", str(len(extras.errors)), "incident_errors"),
    ]
    section.table("incidents-table", ("incident", "count"), [(k, Cell(v, f, "num")) for k, v, f in rows])
    if report.risk_events:
        reasons = Counter((e.layer, e.kind, e.reason) for e in report.risk_events)
        section.table("incident-denials", ("layer", "verdict", "reason", "count"),
                      [(a, b, c, Cell(str(n), "", "num")) for (a, b, c), n in reasons.most_common()])
    if halts:
        section.table("incident-halts", ("bar (UTC)", "layer", "reason", "message"),
                      [(sections.utc_time(e.ts), e.layer, e.reason, e.message) for e in halts])
    if report.rejections:
        section.table("incident-rejections", ("reason", "bars"),
                      [(r, Cell(str(n), "", "num")) for r, n in sorted(report.rejections.items())])
    if extras.reconciliation:
        section.table("incident-reconciliation", ("bar (UTC)", "why", "status", "action", "detail"),
                      [(sections.utc_time(r.ts), r.reason, r.status, r.action, r.detail)
                       for r in extras.reconciliation])
    if extras.errors:
        section.table("incident-errors", ("when (UTC)", "alert"),
                      [(sections.utc_time(int(a.created_at)), a.text) for a in extras.errors])
    section.note("errors are the error alerts queued in the 7 days of wall-clock time before this page was made; "
                 "everything else is the week of bars")
    return section


def _risks(report: ReportData, extras: WeeklyExtras, config: TradectlConfig) -> Section:
    section = Section("Risks standing at the end of the week", "risks")
    values = [e for _, e in report.equity]
    peak = max(values) if values else None
    drawdown = None if not values or not peak else (1.0 - values[-1] / peak) * 100.0
    streak = 0
    for trade in reversed(report.trades):
        if trade.pnl >= 0:
            break
        streak += 1
    worst = min(report.trades, key=lambda t: t.pnl) if report.trades else None
    tiers = config.risk.drawdown
    rows = [
        ("trading state", extras.state or "not recorded", "risk_state"),
        ("open positions", ", ".join(f"{s} {q}" for s, q in sorted(extras.positions.items())) or "flat",
         "risk_positions"),
        ("drawdown from the week's peak", "n/a" if drawdown is None else f"{drawdown:.2f}%", "risk_drawdown"),
        ("drawdown tiers (warn / halve / reduce / halt)",
         " / ".join(f"{v * 100:g}%" for v in (tiers.warn, tiers.halve, tiers.reducing, tiers.halt)), "risk_tiers"),
        ("losing streak at the end", str(streak), "risk_streak"),
        ("worst trade", "n/a" if worst is None else f"{worst.pnl} ({sections.utc_time(worst.exit_ts)} UTC)",
         "risk_worst_trade"),
    ]
    return section.table("risks-table", ("risk", "now"), [(k, Cell(v, f)) for k, v, f in rows])
