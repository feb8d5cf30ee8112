"""Prometheus metrics: ``GET /metrics`` in the text exposition format (0.0.4), built by ``prometheus_client``.

Almost everything is read from the daemon's own state when Prometheus
scrapes (a custom collector over a per-daemon ``CollectorRegistry``, never the
process-global default registry, so several daemons in one process do not
collide): the figures therefore always agree with ``/status``. Only the two
latency histograms are observed as they happen, by the pipeline, through
the callables :meth:`DaemonMetrics.attach` hands it. Those keep plain bucket
counts (a bisect and two additions, about a fifth of ``Histogram.observe``
with its lock: the policy step is timed on every bar) and are handed to
``prometheus_client`` as histogram families at scrape time; everything runs
on the event loop's thread, so a scrape never sees half an observation.

Notes on what some figures mean:

* ``tradectl_broker_connected`` / ``tradectl_broker_reconnects_total`` come
  from ``broker.feed_status()`` keys ``connected`` and ``reconnects``; the
  simulator has neither (it is always connected), so they read 1 and 0 until
  a live adapter reports them.
* ``tradectl_alert_outbox_messages`` reads :attr:`DaemonMetrics.outbox_depth`,
  a callable the alert channel (Telegram) sets; 0 while there is none.
* ``tradectl_controller_*`` appear only when the strategy carries a
  ``controller`` (the hold-bonus controller runs in training; the live
  recurrent policy has none today). The observed hold rate is
  ``tradectl_decisions_total{action="HOLD"}`` over all decisions.
* The event-loop lag gauges are the monitor's recent-window figures, not a
  histogram: the monitor keeps a rolling window, not cumulative counts.
"""

from __future__ import annotations

import math
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector

from risk.governor import TradingState

if TYPE_CHECKING:
    from daemon.app import Daemon

__all__ = ["CONTENT_TYPE", "DaemonMetrics"]

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4

# A policy step is tens of microseconds (SMA) to a few hundred (the LSTM on CPU).
POLICY_BUCKETS = (25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25)
# Bar in hand -> the broker took the order: journaling (an fsync in the live store) plus the send.
BAR_TO_ORDER_BUCKETS = (100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _number(value: Any, default: float = 0.0) -> float:
    """A float for a gauge; anything unreadable is ``default``, NaN stays NaN (Prometheus accepts it)."""
    if isinstance(value, bool):
        return 1.0 if value else 0.0
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


class LatencyHistogram:
    """Bucket counts for one latency, observed on the bar path; exposed as a Prometheus histogram."""

    __slots__ = ("bounds", "counts", "doc", "name", "sum")

    def __init__(self, name: str, doc: str, bounds: tuple[float, ...]) -> None:
        if list(bounds) != sorted(set(bounds)):
            raise ValueError(f"{name}: bucket bounds must increase, got {bounds}")
        self.name = name
        self.doc = doc
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1  # bucket le=b holds values <= b
        self.sum += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def family(self) -> HistogramMetricFamily:
        buckets = []
        cumulative = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == math.inf else repr(float(bound)), cumulative))
        return HistogramMetricFamily(self.name, self.doc, buckets=buckets, sum_value=self.sum)


class DaemonMetrics:
    """One daemon's metrics: its registry, the two histograms and the ``/metrics`` route."""

    def __init__(self, daemon: Daemon, *, outbox_depth: Callable[[], int] | None = None) -> None:
        self.daemon = daemon
        # set by the alert channel once it exists: the number of messages waiting to be sent
        self.outbox_depth = outbox_depth
        self.registry = CollectorRegistry(auto_describe=False)
        self.policy_step = LatencyHistogram(
            "tradectl_policy_step_seconds", "Time of one strategy.decide call (one bar).", POLICY_BUCKETS
        )
        self.bar_to_order = LatencyHistogram(
            "tradectl_bar_to_order_seconds",
            "From a bar entering the pipeline to the broker having taken the order it caused "
            "(journal write and submit included).",
            BAR_TO_ORDER_BUCKETS,
        )
        self.registry.register(_DaemonCollector(self))

    def attach(self) -> DaemonMetrics:
        """Have the pipeline time its policy steps and bar -> order paths into the histograms."""
        pipeline = self.daemon.pipeline
        pipeline.observe_policy = self.policy_step.observe
        pipeline.observe_bar_to_order = self.bar_to_order.observe
        return self

    def detach(self) -> None:
        pipeline = self.daemon.pipeline
        pipeline.observe_policy = None
        pipeline.observe_bar_to_order = None

    def scrape(self) -> bytes:
        return generate_latest(self.registry)

    async def handle(self, _request: web.Request) -> web.Response:
        return web.Response(body=self.scrape(), headers={"Content-Type": CONTENT_TYPE})

    def route(self) -> web.RouteDef:
        return web.get("/metrics", self.handle)


class _DaemonCollector(Collector):
    """Reads the daemon's state at scrape time."""

    def __init__(self, metrics: DaemonMetrics) -> None:
        self._metrics = metrics

    def describe(self) -> list[Metric]:
        return []  # unchecked collector: names are fixed, values come from collect()

    def collect(self) -> Iterator[Metric]:
        metrics = self._metrics
        daemon = metrics.daemon
        yield metrics.policy_step.family()
        yield metrics.bar_to_order.family()
        yield from _pipeline(daemon)
        yield from _orders(daemon)
        yield from _risk(daemon)
        yield from _books(daemon)
        yield from _strategy(daemon)
        yield from _services(daemon, metrics.outbox_depth)


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    """``name`` without ``_total``: prometheus_client appends it to the sample."""
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _pipeline(daemon: Daemon) -> Iterator[Metric]:
    pipeline = daemon.pipeline
    counts = pipeline.counts
    yield _counter("tradectl_bars_processed", "Bars that entered the pipeline, accepted or rejected.", counts.bars)
    rejected = CounterMetricFamily("tradectl_bars_rejected", "Bars rejected by the bar guard, by reason.",
                                   labels=["reason"])
    for reason, n in sorted(pipeline.guard.rejected.items()):
        rejected.add_metric([reason], n)
    yield rejected
    decisions = CounterMetricFamily("tradectl_decisions", "Strategy decisions, by action.", labels=["action"])
    for action, n in sorted(pipeline.counts.decisions_by_action.items()):
        decisions.add_metric([action], n)
    yield decisions
    yield _counter("tradectl_orders_sent", "Orders the pipeline sent (strategy and flatten).", counts.orders)
    yield _counter("tradectl_fills", "Fills booked.", counts.fills)
    yield _counter("tradectl_trades_closed", "Round trips closed.", counts.trades)


def _orders(daemon: Daemon) -> Iterator[Metric]:
    manager = daemon.orders
    by_status = CounterMetricFamily(
        "tradectl_orders",
        "Orders by status: how many were journaled (new) and how many entered each later status.",
        labels=["status"],
    )
    by_status.add_metric(["new"], manager.counts["orders"])
    for status, n in sorted(manager.status_counts.items()):
        by_status.add_metric([str(status)], n)
    yield by_status
    yield _gauge("tradectl_orders_working", "Orders not yet in a terminal state.", len(manager.working()))
    anomalies = CounterMetricFamily("tradectl_order_anomalies", "Broker reports the order manager refused or "
                                    "ignored, by kind.", labels=["kind"])
    for kind in ("duplicate_fills", "unknown_updates", "malformed_updates"):
        anomalies.add_metric([kind], manager.counts[kind])
    yield anomalies


def _risk(daemon: Daemon) -> Iterator[Metric]:
    state = GaugeMetricFamily("tradectl_trading_state", "The trading state, one-hot.", labels=["state"])
    current = daemon.governor.state
    for candidate in TradingState:
        state.add_metric([candidate.value], 1.0 if candidate is current else 0.0)
    yield state
    denials = CounterMetricFamily("tradectl_risk_denials", "Orders a risk layer blocked or halted on, by layer, "
                                  "verdict and reason.", labels=["layer", "verdict", "reason"])
    resizes = CounterMetricFamily("tradectl_risk_resizes", "Orders a risk layer cut down, by layer and reason.",
                                  labels=["layer", "reason"])
    for key, n in sorted(daemon.governor.counts.items()):
        layer, verdict, reason = [*key.split(":", 2), "", ""][:3]
        if verdict == "resize":
            resizes.add_metric([layer, reason], n)
        else:
            denials.add_metric([layer, verdict, reason], n)
    yield denials
    yield resizes


def _books(daemon: Daemon) -> Iterator[Metric]:
    portfolio = daemon.portfolio
    equity = portfolio.equity()
    peak = portfolio.peak_equity
    yield _gauge("tradectl_equity", "Account equity (cash plus positions at the last mark), quote currency.",
                 equity)
    yield _gauge("tradectl_equity_peak", "The equity peak the drawdown is measured from, quote currency.", peak)
    yield _gauge("tradectl_drawdown_ratio", "Drawdown from the equity peak, 0..1.", portfolio.drawdown() or 0.0)
    yield _gauge("tradectl_pnl_today", "Equity change since the start of the trading day, quote currency.",
                 equity - portfolio.day_start_equity)
    yield _gauge("tradectl_unrealized_pnl", "Unrealized P&L of open positions, quote currency.",
                 portfolio.unrealized())
    positions = GaugeMetricFamily("tradectl_position", "Signed position per symbol, units.", labels=["symbol"])
    for position in portfolio.positions():
        positions.add_metric([position.symbol], float(position.quantity))
    yield positions


def _strategy(daemon: Daemon) -> Iterator[Metric]:
    strategy = daemon.strategy
    features = getattr(strategy, "features", None)
    regime = getattr(features, "regime", None)
    if callable(regime):
        score = GaugeMetricFamily("tradectl_regime_score", "The regime detector's clamped score, per symbol.",
                                  labels=["symbol"])
        target = GaugeMetricFamily("tradectl_regime_target_hold_ratio", "The hold rate the regime asks for, "
                                   "per symbol.", labels=["symbol"])
        for symbol in _symbols(daemon):
            reading = regime(symbol)
            score.add_metric([symbol], _number(reading.score))
            target.add_metric([symbol], _number(reading.target_hold_rate))
        yield score
        yield target
    controller = getattr(strategy, "controller", None)
    if controller is not None:
        yield _gauge("tradectl_controller_hold_bonus", "The hold-bonus controller's current bonus.",
                     _number(getattr(controller, "bonus", math.nan), math.nan))
        yield _gauge("tradectl_controller_hold_ratio", "The hold rate the controller observes.",
                     _number(getattr(controller, "hold_rate", math.nan), math.nan))


def _symbols(daemon: Daemon) -> list[str]:
    symbols = {daemon.config.data.symbol}
    symbols.update(p.symbol for p in daemon.portfolio.positions())
    return sorted(symbols)


def _outbox(depth: Callable[[], int] | None) -> float:
    if depth is None:
        return 0.0
    try:
        return _number(depth(), math.nan)
    except Exception:  # a broken provider costs this one figure, not the scrape
        return math.nan


def _services(daemon: Daemon, outbox_depth: Callable[[], int] | None) -> Iterator[Metric]:
    lag = daemon.lag.snapshot()
    loop = GaugeMetricFamily("tradectl_event_loop_lag_seconds", "How late the event loop woke a timer over the "
                             "recent window (p50, p99) and since start (max).", labels=["stat"])
    for stat in ("p50", "p99", "max"):
        loop.add_metric([stat], _number(lag.get(stat)) / 1000.0)
    yield loop
    feed = daemon.broker.feed_status()
    yield _gauge("tradectl_broker_connected", "1 while the broker connection is up (the simulator always is).",
                 _number(feed.get("connected", True), 1.0))
    yield _counter("tradectl_broker_reconnects", "Broker reconnects since start.",
                   _number(feed.get("reconnects", 0)))
    if "lag_seconds" in feed:
        yield _gauge("tradectl_feed_lag_seconds", "How far the bar feed is behind its clock.",
                     _number(feed["lag_seconds"]))
    yield _gauge("tradectl_alert_outbox_messages", "Alert messages waiting to be sent (0 without an alert channel).",
                 _outbox(outbox_depth))
    yield _gauge("tradectl_uptime_seconds", "Seconds since the daemon started.", time.monotonic() - daemon.started)
