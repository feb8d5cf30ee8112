"""The two ways to run the one pipeline: live (``tradectl run``) and backtest (``tradectl backtest``).

Both feed every bar through ``TradingPipeline.on_bar``; they differ only in
what surrounds it, and that is all that is here:

* ``BacktestRunner``: a fresh simulated account, the batched store, bars as
  fast as the broker hands them out, fills booked when the next bar arrives.
  Nothing else runs, so two backtests of the same bars are identical.
* ``LiveRunner``: the configured venue, the durable store, the control API,
  systemd notification, supervision (timeouts, periodic reconciliation), the
  recurrent policy's memory restored and saved, and order updates booked the
  moment the broker reports them rather than with the next bar.

A start that fails half-way releases what it opened (store, broker, API)
before the error reaches the caller, so the process can exit at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from brokers.base import Bar
from daemon.api import ControlApi
from daemon.app import Daemon, build_strategy
from daemon.config import TradectlConfig
from daemon.dashboard import Dashboard, daemon_snapshot
from daemon.events import LoggedErrors
from daemon.feedwatch import ConnectionWatch
from daemon.health import HealthMonitor, expected_bar_interval
from daemon.looplag import LoopLagMonitor
from daemon.metrics import DaemonMetrics
from daemon.model_switch import ModelFollower
from daemon.orders import supervise
from daemon.report import Summary
from daemon.sdnotify import SystemdNotifier
from daemon.store import Store
from daemon.venues import Venue, load_data, open_backtest_broker, open_broker
from strategies.base import Strategy

if TYPE_CHECKING:
    from daemon.telegram import TelegramService

log = structlog.get_logger(__name__)

BACKTEST_INSTANCE_ID = "bt"
_PROGRESS_EVERY = 1024  # bars between progress callbacks


async def _assemble(
    config: TradectlConfig, strategy: Strategy, venue: Venue, store: Store, *, mode: str, restore_trading_state: bool
) -> Daemon:
    """``Daemon.assemble``, closing the store and the broker if it fails."""
    try:
        return await Daemon.assemble(
            config, mode=mode, strategy=strategy, broker=venue.broker, store=store,
            fresh_account=venue.fresh_account, restore_trading_state=restore_trading_state,
        )
    except BaseException:
        try:
            await venue.broker.close()
        finally:
            await store.close()
        raise


@contextlib.contextmanager
def _stop_on_signals(daemon: Daemon, install: bool) -> Iterator[None]:
    """SIGINT/SIGTERM ask the daemon to stop after the bar in hand (nothing is cut off half-way)."""
    loop = asyncio.get_running_loop()
    if install:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, daemon.request_stop)
    try:
        yield
    finally:
        if install:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


class BacktestRunner:
    """Replays bars through the pipeline against a fresh simulated account, as fast as possible."""

    def __init__(self, daemon: Daemon, total_bars: int) -> None:
        self.daemon = daemon
        self.total_bars = total_bars

    @classmethod
    async def open(
        cls,
        config: TradectlConfig,
        *,
        db_path: Path,
        data: Path | None = None,
        bars: Sequence[Bar] | None = None,
        strategy: Strategy | None = None,
    ) -> BacktestRunner:
        """``strategy`` replaces the configured one (validation runs its baselines through this same path)."""
        # the strategy first: a refused model leaves no open store and no half-written run behind
        if strategy is None:
            strategy = build_strategy(config)
        replay = list(bars) if bars is not None else load_data(config, data)
        venue = open_backtest_broker(config, replay)
        store = await Store.open(
            db_path,
            flush_rows=config.store.flush_rows,
            instance_id=BACKTEST_INSTANCE_ID,
            batched=True,
        )
        daemon = await _assemble(config, strategy, venue, store, mode="backtest", restore_trading_state=False)
        return cls(daemon, len(replay))

    async def run(self, *, progress: Callable[[int], None] | None = None, install_signals: bool = True) -> Summary:
        daemon = self.daemon
        try:
            with _stop_on_signals(daemon, install_signals):
                await daemon.start_safely()
                log.info("backtest started", strategy=daemon.strategy.name, bars=self.total_bars)
                await self._replay(progress)
        finally:
            summary = await daemon.finish()
        return summary

    async def _replay(self, progress: Callable[[int], None] | None) -> None:
        daemon = self.daemon
        on_bar, stop = daemon.pipeline.on_bar, daemon.stop_event
        n = 0
        async for bar in daemon.broker.bars():
            await on_bar(bar)
            n += 1
            if progress is not None and n % _PROGRESS_EVERY == 0:
                progress(_PROGRESS_EVERY)
            if stop.is_set():
                break
        if progress is not None and n % _PROGRESS_EVERY:
            progress(n % _PROGRESS_EVERY)


class LiveRunner:
    """Trades the configured venue with every service an operator expects around the pipeline."""

    def __init__(self, daemon: Daemon, *, bar_interval: float | None = None) -> None:
        self.daemon = daemon
        # seconds between bars the venue should deliver (health's market-data check); default: the bar length
        self.bar_interval = float(daemon.config.data.bar_seconds) if bar_interval is None else bar_interval
        self.unhealthy_exit: str | None = None  # why the daemon stopped itself for being unhealthy too long
        self.api: ControlApi | None = None
        self.dashboard: Dashboard | None = None  # the page at /, with the API
        self.telegram: TelegramService | None = None  # alerts and commands, when telegram.enabled
        self.metrics: DaemonMetrics | None = None  # GET /metrics, with the API
        self.models = ModelFollower(daemon)  # the registry's production model, switched to without a restart
        self.notifier = SystemdNotifier()
        # a bar and a streamed order update (and a model switch) are never handled at the same time
        self._books = daemon.books
        self._restored = False

    @classmethod
    async def open(
        cls,
        config: TradectlConfig,
        *,
        db_path: Path | None = None,
        data: Path | None = None,
        pace: float | None = None,
        bars: Sequence[Bar] | None = None,
    ) -> LiveRunner:
        strategy = build_strategy(config)  # first: a refused model leaves nothing open
        replay = list(bars) if bars is not None else load_data(config, data)
        pace = config.data.pace if pace is None else pace
        venue = open_broker(config, replay, pace=pace)
        store = await Store.open(
            db_path or config.store.path,
            flush_rows=config.store.flush_rows,
            synchronous=config.store.synchronous,
        )
        daemon = await _assemble(config, strategy, venue, store, mode="run", restore_trading_state=True)
        daemon.lag = LoopLagMonitor(config.health.loop_lag_sample_ms / 1000)
        interval = expected_bar_interval(venue.broker.feed_status(), pace, config.data.bar_seconds)
        return cls(daemon, bar_interval=interval)

    async def run(self, *, install_signals: bool = True) -> Summary:
        daemon = self.daemon
        config = daemon.config
        background: list[asyncio.Task[None]] = []
        detach_errors = LoggedErrors(daemon.events, asyncio.get_running_loop()).install()
        try:
            with _stop_on_signals(daemon, install_signals):
                daemon.lag.start()
                await self._restore_strategy_state()
                await self.models.apply()  # a model promoted while no daemon ran trades from the first bar
                await self._start_api()
                await self._start_telegram()
                background.append(asyncio.create_task(self._flush_periodically()))
                await daemon.start_safely()
                rc = config.reconcile
                background.append(asyncio.create_task(supervise(
                    daemon.orders, daemon.reconciler, daemon.broker.now, reconcile_every=rc.interval_seconds,
                    timeouts_every=config.orders.check_every_seconds, stop=daemon.stop_event,
                )))
                background.append(asyncio.create_task(self._book_updates()))
                background.append(asyncio.create_task(self.models.run(daemon.stop_event)))
                watch = ConnectionWatch(daemon.events.publish, daemon.broker.name)
                background.append(asyncio.create_task(watch.run(daemon.broker.feed_status)))
                self._watch_health()
                # READY=1 only once the store, broker and API are up and the start-up reconciliation is
                # done: systemd (Type=notify) starts dependants and the watchdog clock from here.
                self.notifier.ready(f"trading {daemon.strategy.name} on {daemon.broker.name}")
                self.notifier.start_watchdog(daemon.health)
                log.info("trading started", strategy=daemon.strategy.name, broker=daemon.broker.name,
                         state=daemon.governor.state.value)
                daemon.events.publish("start", f"tradectl trading {daemon.strategy.name} on {daemon.broker.name}",
                                      {"state": daemon.governor.state.value})
                await self._trade()
        finally:
            for task in background:
                task.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await self._stop_services()
            try:
                summary = await daemon.finish()
            finally:
                detach_errors()
            daemon.events.publish("stop", "tradectl stopped", summary.as_dict())
        return summary

    async def _trade(self) -> None:
        daemon = self.daemon
        pipeline, stop = daemon.pipeline, daemon.stop_event
        bar_arrived = daemon.monitor.bar_arrived if daemon.monitor is not None else None
        async for bar in daemon.broker.bars():
            if bar_arrived is not None:
                bar_arrived()
            async with self._books:
                await pipeline.on_bar(bar)
                await self._after_fills()
            if stop.is_set():
                break

    async def _book_updates(self) -> None:
        """Book order updates as the broker streams them: a fill is in the books before the next bar."""
        broker, pipeline = self.daemon.broker, self.daemon.pipeline
        while True:
            update = await broker.next_update()
            async with self._books:
                await pipeline.on_update(update)
                await pipeline.apply_updates()  # whatever else arrived meanwhile
                await self._after_fills()

    async def _after_fills(self) -> None:
        daemon = self.daemon
        if daemon.config.reconcile.after_fill:
            await daemon.reconciler.after_fills(daemon.broker.now())

    async def _start_api(self) -> None:
        daemon = self.daemon
        api = daemon.config.api
        if not api.enabled:
            return
        self.metrics = DaemonMetrics(daemon).attach()
        self.dashboard = Dashboard(lambda: daemon_snapshot(daemon), daemon.events)
        self.api = ControlApi(
            status=daemon.status,
            health=daemon.health,
            actions={"pause": daemon.pause, "resume": daemon.resume, "flatten": daemon.flatten,
                     "models/promote": self.models.apply},
            documents={"risk": daemon.risk_report},
            routes=[self.metrics.route(), *self.dashboard.routes()],
            token=api.token.get_secret_value() if api.token else None,
            host=api.host,
            port=api.port,
        )
        await self.api.start()

    async def _start_telegram(self) -> None:
        settings = self.daemon.config.telegram
        if settings.enabled:
            from daemon.telegram import TelegramService  # python-telegram-bot is imported only when used

            telegram = self.telegram = TelegramService(self.daemon, settings)
            await telegram.start()
            if self.metrics is not None:
                self.metrics.outbox_depth = lambda: telegram.outbox.depth

    def _watch_health(self) -> None:
        """The rules behind ``Daemon.health`` (``daemon.health``): its store probe and, if set, the unhealthy exit."""
        daemon = self.daemon
        store = daemon.store
        monitor = HealthMonitor(
            daemon.config.health, lag=daemon.lag, feed_status=daemon.broker.feed_status,
            bar_interval=self.bar_interval,
            probe=lambda: store.set_state("health_probe", "written", int(time.time())),
        )
        monitor.start(self._stop_unhealthy)
        daemon.monitor = monitor

    def _stop_unhealthy(self, reason: str) -> None:
        """Stop cleanly; ``tradectl run`` then exits with ``EXIT_UNHEALTHY`` for the restart policy."""
        self.unhealthy_exit = reason
        self.daemon.request_stop()

    async def _stop_services(self) -> None:
        self.notifier.stopping()
        if self.telegram is not None:
            await self.telegram.stop()  # before the store closes: the stop alert goes through the outbox
        await self.notifier.stop_watchdog()
        if self.daemon.monitor is not None:
            await self.daemon.monitor.stop()
        if self.dashboard is not None:
            await self.dashboard.close()  # ends the page's streams: the API's stop never waits on a browser
        if self.api is not None:
            await self.api.stop()
        if self._restored:
            await self._save_strategy_state()

    async def _flush_periodically(self) -> None:
        store, settings = self.daemon.store, self.daemon.config.store
        last_checkpoint = time.monotonic()
        while True:
            await asyncio.sleep(settings.flush_seconds)
            try:
                await store.flush()
                if time.monotonic() - last_checkpoint >= settings.checkpoint_seconds:
                    last_checkpoint = time.monotonic()
                    await store.checkpoint()
            except Exception as exc:
                # the rows stay buffered (the writer puts back what it could not write) and the next pass
                # tries again; the health monitor's store probe reports the store as failing meanwhile
                log.error("store flush failed; retrying at the next interval", error=repr(exc))

    async def _restore_strategy_state(self) -> None:
        """Give a recurrent policy back its memory (or re-warm it from recent history) before the first bar."""
        from strategies.recurrent import RecurrentStrategy, restore_from_store

        daemon = self.daemon
        if not isinstance(daemon.strategy, RecurrentStrategy):
            return
        symbols = [daemon.config.data.symbol]
        outcome = await restore_from_store(daemon.strategy, daemon.store, daemon.broker, daemon.broker.now(),
                                           symbols=symbols)
        self._restored = True
        log.info("recurrent memory restored", **outcome)

    async def _save_strategy_state(self) -> None:
        from strategies.recurrent import RecurrentStrategy, save_to_store

        strategy = self.daemon.strategy
        if isinstance(strategy, RecurrentStrategy):
            saved = await save_to_store(strategy, self.daemon.store)
            log.info("recurrent memory saved", symbols=saved)
