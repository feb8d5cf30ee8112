"""The assembled daemon: components built from a configuration, and what an operator can ask of them.

Deliberately thin. Every decision lives in a component (guard, strategy,
sizing, governor, order manager, portfolio, store); this module connects
them and answers the control surface (pause, resume, flatten, status, risk).
How bars are fed and which services run is the business of the two runners
in ``daemon.runners`` (live and backtest); the venue is whatever ``Broker``
they pass in.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from brokers.base import Broker
from brokers.errors import ConfigError, RiskStateError, TradectlError
from daemon.bar_guard import BarGuard
from daemon.config import TradectlConfig
from daemon.events import EventHub
from daemon.health import HealthMonitor
from daemon.looplag import LoopLagMonitor
from daemon.orders import OrderManager, StartupOutcome, make_settle, open_books, start_safely
from daemon.pipeline import TradingPipeline
from daemon.portfolio import Portfolio
from daemon.report import Summary, summarize
from daemon.store import RiskEvent, Store
from risk.governor import RiskGovernor, TradingState
from risk.layers import build_layers
from risk.reconciler import Reconciler
from risk.sizing import build_sizer
from strategies.base import Strategy
from strategies.sma_cross import SmaCrossStrategy

log = structlog.get_logger(__name__)

_STATE_KEY = "trading_state"


def build_strategy(config: TradectlConfig) -> Strategy:
    kind = config.strategy.kind
    if kind == "sma_cross":
        sma = config.strategy.sma_cross
        try:
            return SmaCrossStrategy(sma.fast, sma.slow, sma.allow_short)
        except ValueError as exc:
            raise ConfigError(f"strategy.sma_cross: {exc}") from None
    from strategies.recurrent import RecurrentStrategy

    return RecurrentStrategy.from_config(config.strategy.recurrent, config)


@dataclass
class Daemon:
    """The components of one run and the operator's controls over them."""

    config: TradectlConfig
    mode: str  # "run" or "backtest": a label for the store's run row and /status, never branched on
    store: Store
    broker: Broker
    pipeline: TradingPipeline
    orders: OrderManager
    governor: RiskGovernor
    portfolio: Portfolio
    strategy: Strategy
    reconciler: Reconciler
    events: EventHub  # alerts, the dashboard's live feed and metrics listen here
    started: float = field(default_factory=time.monotonic)
    lag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    startup: StartupOutcome | None = None
    monitor: HealthMonitor | None = None  # the live runner's health rules; None (backtests): healthy unless stopping
    stop_event: asyncio.Event = field(default_factory=asyncio.Event)
    # held while a bar or a streamed order update is handled (LiveRunner) and while the strategy is swapped:
    # a model switch falls between two bars, never inside one
    books: asyncio.Lock = field(default_factory=asyncio.Lock)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    # ------------------------------------------------------------------ assembly
    @classmethod
    async def assemble(
        cls,
        config: TradectlConfig,
        *,
        mode: str,
        strategy: Strategy,
        broker: Broker,
        store: Store,
        fresh_account: bool,
        restore_trading_state: bool,
    ) -> Daemon:
        """Wire the components around an open ``store`` and a not yet connected ``broker``.

        ``fresh_account``: the broker account starts with this run, so the
        books start from the broker's cash and positions; otherwise they are
        rebuilt from this store's fills and reconciled against the broker.
        ``restore_trading_state``: a PAUSED or HALTED state saved by an
        earlier run stays in force until an operator resumes.
        """
        await store.begin_run(mode, config.fingerprint(), config.public_dict())
        await broker.connect()
        account = await broker.account()
        portfolio = await open_books(
            store, account, await broker.positions() if fresh_account else [], fresh_account=fresh_account,
            ts=broker.now(),
        )
        state = TradingState.ACTIVE
        saved = await store.get_state(_STATE_KEY)
        if restore_trading_state and saved in (TradingState.PAUSED.value, TradingState.HALTED.value):
            state = TradingState(saved)
            log.warning("trading state restored from the store; resume to trade", state=saved)
        governor = RiskGovernor(build_layers(config.risk, bar_seconds=config.data.bar_seconds), state=state)
        events = EventHub()
        pipeline = TradingPipeline(
            broker=broker,
            guard=BarGuard(config.guard.max_gap_seconds),
            strategy=strategy,
            sizer=build_sizer(config.sizing),
            governor=governor,
            portfolio=portfolio,
            store=store,
            alert=events.publish,
        )
        oc = config.orders
        orders = await OrderManager.create(
            store, broker, on_fill=pipeline.on_fill, on_anomaly=pipeline.on_anomaly, on_fee=pipeline.on_fee,
            submit_timeout=oc.submit_timeout_seconds, ack_timeout=oc.ack_timeout_seconds,
            not_found_limit=oc.not_found_limit,
        )
        pipeline.attach(orders)
        rc = config.reconcile
        reconciler = Reconciler(
            broker, portfolio, orders, policy=rc.policy, governor=governor, hooks=pipeline.hooks,
            audit=store.record_reconciliation, alert=pipeline._emit, settle=make_settle(broker, orders),
            confirm_delay=rc.confirm_delay_seconds, unknown_halt_after=rc.unknown_halt_after, run_id=store.run_id,
        )
        daemon = cls(config, mode, store, broker, pipeline, orders, governor, portfolio, strategy, reconciler, events)
        governor.on_transition(daemon._persist_transition)
        pipeline.on_rollback = daemon.rollback_to_gold
        return daemon

    def _persist_transition(self, previous: TradingState, to: TradingState, reason: str) -> None:
        log.warning("trading state changed", previous=previous.value, to=to.value, reason=reason)
        ts = self.pipeline.last_bar.ts if self.pipeline.last_bar else 0
        self._spawn(self.store.set_state(_STATE_KEY, to.value, ts))
        self.events.publish("state", f"trading {to.value} ({reason})",
                            {"previous": previous.value, "state": to.value, "reason": reason})

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ start-up
    async def start_safely(self) -> StartupOutcome:
        """Before any order: settle what the last process left open, then compare with the broker.

        Anything it cannot vouch for HALTs (the API stays up so an operator can look and resume).
        """
        rc = self.config.reconcile
        self.startup = await start_safely(
            self.orders, self.reconciler, self.broker.now(),
            attempts=rc.startup_attempts, retry_delay=rc.startup_retry_seconds,
        )
        return self.startup

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        if not self.stop_event.is_set():
            log.info("stop requested; finishing in-flight work")
        self.stop_event.set()
        self.broker.stop_bars()

    async def pause(self) -> dict[str, Any]:
        changed = self._change_state(TradingState.PAUSED, "manual pause")
        return {"state": self.governor.state.value, "changed": changed}

    async def resume(self) -> dict[str, Any]:
        changed = self._change_state(TradingState.ACTIVE, "manual resume")
        if changed:
            self.pipeline.resumed(self.pipeline.last_bar.ts if self.pipeline.last_bar else 0)
        return {"state": self.governor.state.value, "changed": changed}

    async def flatten(self) -> dict[str, Any]:
        return await self.pipeline.flatten("operator")

    def _change_state(self, to: TradingState, reason: str) -> bool:
        try:
            return self.governor.transition(to, reason)
        except RiskStateError as exc:
            log.warning("state change refused", error=str(exc))
            return False

    def status(self) -> dict[str, Any]:
        doc = self.pipeline.status()
        doc.update(
            mode=self.mode,
            broker=self.broker.name,
            strategy=self.strategy.describe(),
            feed=self.broker.feed_status(),
            uptime_seconds=round(time.monotonic() - self.started, 1),
            loop_lag_ms=self.lag.snapshot(),
            run_id=self.store.run_id,
        )
        return doc

    def risk_report(self) -> dict[str, Any]:
        """The trading state and every layer's current figures against its limits."""
        reconciler = self.reconciler
        return {
            "state": self.governor.state.value,
            "layers": [{"name": layer.name, "figures": layer.figures()} for layer in self.governor.layers],
            "verdict_counts": dict(self.governor.counts),
            "sizing": self.pipeline.sizer.figures(),
            "reconciliation": None if reconciler.last is None else {
                **reconciler.last.as_dict(),
                "policy": reconciler.policy,
                "runs": dict(reconciler.stats.runs),
            },
            "startup": None if self.startup is None else self.startup.as_dict(),
        }

    def health(self) -> tuple[bool, str]:
        """/healthz, the watchdog and the unhealthy exit all ask here (rules: ``daemon.health``)."""
        if self.stop_event.is_set():
            return False, "stopping"
        if self.monitor is None:
            return True, "ok"
        return self.monitor.evaluate().as_tuple()

    async def rollback_to_gold(self, ts: int) -> bool:
        """Switch the policy to the registered gold model (the drawdown halt tier asks for it).

        Trading is HALTED at that tier; the gold model decides once an operator resumes.
        Returns True when the strategy was switched. Called inside the bar (the bar path is held).
        """
        from daemon.models import gold_model

        gold = await gold_model(self.store)
        if gold is None:
            self.store.record_risk_event(
                RiskEvent(ts, None, "drawdown", "alert", "no_gold_model", "no gold model is registered")
            )
            log.warning("rollback to the gold model requested, but none is registered")
            return False
        sha, path = gold
        if self.strategy.model_sha256 == sha:
            log.info("already trading the gold model", sha256=sha)
            return False
        try:
            strategy = await self.load_model(path)
        except TradectlError as exc:
            self.store.record_risk_event(RiskEvent(ts, None, "drawdown", "alert", "gold_model_refused", str(exc)))
            log.error("gold model refused; keeping the current strategy", error=str(exc))
            return False
        await self.install_strategy(strategy, ts)
        self.store.record_risk_event(
            RiskEvent(ts, None, "drawdown", "alert", "rolled_back_to_gold", f"gold model {sha[:12]}")
        )
        log.warning("switched to the gold model", sha256=sha, path=str(path))
        self.events.publish("model_rollback", f"switched to the gold model {sha[:12]}", {"sha256": sha})
        return True

    async def load_model(self, path: Path) -> Strategy:
        """A recurrent strategy for the model file at ``path``, with this configuration (a ``ModelError`` when
        refused). Loading reads and unpickles a file: it runs off the event loop."""
        from strategies.recurrent import RecurrentStrategy

        rcfg = self.config.strategy.recurrent.model_copy(update={"model": path})
        return await asyncio.to_thread(RecurrentStrategy.from_config, rcfg, self.config)

    async def install_strategy(self, strategy: Strategy, ts: int) -> None:
        """Make ``strategy`` decide from the next bar on, its memory re-warmed from the bars up to ``ts``.

        The caller holds the bar path (inside a bar, or ``books``), so no bar and no order falls between
        the old strategy's last decision and the new one's first.
        """
        warm_up = getattr(strategy, "warm_up", None)
        if warm_up is not None:
            symbol = self.config.data.symbol
            span = strategy.warmup_bars * 4 * self.config.data.bar_seconds
            history = await self.broker.historical_bars(symbol, ts - span, ts)
            await asyncio.to_thread(warm_up, symbol, history)  # the new strategy is not shared yet
        self.strategy = self.pipeline.strategy = strategy

    # ------------------------------------------------------------------ shutdown
    async def finish(self) -> Summary:
        """Book what is left, write the run's summary and release the store and the broker.

        Safe to call after a failed start: whatever was opened is closed.
        """
        try:
            await self.lag.stop()
            log.info("event loop lag", **self.lag.snapshot())  # ms over the last minute: what the run cost the loop
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            pipeline = self.pipeline
            # what arrived after the last bar: no fill is left unbooked
            for update in self.broker.drain_updates():
                await pipeline.on_update(update)
            await pipeline.drain()
            counts = {
                "bars": pipeline.counts.bars,
                "rejected_bars": pipeline.counts.rejected_bars,
                "orders": pipeline.counts.orders,
                "fills": pipeline.counts.fills,
            }
            summary = summarize(
                stats=pipeline.stats,
                counts=counts,
                fees=self.portfolio.fees,
                realized_net=self.portfolio.realized - self.portfolio.fees,
                elapsed=time.monotonic() - self.started,
            )
            await self.store.end_run(summary.as_dict())
        finally:
            await self.release()
        log.info("stopped", **{k: v for k, v in summary.as_dict().items() if k in ("bars", "trades", "final_equity")})
        return summary

    async def release(self) -> None:
        """Close the broker and the store (idempotent): the process must be able to exit at once."""
        try:
            await self.broker.close()
        finally:
            await self.store.close()


def print_summary(title: str, summary: Summary, stream: Any = None) -> None:
    out = stream or sys.stdout
    print(f"\n{title}\n{summary.render()}", file=out)
