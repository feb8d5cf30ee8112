"""The report's sections: a ``ReportData`` in, tables, notes and charts out.

The statistics are the project's own (``strategies.evaluation``: stats,
Monte Carlo, gates), applied to the store's record; this module only picks
what to show and says plainly when something was not recorded rather than
drawing a chart of nothing.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from decimal import Decimal

import numpy as np

from brokers.base import utc_datetime
from daemon.reporting import charts
from daemon.reporting.data import ReportData
from daemon.reporting.page import Cell, Section
from strategies.evaluation.gates import Evidence, GateResult, ValidationConfig, failed_required, judge
from strategies.evaluation.stats import YEAR_SECONDS, curve_stats, max_drawdown, trade_stats

__all__ = [
    "action_trace",
    "denials",
    "equity",
    "evidence",
    "gates",
    "hold_rate",
    "money",
    "monte_carlo",
    "monthly",
    "performance",
    "regime",
    "trade_list",
    "utc_time",
]

_ORDER_ACTIONS = ("BUY", "SELL", "CLOSE")


def utc_time(ts: int) -> str:
    return f"{utc_datetime(ts):%Y-%m-%d %H:%M}"


def money(value: Decimal) -> str:
    """Exact, without trailing zeros or an exponent (the store keeps every digit it counted)."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _opt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


# ---------------------------------------------------------------------- performance
def performance(report: ReportData) -> Section:
    section = Section("Performance", "performance")
    if not report.equity:
        return section.note("no equity was recorded in this scope")
    ts, values = [t for t, _ in report.equity], [e for _, e in report.equity]
    curve = curve_stats(ts, values)
    stats = trade_stats([float(t.pnl) for t in report.trades])
    realized = sum((t.pnl for t in report.trades), Decimal(0))
    fees = sum((t.fees for t in report.trades), Decimal(0))
    rows = [
        ("period", f"{utc_time(ts[0])} .. {utc_time(ts[-1])} UTC", "period"),
        ("starting equity", f"{values[0]:.2f}", "starting_equity"),
        ("final equity", f"{values[-1]:.2f}", "final_equity"),
        ("return", f"{curve.total_return_pct:+.4f}%", "return_pct"),
        ("max drawdown", f"{curve.max_drawdown_pct:.4f}%", "max_drawdown_pct"),
        ("Sharpe (annualised)", _opt(curve.sharpe, ".2f"), "sharpe"),
        ("Sortino (annualised)", _opt(curve.sortino, ".2f"), "sortino"),
        ("round trips", str(stats.trades), "trade_count"),
        ("win rate", "n/a" if stats.win_rate is None else f"{stats.win_rate:.0%}", "win_rate"),
        ("expectancy per trade", _opt(stats.expectancy, "+.2f"), "expectancy"),
        ("profit factor", _opt(stats.profit_factor, ".2f"), "profit_factor"),
        ("SQN", f"{_opt(stats.sqn, '.2f')} ({stats.sqn_class or 'n/a'})", "sqn"),
        ("realized P&L, net of fees", money(realized), "realized_pnl"),
        ("fees", money(fees), "fees"),
        ("decisions", str(sum(report.counts.values())), "decisions"),
        ("risk denials", str(len(report.risk_events)), "risk_denials"),
        ("bars rejected by the guard", str(sum(report.rejections.values())), "bars_rejected"),
    ]
    return section.table("performance-table", ("figure", "value"), [(k, Cell(v, f, "num")) for k, v, f in rows])


def equity(report: ReportData) -> Section:
    section = Section("Equity and drawdown", "equity")
    if len(report.equity) < 2:
        return section.note("fewer than two equity snapshots: nothing to draw")
    ts, values = zip(*report.equity, strict=True)
    return section.image(charts.equity_and_drawdown(ts, values), "equity", "equity and drawdown")


# ---------------------------------------------------------------------- the policy's behaviour
def action_trace(report: ReportData) -> Section:
    section = Section("Action trace", "action-trace")
    if not report.trace:
        return section.note("no decision was recorded")
    if not report.bars:
        return section.note("price not available (see the notes): the trace is not drawn against a guess")
    close = {b.ts: b.close for b in report.bars}
    markers: dict[str, tuple[list[int], list[float]]] = {a: ([], []) for a in _ORDER_ACTIONS}
    for row in report.trace:
        if row.action in markers:
            markers[row.action][0].append(row.ts)
            markers[row.action][1].append(close[row.ts])
    shown = [b for b in report.bars if b.ts >= report.trace[0].ts]
    confident = [(r.ts, r.confidence) for r in report.trace if r.confidence is not None]
    confidence = (tuple(t for t, _ in confident), tuple(c for _, c in confident)) if confident else None
    png = charts.action_trace([b.ts for b in shown], [b.close for b in shown], markers, confidence)
    section.image(png, "action-trace", "price with every BUY, SELL and CLOSE decision and the confidence")
    counts = ", ".join(f"{a} {len(markers[a][0])}" for a in _ORDER_ACTIONS)
    section.line(f"markers: {counts}; decisions by action: "
                 + ", ".join(f"{a} {n}" for a, n in sorted(report.counts.items())))
    if confidence is None:
        section.note("confidence not recorded (this strategy reports no action probabilities)")
    return section


def _rolling_hold(report: ReportData, window: int) -> tuple[list[int], list[float]]:
    """The share of HOLD among the last ``window`` decisions, at each decisions row (folded rows weigh their bars)."""
    bars = np.array([r.bars for r in report.trace], dtype=np.int64)
    holds = np.array([r.bars if r.action == "HOLD" else 0 for r in report.trace], dtype=np.int64)
    cum_bars, cum_holds = np.cumsum(bars), np.cumsum(holds)
    start = np.searchsorted(cum_bars, cum_bars - window, side="right")
    base_bars = np.where(start > 0, cum_bars[start - 1], 0)
    base_holds = np.where(start > 0, cum_holds[start - 1], 0)
    rate = (cum_holds - base_holds) / (cum_bars - base_bars)
    return [r.ts for r in report.trace], rate.tolist()


def hold_rate(report: ReportData, config: ValidationConfig) -> Section:
    section = Section("Hold rate and the controller's bonus", "hold-rate")
    if not report.trace:
        return section.note("no decision was recorded")
    window = config.episode_bars * 5
    ts, rate = _rolling_hold(report, window)
    bonus_rows = [(r.ts, r.hold_bonus) for r in report.trace if r.hold_bonus is not None]
    bonus = (tuple(t for t, _ in bonus_rows), tuple(b for _, b in bonus_rows)) if bonus_rows else None
    band = (config.hold_rate_min, config.hold_rate_max)
    section.image(charts.hold_rate_and_bonus(ts, rate, band, bonus), "hold-rate", "rolling hold rate")
    section.line(f"hold rate over the last {window} decisions at each decision; dashed: the gate's band "
                 f"{band[0]:.2f} .. {band[1]:.2f}")
    if bonus is None:
        section.note("controller bonus: not recorded (the decisions of this run carry no hold_bonus; the "
                     "dual-lane controller steers the bonus in training, not in the live policy)")
    return section


def regime(report: ReportData) -> Section:
    section = Section("Regime score", "regime")
    rows = [(r.ts, r.regime_score) for r in report.trace if r.regime_score is not None]
    if not rows:
        return section.note("regime score: not recorded (this strategy's decisions carry none)")
    ts, score = zip(*rows, strict=True)
    return section.image(charts.regime_score(ts, score), "regime", "regime score")


def denials(report: ReportData) -> Section:
    section = Section("Risk denials by layer", "denials")
    if not report.risk_events:
        return section.note("no risk layer denied an order")
    by_layer = Counter(e.layer for e in report.risk_events)
    section.image(charts.denials_by_layer(by_layer), "denials", "risk denials by layer")
    reasons = Counter((e.layer, e.kind, e.reason) for e in report.risk_events)
    return section.table(
        "denials-table", ("layer", "verdict", "reason", "count"),
        [(layer, kind, reason, Cell(str(n), "denials", "num")) for (layer, kind, reason), n in reasons.most_common()],
    )


# ---------------------------------------------------------------------- returns and trades
def _monthly(report: ReportData) -> list[tuple[str, float]]:
    """Each calendar month's return (UTC): its last equity over the previous month's last (the first month:
    over the first snapshot)."""
    month_end: dict[str, float] = {}
    for ts, value in report.equity:
        month_end[f"{utc_datetime(ts):%Y-%m}"] = value
    out, previous = [], report.equity[0][1]
    for month, value in month_end.items():
        out.append((month, (value / previous - 1.0) * 100.0))
        previous = value
    return out


def monthly(report: ReportData) -> Section:
    section = Section("Monthly returns", "monthly")
    if not report.equity:
        return section.note("no equity was recorded")
    rows = _monthly(report)
    section.image(charts.monthly_returns([m for m, _ in rows], [r for _, r in rows]), "monthly", "monthly returns")
    return section.table("monthly-table", ("month", "return"), [(m, Cell(f"{r:+.3f}%", "month_return", "num"))
                                                                for m, r in rows])


def trade_list(trades: Sequence) -> Section:
    section = Section("Trades", "trades")
    if not trades:
        return section.note("no round trip was closed")
    rows = [
        (
            Cell(str(i), "trade_no", "num"), t.symbol, "long" if t.direction > 0 else "short",
            Cell(str(t.quantity), "quantity", "num"), utc_time(t.entry_ts),
            Cell(str(t.entry_price), "entry_price", "num"), utc_time(t.exit_ts),
            Cell(str(t.exit_price), "exit_price", "num"), Cell(money(t.fees), "trade_fees", "num"),
            Cell(money(t.pnl), "trade_pnl", "num " + ("pass" if t.pnl > 0 else "fail" if t.pnl < 0 else "")),
            t.entry_reason, t.exit_reason,
        )
        for i, t in enumerate(trades, 1)
    ]
    headers = ("#", "symbol", "side", "quantity", "entry (UTC)", "entry price", "exit (UTC)", "exit price", "fees",
               "P&L net", "entry reason", "exit reason")
    return section.table("trades-table", headers, rows)


# ---------------------------------------------------------------------- gates and Monte Carlo
def evidence(report: ReportData) -> Evidence:
    """The gates' figures from the run's record: equity and decisions from its first decision on."""
    first = report.first_decision_ts or 0
    curve_points = [(t, e) for t, e in report.equity if t >= first]
    curve = curve_stats([t for t, _ in curve_points], [e for _, e in curve_points])
    if report.bars:
        days = {utc_datetime(b.ts).date() for b in report.bars if b.ts >= first}
    else:
        days = {utc_datetime(t).date() for r in report.trace for t in (r.ts, r.last_ts)}
    action_map = ("HOLD", "BUY", "SELL", "CLOSE")
    return Evidence(
        decisions=sum(report.counts.values()),
        action_counts=report.counts,
        invalid_actions=sum(n for a, n in report.counts.items() if a not in action_map),
        trading_days=len(days),
        round_trips=len(report.trades),
        return_pct=curve.total_return_pct,
        max_drawdown_pct=curve.max_drawdown_pct,
        sharpe=curve.sharpe,
        sma_return_pct=report.sma_return_pct,
        buy_and_hold_return_pct=report.buy_and_hold_return_pct,
        action_map=action_map,
    )


def gates(report: ReportData, config: ValidationConfig) -> tuple[Section, list[GateResult]]:
    section = Section("Validation gates", "gates")
    results = judge(evidence(report), config)
    rows = []
    for r in results:
        verdict = "PASS" if r.passed else ("FAIL" if r.required else "fail (advisory)")
        rows.append((Cell(r.name, "gate"), Cell(verdict, "gate_result", "pass" if r.passed else "fail"),
                     Cell(r.shown, "gate_figure", "num"), r.limit, r.detail))
    section.table("gates-table", ("gate", "result", "figure", "limit", "detail"), rows)
    failed = failed_required(results)
    if failed:
        section.line(f"REJECTED: {len(failed)} required gate(s) failed: {', '.join(r.name for r in failed)}",
                     "verdict fail")
    else:
        section.line("PASSED: every required gate passed", "verdict pass")
    section.note("the gates of strategies/evaluation/gates.py on this run's own figures (from its first decision), "
                 "with the limits of the current configuration's validation section; the baselines traded the "
                 "same bars through the same backtest pipeline")
    return section, results


def monte_carlo(report: ReportData, config: ValidationConfig) -> Section:
    from strategies.evaluation.montecarlo import bootstrap_curves, bootstrap_trades

    section = Section("Monte Carlo over the trade list", "monte-carlo")
    pnls = np.array([float(t.pnl) for t in report.trades], dtype=np.float64)
    if not len(pnls) or len(report.equity) < 2:
        return section.note("no closed trade to resample")
    start = report.equity[0][1]
    years = (report.equity[-1][0] - report.equity[0][0]) / YEAR_SECONDS
    if years <= 0:
        return section.note("the run spans no time: no annual rate to compute")
    runs, seed = config.monte_carlo_runs, config.monte_carlo_seed
    mc = bootstrap_trades(pnls, starting_equity=start, years=years, runs=runs, seed=seed,
                          loss_pct=config.monte_carlo_loss_pct)
    curves, _ = bootstrap_curves(pnls, starting_equity=start, runs=runs, draws=len(pnls), seed=seed)
    finals = (curves[:, -1] / start - 1.0) * 100.0
    drawdowns = [max_drawdown(c) * 100.0 for c in curves]
    section.image(charts.monte_carlo(finals, drawdowns, float(np.percentile(finals, 25))), "monte-carlo",
                  "bootstrap distribution of final return and max drawdown")
    rows = [
        ("bootstrap runs", f"{mc.runs:,} of {mc.trades_per_run} trades, seed {mc.seed}", "mc_runs"),
        ("CAR25", f"{mc.car25_pct:+.2f}%", "car25"),
        ("CAR50", f"{mc.car50_pct:+.2f}%", "car50"),
        ("95th percentile max drawdown", f"{mc.max_drawdown_p95_pct:.2f}%", "mc_dd95"),
        (f"P(loss{f' >= {mc.loss_pct:g}%' if mc.loss_pct else ''})", f"{mc.loss_probability:.1%}", "mc_loss"),
        ("P(ruin)", f"{mc.ruin_probability:.1%}", "mc_ruin"),
    ]
    return section.table("monte-carlo-table", ("figure", "value"), [(k, Cell(v, f, "num")) for k, v, f in rows])
