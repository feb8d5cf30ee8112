"""The real safety-core components wired together without ``daemon.app``.

Tests and the crash-test runner build the daemon from its parts here (store,
sim broker, books, governor and layers, pipeline, order manager, reconciler)
in the same order ``daemon.orders.recovery`` prescribes for the application, so they
exercise the production code paths and do not depend on the app's wiring.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from brokers.base import Bar, Fill
from brokers.costs import CostModel
from brokers.sim import SimBroker
from brokers.sim.replay import ReplayFeed
from daemon.bar_guard import BarGuard
from daemon.orders import ManagedOrder, OrderManager, open_books
from daemon.pipeline import TradingPipeline
from daemon.portfolio import Portfolio
from daemon.store import Store, Synchronous
from risk.config import RiskConfig, SizingConfig
from risk.governor import RiskGovernor
from risk.layers import build_layers
from risk.reconciler import Policy, Reconciler
from risk.sizing import build_sizer
from strategies.sma_cross import SmaCrossStrategy

FillHandler = Callable[[Fill, ManagedOrder], Awaitable[None]]
FillWrapper = Callable[[FillHandler], FillHandler]


def lenient_risk() -> RiskConfig:
    """Layers that let a fast-trading test strategy trade; the state guards (kill switch, latches) stay on."""
    return RiskConfig.model_validate(
        {
            "window": {"enabled": False},
            "stale_data": {"enabled": False},
            "cooldown": {"enabled": False},
            "trade_count": {"enabled": False},
            "submit_rate": {"enabled": False},
            "daily_loss": {"enabled": False},
            "drawdown": {"enabled": False},
            "loss_streak": {"enabled": False},
            "volatility": {"enabled": False},
        }
    )


def rig_costs() -> CostModel:
    return CostModel(
        spread_bps=Decimal(1), slippage_bps=Decimal("0.5"), commission_bps=Decimal("0.2"),
        price_increment=Decimal("0.00001"), fee_increment=Decimal("0.01"),
    )


def sim_broker(bars: list[Bar], *, state_file: Path | None = None, pace: float | None = None,
               max_fill_quantity: Decimal | None = None, cls: type[SimBroker] = SimBroker,
               **kwargs: Any) -> SimBroker:
    return cls(
        ReplayFeed(bars, pace=pace), rig_costs(), starting_cash=Decimal(100_000), state_file=state_file,
        max_fill_quantity=max_fill_quantity, **kwargs,
    )


@dataclass
class Rig:
    store: Store
    broker: SimBroker
    portfolio: Portfolio
    governor: RiskGovernor
    pipeline: TradingPipeline
    orders: OrderManager
    reconciler: Reconciler
    alerts: list[tuple[str, str]] = field(default_factory=list)
    anomalies: list[tuple[str, str]] = field(default_factory=list)

    async def settle(self) -> None:
        """Apply every update the broker has already sent (what the pipeline does before each bar)."""
        for update in self.broker.drain_updates():
            await self.orders.apply(update)

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()


async def build_rig(
    db_path: Path,
    broker: SimBroker,
    *,
    policy: Policy = "halt",
    fresh_account: bool | None = None,
    fast: int = 2,
    slow: int = 5,
    units: Decimal = Decimal(10_000),
    confirm_delay: float | None = 0.0,
    wrap_fill: FillWrapper | None = None,
    batched: bool = False,
    ack_timeout: float = 30.0,
    submit_timeout: float = 10.0,
    synchronous: Synchronous = "full",
) -> Rig:
    """Open the store, connect the broker, rebuild the books, and wire pipeline, order manager and reconciler."""
    store = await Store.open(db_path, flush_rows=256, batched=batched, synchronous=synchronous)
    await store.begin_run("test", "fp", {})
    await broker.connect()
    account = await broker.account()
    fresh = broker.state_file is None if fresh_account is None else fresh_account
    positions = await broker.positions() if fresh else []  # a restart's books come from the store
    portfolio = await open_books(store, account, positions, fresh_account=fresh)
    governor = RiskGovernor(build_layers(lenient_risk(), bar_seconds=3600))
    alerts: list[tuple[str, str]] = []
    anomalies: list[tuple[str, str]] = []

    def alert(kind: str, message: str, data: dict[str, Any]) -> None:
        alerts.append((kind, message))

    sizing = SizingConfig.model_validate({"method": "fixed", "fixed": {"units": str(units)}})
    pipeline = TradingPipeline(
        broker=broker,
        guard=BarGuard(259_200),
        strategy=SmaCrossStrategy(fast, slow, allow_short=True),
        sizer=build_sizer(sizing),
        governor=governor,
        portfolio=portfolio,
        store=store,
        alert=alert,
    )

    async def on_anomaly(kind: str, message: str, order: ManagedOrder | None) -> None:
        anomalies.append((kind, message))
        await pipeline.on_anomaly(kind, message, order)

    on_fill = pipeline.on_fill if wrap_fill is None else wrap_fill(pipeline.on_fill)
    orders = await OrderManager.create(store, broker, on_fill=on_fill, on_anomaly=on_anomaly, ack_timeout=ack_timeout,
                                      submit_timeout=submit_timeout, on_fee=pipeline.on_fee)
    pipeline.attach(orders)
    rig = Rig(store, broker, portfolio, governor, pipeline, orders, None, alerts, anomalies)  # type: ignore[arg-type]
    rig.reconciler = Reconciler(
        broker,
        portfolio,
        orders,
        policy=policy,
        governor=governor,
        hooks=pipeline.hooks,
        audit=store.record_reconciliation,
        alert=alert,
        settle=rig.settle,
        confirm_delay=confirm_delay,
        run_id=store.run_id,
    )
    return rig
