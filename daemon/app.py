"""Wiring: build the components from a configuration and run them in one event loop.

Deliberately thin. Every decision lives in a component (guard, strategy,
sizing, governor, order manager, portfolio, store); this module only connects
them, starts the background tasks and shuts everything down in order.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from brokers.base import Bar
from brokers.errors import ConfigError, RiskStateError, TradectlError
from brokers.history import load_bars, load_bundled
from brokers.sim import SimBroker
from brokers.sim.replay import ReplayFeed
from daemon.api import ControlApi
from daemon.bar_guard import BarGuard
from daemon.config import TradectlConfig
from daemon.looplag import LoopLagMonitor
from daemon.orders import OrderManager
from daemon.pipeline import TradingPipeline
from daemon.portfolio import Portfolio
from daemon.recovery import StartupOutcome, make_settle, open_books, start_safely, supervise
from daemon.report import Summary, summarize
from daemon.sdnotify import SystemdNotifier
from daemon.store import Store
from risk.governor import RiskGovernor, TradingState
from risk.layers import build_layers
from risk.reconciler import Reconciler
from risk.sizing import build_sizer
from strategies.base import PlainStrategy, Strategy
from strategies.sma_cross import SmaCrossStrategy

log = structlog.get_logger(__name__)

BACKTEST_INSTANCE_ID = "bt"
# bars read ahead per quiet stretch: long enough to amortise the per-stretch work, short enough for
# the progress bar, the stop check and the feed's periodic yield to the loop
_STRETCH_BARS = 512
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


def load_data(config: TradectlConfig, override: Path | None = None) -> list[Bar]:
    data = config.data
    path = override or data.path
    if path is None:
        return load_bundled()
    return load_bars(
        path,
        data.symbol,
        columns=data.columns or None,
        timezone=data.timezone,
        stamp=data.stamp,
        bar_seconds=data.bar_seconds,
    )


@dataclass
class Daemon:
    """The assembled daemon for one run (live replay or backtest)."""

    config: TradectlConfig
    mode: str
    store: Store
    feed: ReplayFeed
    broker: SimBroker
    pipeline: TradingPipeline
    orders: OrderManager
    governor: RiskGovernor
    portfolio: Portfolio
    strategy: Strategy
    started: float = field(default_factory=time.monotonic)
    lag: LoopLagMonitor = field(default_factory=LoopLagMonitor)
    api: ControlApi | None = None
    reconciler: Reconciler | None = None
    startup: StartupOutcome | None = None
    notifier: SystemdNotifier = field(default_factory=SystemdNotifier)
    # backtests of a PlainStrategy run quiet stretches (TradingPipeline.run_quiet); off = every bar via on_bar
    quiet_stretches: bool = True
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: set[asyncio.Task[Any]] = field(default_factory=set)

    # ------------------------------------------------------------------ assembly
    @classmethod
    async def assemble(
        cls,
        config: TradectlConfig,
        *,
        mode: str = "run",
        data: Path | None = None,
        db_path: Path | None = None,
        pace: float | None = None,
    ) -> Daemon:
        backtest = mode == "backtest"
        bars = load_data(config, data)
        # first, so a refused model leaves no open store and no half-written run behind
        strategy = build_strategy(config)
        store = await Store.open(
            db_path or config.store.path,
            flush_rows=config.store.flush_rows,
            instance_id=BACKTEST_INSTANCE_ID if backtest else None,
            durable=not backtest,
            # a commit without an fsync is cheaper than the hop to a worker thread (see daemon.store)
            inline=backtest or config.store.synchronous == "normal",
            synchronous=config.store.synchronous,
        )
        await store.begin_run(mode, config.fingerprint(), config.public_dict())
        feed = ReplayFeed(bars, pace=None if backtest else (config.data.pace if pace is None else pace))
        sim = config.broker.sim
        state_file = None if backtest else sim.state_file
        broker = SimBroker(
            feed, sim.costs.model(), starting_cash=sim.starting_cash, fill_at=sim.fill_at, currency=sim.currency,
            state_file=state_file, checkpoint_bars=sim.checkpoint_bars,
            # the file only has to outlive a killed daemon (the page cache does), not a power cut;
            # an fsync per order event would stall the event loop for milliseconds
            state_fsync=False,
            # a new simulated account per run (or per state file) must not reuse an earlier one's
            # order and fill ids in the same database; backtests keep fixed ids for determinism
            account_id="" if backtest else secrets.token_hex(3),
        )
        await broker.connect()
        account = await broker.account()
        # The books come from our own store (fills since the account's epoch); the broker is what they are
        # reconciled against. A sim without a state file is a new account every run.
        fresh = state_file is None
        portfolio = await open_books(
            store, account, await broker.positions() if fresh else [], fresh_account=fresh,
            ts=bars[0].ts if bars else 0,
        )
        state = TradingState.ACTIVE
        saved = await store.get_state(_STATE_KEY)
        if saved in (TradingState.PAUSED.value, TradingState.HALTED.value) and not backtest:
            state = TradingState(saved)
            log.warning("trading state restored from the store; resume to trade", state=saved)
        governor = RiskGovernor(build_layers(config.risk, bar_seconds=config.data.bar_seconds), state=state)
        pipeline = TradingPipeline(
            broker=broker,
            guard=BarGuard(config.guard.max_gap_seconds),
            strategy=strategy,
            sizer=build_sizer(config.sizing),
            governor=governor,
            portfolio=portfolio,
            store=store,
        )
        oc = config.orders
        orders = await OrderManager.create(
            store, broker, on_fill=pipeline.on_fill, on_anomaly=pipeline.on_anomaly,
            submit_timeout=oc.submit_timeout_seconds, ack_timeout=oc.ack_timeout_seconds,
            not_found_limit=oc.not_found_limit,
        )
        pipeline.attach(orders)
        daemon = cls(config, mode, store, feed, broker, pipeline, orders, governor, portfolio, strategy)
        rc = config.reconcile
        daemon.reconciler = Reconciler(
            broker, portfolio, orders, policy=rc.policy, governor=governor, hooks=pipeline.hooks,
            audit=store._write, alert=pipeline._emit, settle=make_settle(broker, orders),
            confirm_delay=rc.confirm_delay_seconds, unknown_halt_after=rc.unknown_halt_after, run_id=store.run_id,
        )
        governor.on_transition(daemon._persist_transition)
        pipeline.on_rollback = daemon.rollback_to_gold
        return daemon

    def _clock(self) -> int:
        """The daemon's notion of now for order timeouts and audits: bar time in replay."""
        bar = self.pipeline.last_bar
        return bar.ts if bar is not None else self.broker.state.clock_ts

    def _persist_transition(self, previous: TradingState, to: TradingState, reason: str) -> None:
        log.warning("trading state changed", previous=previous.value, to=to.value, reason=reason)
        ts = self.pipeline.last_bar.ts if self.pipeline.last_bar else 0
        self._spawn(self.store.set_state(_STATE_KEY, to.value, ts))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ control
    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("stop requested; finishing in-flight work")
        self._stop.set()
        self.feed.stop()

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
        last = self.feed.last_bar
        doc.update(
            mode=self.mode,
            broker=self.broker.name,
            strategy=self.strategy.describe(),
            feed={
                "position": self.feed.position,
                "total": self.feed.total,
                "lag_seconds": round(self.feed.lag_seconds, 3),
                "last_bar_ts": last.time.isoformat() if last is not None else None,
                "done": self.feed.done,
            },
            uptime_seconds=round(time.monotonic() - self.started, 1),
            loop_lag_ms=self.lag.snapshot(),
            run_id=self.store.run_id,
        )
        return doc

    def risk_report(self) -> dict[str, Any]:
        """The trading state and every layer's current figures against its limits."""
        pipeline = self.pipeline
        return {
            "state": self.governor.state.value,
            "layers": [{"name": layer.name, "figures": layer.figures()} for layer in self.governor.layers],
            "verdict_counts": dict(self.governor.counts),
            "sizing": pipeline.sizer.figures() if hasattr(pipeline.sizer, "figures") else {},
            "reconciliation": None if self.reconciler is None or self.reconciler.last is None else {
                **self.reconciler.last.as_dict(),
                "policy": self.reconciler.policy,
                "runs": dict(self.reconciler.stats.runs),
            },
            "startup": None if self.startup is None else self.startup.as_dict(),
        }

    def health(self) -> tuple[bool, str]:
        if self._stop.is_set():
            return False, "stopping"
        return True, "ok"

    # ------------------------------------------------------------------ running
    async def run(self, *, progress: Callable[[int], None] | None = None, install_signals: bool = True) -> Summary:
        loop = asyncio.get_running_loop()
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, self.request_stop)
        self.lag.start()
        if self.mode == "run":
            await self._restore_strategy_state()
        if self.config.api.enabled and self.mode == "run":
            token = self.config.api.token.get_secret_value() if self.config.api.token else None
            self.api = ControlApi(
                status=self.status,
                health=self.health,
                actions={"pause": self.pause, "resume": self.resume, "flatten": self.flatten},
                documents={"risk": self.risk_report},
                token=token,
                host=self.config.api.host,
                port=self.config.api.port,
            )
            await self.api.start()
        flusher = loop.create_task(self._flush_periodically()) if self.mode == "run" else None
        supervisor = None
        if self.reconciler is not None:
            # Before any order: settle what the last process left open, then compare with the broker.
            # Anything it cannot vouch for HALTs (the API stays up so an operator can look and resume).
            rc = self.config.reconcile
            self.startup = await start_safely(
                self.orders, self.reconciler, self._clock(),
                attempts=rc.startup_attempts, retry_delay=rc.startup_retry_seconds,
            )
            if self.mode == "run":
                supervisor = loop.create_task(supervise(
                    self.orders, self.reconciler, self._clock, reconcile_every=rc.interval_seconds,
                    timeouts_every=self.config.orders.check_every_seconds, stop=self._stop,
                ))
        if self.mode == "run":
            # READY=1 only once the store, broker and API are up: systemd (Type=notify) starts
            # dependants and the watchdog clock from here.
            self.notifier.ready(f"trading {self.strategy.name} on {self.broker.name}")
            self.notifier.start_watchdog(self.health)
        log.info(
            "trading started",
            mode=self.mode,
            strategy=self.strategy.name,
            bars=self.feed.total,
            state=self.governor.state.value,
        )
        try:
            await self._trade(progress)
        finally:
            if flusher is not None:
                flusher.cancel()
            if supervisor is not None:
                supervisor.cancel()
            summary = await self._shutdown()
            if install_signals:
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        return summary

    async def _trade(self, progress: Callable[[int], None] | None) -> None:
        pipeline = self.pipeline
        stop = self._stop
        reconciler = self.reconciler if self.mode == "run" and self.config.reconcile.after_fill else None
        broker, feed, orders = self.broker, self.feed, self.orders
        # Backtests of a plain strategy skip through stretches of bars that trade nothing (run_quiet).
        plain = pipeline.strategy if self.quiet_stretches and self._can_stretch() else None
        n = reported = 0

        async def book_fills_at_open() -> None:
            # Market orders sent on the last bar fill at the next bar's open: book them now, as a live
            # broker's fill report would be booked, instead of together with that bar.
            broker.open_next()
            await pipeline.apply_updates()

        async def step(bar: Bar) -> bool:
            """One bar (and the quiet stretch after it); True when the run should stop."""
            nonlocal n, reported
            await pipeline.on_bar(bar)
            await book_fills_at_open()
            if reconciler is not None:
                await reconciler.after_fills(bar.ts)  # once per bar's batch of fills, never from inside on_fill
            n += 1
            if plain is not None and pipeline.strategy is plain and broker.idle and not orders.has_working():
                n += await pipeline.run_quiet(feed.upcoming(_STRETCH_BARS), broker.deliver_quiet)
                await book_fills_at_open()  # the stretch may have ended with an order
                await asyncio.sleep(0)  # a stretch may skip the periodic yield below
            if progress is not None and n - reported >= 1024:
                progress(n - reported)
                reported = n
            return stop.is_set()

        if feed.pace is None:
            # a replay as fast as possible: no await per bar to get it, one yield to the loop every 256
            for i, bar in enumerate(broker.replay_now()):
                if await step(bar):
                    break
                if i & 255 == 255:
                    await asyncio.sleep(0)
        else:
            async for bar in broker.bars():
                if await step(bar):
                    break
        if progress is not None and n > reported:
            progress(n - reported)
        # apply what arrived after the last bar so no fill is left unbooked
        for update in self.broker.drain_updates():
            await pipeline.on_update(update)

    def _can_stretch(self) -> bool:
        """Quiet stretches need a replay the broker owns (no pacing, no state file) and a plain strategy."""
        return (
            self.mode == "backtest"
            and self.feed.pace is None
            and self.broker.state_file is None
            and isinstance(self.pipeline.strategy, PlainStrategy)
        )

    async def rollback_to_gold(self, ts: int) -> bool:
        """Switch the policy to the registered gold model (the drawdown halt tier asks for it).

        Trading is HALTED at that tier; the gold model decides once an operator resumes.
        Returns True when the strategy was switched.
        """
        from daemon.models import gold_model
        from strategies.recurrent import RecurrentStrategy

        gold = await gold_model(self.store)
        if gold is None:
            self.store.add_risk_event(ts, None, "drawdown", "alert", "no_gold_model", "no gold model is registered")
            log.warning("rollback to the gold model requested, but none is registered")
            return False
        sha, path = gold
        if getattr(self.strategy, "model_sha256", None) == sha:
            log.info("already trading the gold model", sha256=sha)
            return False
        try:
            rcfg = self.config.strategy.recurrent.model_copy(update={"model": path})
            # loading a model reads and unpickles a file: keep it off the event loop
            strategy = await asyncio.to_thread(RecurrentStrategy.from_config, rcfg, self.config)
        except TradectlError as exc:
            self.store.add_risk_event(ts, None, "drawdown", "alert", "gold_model_refused", str(exc))
            log.error("gold model refused; keeping the current strategy", error=str(exc))
            return False
        symbol = self.config.data.symbol
        span = strategy.warmup_bars * 4 * self.config.data.bar_seconds
        strategy.warm_up(symbol, await self.broker.historical_bars(symbol, ts - span, ts))
        self.strategy = self.pipeline.strategy = strategy
        self.store.add_risk_event(ts, None, "drawdown", "alert", "rolled_back_to_gold", f"gold model {sha[:12]}")
        log.warning("switched to the gold model", sha256=sha, path=str(path))
        return True

    async def _restore_strategy_state(self) -> None:
        """Give a recurrent policy back its memory (or re-warm it from recent history) before the first bar."""
        from strategies.recurrent import RecurrentStrategy, restore_from_store

        if not isinstance(self.strategy, RecurrentStrategy):
            return
        feed = self.feed
        # A replay's clock is its next bar; a live feed's is the wall clock.
        now = feed.bars[feed.position].ts if feed.position < feed.total else int(time.time())
        symbols = [self.config.data.symbol]
        outcome = await restore_from_store(self.strategy, self.store, self.broker, now, symbols=symbols)
        log.info("recurrent memory restored", **outcome)

    async def _save_strategy_state(self) -> None:
        from strategies.recurrent import RecurrentStrategy, save_to_store

        if isinstance(self.strategy, RecurrentStrategy):
            saved = await save_to_store(self.strategy, self.store)
            log.info("recurrent memory saved", symbols=saved)

    async def _flush_periodically(self) -> None:
        store_config = self.config.store
        last_checkpoint = time.monotonic()
        while True:
            await asyncio.sleep(store_config.flush_seconds)
            await self.store.flush()
            if time.monotonic() - last_checkpoint >= store_config.checkpoint_seconds:
                last_checkpoint = time.monotonic()
                await self.store.checkpoint()

    async def _shutdown(self) -> Summary:
        self.notifier.stopping()
        await self.notifier.stop_watchdog()
        await self.lag.stop()
        if self.api is not None:
            await self.api.stop()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        pipeline = self.pipeline
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
        if self.mode == "run":
            await self._save_strategy_state()
        await self.store.end_run(summary.as_dict())
        await self.broker.close()
        await self.store.close()
        log.info("stopped", **{k: v for k, v in summary.as_dict().items() if k in ("bars", "trades", "final_equity")})
        return summary


def print_summary(title: str, summary: Summary, stream: Any = None) -> None:
    out = stream or sys.stdout
    print(f"\n{title}\n{summary.render()}", file=out)
