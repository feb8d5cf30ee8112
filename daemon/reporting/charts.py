"""The report's charts: plain data in, PNG bytes out.

Drawn with matplotlib's object API on an Agg canvas (no pyplot, no global
figure state, no display), so a chart can be rendered in any thread; the
report renders them after its event loop has closed, never on one. Each
function draws exactly what it is given: when a series was not recorded the
page says so instead of calling a chart function.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from brokers.base import utc_datetime

__all__ = [
    "action_trace",
    "denials_by_layer",
    "equity_and_drawdown",
    "hold_rate_and_bonus",
    "monte_carlo",
    "monthly_returns",
    "regime_score",
]

_WIDTH = 11.0
_DPI = 90
_MARKERS = {"BUY": ("^", "#1a9850"), "SELL": ("v", "#d73027"), "CLOSE": ("x", "#2b2b2b")}


def _png(figure: Figure) -> bytes:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=_DPI)
    return buffer.getvalue()


def _times(ts: Sequence[int]) -> list[datetime]:
    return [utc_datetime(t) for t in ts]


def equity_and_drawdown(ts: Sequence[int], equity: Sequence[float]) -> bytes:
    """Equity above, its fall from the running peak (percent, below zero) underneath."""
    figure = Figure(figsize=(_WIDTH, 5.0))
    top, bottom = figure.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1.4]})
    times = _times(ts)
    top.plot(times, equity, color="#2166ac", linewidth=1.1)
    top.set_ylabel("equity")
    top.grid(alpha=0.3)
    peak, drawdown = float("-inf"), []
    for value in equity:
        peak = max(peak, value)
        drawdown.append((value / peak - 1.0) * 100.0)
    bottom.fill_between(times, drawdown, 0.0, color="#d6604d", alpha=0.6, linewidth=0)
    bottom.set_ylabel("drawdown %")
    bottom.grid(alpha=0.3)
    return _png(figure)


def action_trace(
    price_ts: Sequence[int],
    closes: Sequence[float],
    markers: Mapping[str, tuple[Sequence[int], Sequence[float]]],
    confidence: tuple[Sequence[int], Sequence[float]] | None,
) -> bytes:
    """Price with a marker at every BUY, SELL and CLOSE decision; the chosen action's probability below."""
    rows = 2 if confidence is not None else 1
    figure = Figure(figsize=(_WIDTH, 5.5 if rows == 2 else 4.0))
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": [3, 1.2][:rows]})
    price = axes[0][0]
    price.plot(_times(price_ts), closes, color="#555555", linewidth=0.8, label="close")
    for action, (ts, prices) in markers.items():
        symbol, color = _MARKERS[action]
        if ts:
            price.scatter(_times(ts), prices, marker=symbol, color=color, s=28, label=f"{action} ({len(ts)})", zorder=3)
    price.set_ylabel("price")
    price.legend(loc="upper left", fontsize=8)
    price.grid(alpha=0.3)
    if confidence is not None:
        conf = axes[1][0]
        conf.plot(_times(confidence[0]), confidence[1], color="#762a83", linewidth=0.7)
        conf.set_ylim(0, 1.02)
        conf.set_ylabel("confidence")
        conf.grid(alpha=0.3)
    return _png(figure)


def hold_rate_and_bonus(
    ts: Sequence[int], hold_rate: Sequence[float], band: tuple[float, float],
    bonus: tuple[Sequence[int], Sequence[float]] | None,
) -> bytes:
    """The rolling share of HOLD decisions against the gate's band; the controller's bonus when recorded."""
    rows = 2 if bonus is not None else 1
    figure = Figure(figsize=(_WIDTH, 4.5 if rows == 2 else 3.0))
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)
    ax = axes[0][0]
    ax.plot(_times(ts), hold_rate, color="#01665e", linewidth=1.0, label="hold rate (rolling)")
    for limit in band:
        ax.axhline(limit, color="#bf812d", linestyle="--", linewidth=0.8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("hold rate")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    if bonus is not None:
        b = axes[1][0]
        b.plot(_times(bonus[0]), bonus[1], color="#8c510a", linewidth=0.9)
        b.set_ylabel("hold bonus")
        b.grid(alpha=0.3)
    return _png(figure)


def regime_score(ts: Sequence[int], score: Sequence[float]) -> bytes:
    figure = Figure(figsize=(_WIDTH, 2.8))
    ax = figure.subplots()
    ax.plot(_times(ts), score, color="#35978f", linewidth=0.9)
    ax.axhline(0.0, color="#999999", linewidth=0.6)
    ax.set_ylim(-3.1, 3.1)
    ax.set_ylabel("regime score")
    ax.grid(alpha=0.3)
    return _png(figure)


def denials_by_layer(counts: Mapping[str, int]) -> bytes:
    """One bar per risk layer that denied (blocked, resized or halted) an order."""
    layers = sorted(counts, key=lambda k: counts[k])
    figure = Figure(figsize=(_WIDTH * 0.7, 0.5 + 0.45 * len(layers) + 1.0))
    ax = figure.subplots()
    ax.barh(layers, [counts[k] for k in layers], color="#b2182b")
    ax.set_xlabel("denials")
    ax.grid(alpha=0.3, axis="x")
    return _png(figure)


def monthly_returns(months: Sequence[str], returns_pct: Sequence[float]) -> bytes:
    figure = Figure(figsize=(_WIDTH, 3.2))
    ax = figure.subplots()
    colors = ["#1a9850" if r >= 0 else "#d73027" for r in returns_pct]
    ax.bar(months, returns_pct, color=colors)
    ax.axhline(0.0, color="#555555", linewidth=0.6)
    ax.set_ylabel("return %")
    ax.tick_params(axis="x", labelrotation=45, labelsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _png(figure)


def monte_carlo(final_returns_pct: Sequence[float], max_drawdowns_pct: Sequence[float], car25_line: float) -> bytes:
    """Histograms of the bootstrap runs' final return and maximum drawdown."""
    figure = Figure(figsize=(_WIDTH, 3.4))
    left, right = figure.subplots(1, 2)
    left.hist(final_returns_pct, bins=50, color="#4393c3")
    left.axvline(car25_line, color="#b2182b", linestyle="--", linewidth=1.0, label="25th percentile")
    left.axvline(0.0, color="#555555", linewidth=0.6)
    left.set_xlabel("final return % (bootstrap runs)")
    left.legend(fontsize=8)
    right.hist(max_drawdowns_pct, bins=50, color="#d6604d")
    right.set_xlabel("max drawdown % (bootstrap runs)")
    for ax in (left, right):
        ax.grid(alpha=0.3)
    return _png(figure)
