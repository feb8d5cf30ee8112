"""The reconciler against the real file-backed sim broker, books, order manager and governor.

"Behind the daemon's back" means changing the broker's own state — its
``SimState`` or a trade placed on the account by someone else — without the
daemon hearing about it, exactly what the reconciler exists to notice.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import Bar, OrderRequest, OrderStatus, OrderType, OrderUpdate, Position, Side
from brokers.errors import BrokerError
from brokers.history import load_bundled
from brokers.sim import SimBroker
from daemon.orders import make_settle, start_safely, supervise
from risk.governor import TradingState
from risk.reconciler import DifferenceKind, ReconcileAction, Reconciler, ReconcileStatus
from tests.integration.fakes.rig import Rig, build_rig, sim_broker

D = Decimal
BARS: list[Bar] = load_bundled()[:40]
SYM = BARS[0].symbol
BUY = OrderRequest(SYM, Side.BUY, D(10_000), reason="buy")


class PositionsDown(SimBroker):
    """The positions endpoint fails ``failures`` times (then answers), like a broker API in an outage."""

    failures = 0

    async def positions(self) -> list[Position]:
        if self.failures:
            self.failures -= 1
            raise BrokerError("503 service unavailable")
        return await super().positions()


class PositionsMissing(SimBroker):
    """An adapter bug or empty response: no report at all rather than an empty one."""

    async def positions(self) -> list[Position]:
        return None  # type: ignore[return-value]


async def _rig(tmp_path: Path, policy: str = "halt", cls: type[SimBroker] = SimBroker) -> Rig:
    broker = sim_broker(BARS, state_file=tmp_path / "broker.json", cls=cls)
    return await build_rig(tmp_path / "t.db", broker, policy=policy)  # type: ignore[arg-type]


async def _step(broker: SimBroker, n: int = 1) -> Bar:
    iterator = broker.bars()
    for _ in range(n):
        bar = await anext(iterator)
    return bar


async def _long_position(rig: Rig) -> Bar:
    bar = await _step(rig.broker)
    await rig.orders.submit(BUY, ts=bar.ts)
    bar = await _step(rig.broker)
    await rig.settle()
    assert rig.portfolio.quantity(SYM) == D(10_000)
    return bar


async def _audit(rig: Rig) -> list[tuple[str, str, str, list[dict[str, str]]]]:
    rows = await rig.store.query("SELECT reason, status, action, differences FROM reconciliation_runs ORDER BY id")
    return [(r[0], r[1], r[2], json.loads(r[3])) for r in rows]


# ---------------------------------------------------------------------------- positions


@pytest.mark.parametrize("policy", ["adopt", "halt"])
async def test_position_changed_at_the_broker_is_detected_on_the_next_check(tmp_path: Path, policy: str) -> None:
    rig = await _rig(tmp_path, policy)
    bar = await _long_position(rig)
    assert (await rig.reconciler.startup(bar.ts)).status is ReconcileStatus.OK
    # behind the daemon's back: the broker's own record of the position changes
    state = rig.broker.state
    state.positions[SYM] = Position(SYM, D(6000), state.positions[SYM].average_price)

    result = await rig.reconciler.reconcile("periodic", bar.ts + 60)
    assert result.status is ReconcileStatus.MISMATCH
    (diff,) = result.differences
    assert (diff.kind, diff.symbol, diff.daemon, diff.broker) == (DifferenceKind.POSITION, SYM, "10000", "6000")
    if policy == "adopt":
        assert result.action is ReconcileAction.ADOPTED and result.trading_allowed
        assert rig.portfolio.quantity(SYM) == D(6000)
        assert rig.governor.state is TradingState.ACTIVE
        assert [k for k, _ in rig.alerts] == ["reconciliation_adopted"]
        assert (await rig.reconciler.reconcile("periodic", bar.ts + 120)).status is ReconcileStatus.OK
    else:
        assert result.action is ReconcileAction.HALTED and not result.trading_allowed
        assert rig.governor.state is TradingState.HALTED
        assert rig.portfolio.quantity(SYM) == D(10_000)  # the books are not touched
        assert [k for k, _ in rig.alerts] == ["reconciliation_mismatch"]
        verdict = rig.governor.check(BUY, rig.pipeline._context(BUY, bar, None))
        assert not verdict.allowed
        figures = rig.governor.figures()["reconciliation"]
        assert figures["value"] is True and "position" in str(figures["detail"])
    audit = await _audit(rig)
    assert audit[0][:3] == ("startup", "ok", "none")
    assert audit[1][:3] == ("periodic", "mismatch", "adopted" if policy == "adopt" else "halted")
    assert audit[1][3] == [{"kind": "position", "symbol": SYM, "daemon": "10000", "broker": "6000"}]
    await rig.close()


async def test_position_opened_outside_the_daemon_is_detected(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "adopt")
    bar = await _step(rig.broker)
    fill = rig.broker.external_trade(SYM, Side.SELL, D(2500))  # someone trades the account by hand
    result = await rig.reconciler.reconcile("periodic", bar.ts)
    (diff,) = result.differences
    assert diff.kind is DifferenceKind.POSITION_OUTSIDE_DAEMON and diff.broker == "-2500"
    assert rig.portfolio.quantity(SYM) == D(-2500)  # adopted
    assert rig.portfolio.positions()[0].average_price == fill.price
    await rig.close()


async def test_position_the_broker_no_longer_has_is_zeroed_by_adopt(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "adopt")
    bar = await _long_position(rig)
    rig.broker.state.positions.clear()
    result = await rig.reconciler.reconcile("periodic", bar.ts)
    assert result.differences[0].kind is DifferenceKind.POSITION_MISSING_AT_BROKER
    assert rig.portfolio.quantity(SYM) == 0 and rig.portfolio.positions() == []
    await rig.close()


async def test_a_fill_still_in_the_inbox_is_not_a_mismatch(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "halt")
    bar = await _step(rig.broker)
    await rig.orders.submit(BUY, ts=bar.ts)
    bar = await _step(rig.broker)  # the broker has filled it; the daemon has not read the update yet
    assert rig.portfolio.quantity(SYM) == 0
    result = await rig.reconciler.after_fills(bar.ts) or await rig.reconciler.reconcile("fill", bar.ts)
    assert result.status is ReconcileStatus.OK
    assert rig.portfolio.quantity(SYM) == D(10_000)
    assert rig.governor.state is TradingState.ACTIVE
    await rig.close()


async def test_after_fills_runs_only_when_the_books_took_a_fill(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    bar = await _step(rig.broker)
    assert await rig.reconciler.after_fills(bar.ts) is None
    await rig.orders.submit(BUY, ts=bar.ts)
    bar = await _step(rig.broker)
    await rig.settle()
    result = await rig.reconciler.after_fills(bar.ts)
    assert result is not None and result.reason == "fill" and result.status is ReconcileStatus.OK
    assert await rig.reconciler.after_fills(bar.ts) is None
    await rig.close()


# ---------------------------------------------------------------------------- fail closed


@pytest.mark.parametrize("cls", [PositionsDown, PositionsMissing])
async def test_broker_failure_is_unknown_never_flat(tmp_path: Path, cls: type[SimBroker]) -> None:
    rig = await _rig(tmp_path, "adopt", cls)  # even adopt must not "adopt" an unreadable book as flat
    bar = await _long_position(rig)
    rig.broker.failures = 10**9  # type: ignore[attr-defined]  # the outage starts
    first = await rig.reconciler.reconcile("periodic", bar.ts)
    assert (first.status, first.action) == (ReconcileStatus.UNKNOWN, ReconcileAction.RETRY)
    assert not first.trading_allowed and not rig.reconciler.trusted
    assert rig.portfolio.quantity(SYM) == D(10_000)
    await rig.reconciler.reconcile("periodic", bar.ts)
    third = await rig.reconciler.reconcile("periodic", bar.ts)
    assert (third.status, third.action) == (ReconcileStatus.UNKNOWN, ReconcileAction.HALTED)
    assert rig.governor.state is TradingState.HALTED
    assert rig.portfolio.quantity(SYM) == D(10_000)
    assert [a[1:3] for a in await _audit(rig)] == [("unknown", "retry"), ("unknown", "retry"), ("unknown", "halted")]
    await rig.close()


async def test_startup_retries_an_unknown_broker_then_halts(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "halt", PositionsDown)
    rig.broker.failures = 10**9  # type: ignore[attr-defined]
    result = await rig.reconciler.startup(0, attempts=2, retry_delay=0)
    assert result.status is ReconcileStatus.UNKNOWN and result.action is ReconcileAction.HALTED
    assert rig.governor.state is TradingState.HALTED
    await rig.close()


async def test_startup_succeeds_when_the_broker_answers_on_a_retry(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "halt", PositionsDown)
    rig.broker.failures = 1  # type: ignore[attr-defined]
    result = await rig.reconciler.startup(0, attempts=3, retry_delay=0)
    assert result.status is ReconcileStatus.OK and rig.reconciler.trusted
    assert rig.governor.state is TradingState.ACTIVE
    await rig.close()


# ---------------------------------------------------------------------------- open orders


def _resting(quantity: str = "10000") -> OrderRequest:
    return OrderRequest(SYM, Side.BUY, D(quantity), OrderType.LIMIT, D("0.5"), reason="buy")


async def test_open_order_unknown_to_the_daemon(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "halt")
    bar = await _step(rig.broker)
    await rig.broker.submit("placed-by-hand", _resting())
    result = await rig.reconciler.reconcile("periodic", bar.ts)
    (diff,) = result.differences
    assert (diff.kind, diff.client_order_id, diff.daemon) == (
        DifferenceKind.ORDER_UNKNOWN_TO_DAEMON, "placed-by-hand", "not known"
    )
    assert rig.governor.state is TradingState.HALTED
    await rig.close()


async def test_working_order_the_broker_no_longer_has(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "adopt")
    bar = await _step(rig.broker)
    order = await rig.orders.submit(_resting(), ts=bar.ts)
    await rig.broker.cancel(order.client_order_id)  # cancelled at the broker ...
    rig.broker.drain_updates()  # ... and the update is lost
    result = await rig.reconciler.reconcile("periodic", bar.ts)
    assert [d.kind for d in result.differences] == [DifferenceKind.ORDER_MISSING_AT_BROKER]
    assert result.action is ReconcileAction.ADOPTED
    assert order.status is OrderStatus.CANCELLED  # looked up and taken from the broker
    assert rig.orders.working() == []
    await rig.close()


async def test_fills_lost_in_transit_are_found_and_adopted_from_the_broker(tmp_path: Path) -> None:
    broker = sim_broker(BARS, state_file=tmp_path / "broker.json", max_fill_quantity=D(4000))
    rig = await build_rig(tmp_path / "t.db", broker, policy="adopt")
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    bar = await _step(rig.broker)
    rig.broker.drain_updates()  # the partial fill's update is lost
    result = await rig.reconciler.reconcile("periodic", bar.ts)
    kinds = {d.kind for d in result.differences}
    assert DifferenceKind.ORDER_FILLS in kinds and DifferenceKind.POSITION_OUTSIDE_DAEMON in kinds
    assert result.action is ReconcileAction.ADOPTED
    assert order.filled_quantity == D(4000) and rig.portfolio.quantity(SYM) == D(4000)
    fills = await rig.store.query("SELECT fill_id FROM fills")
    assert [f[0] for f in fills] == [f.fill_id for f in rig.broker.state.fills]  # booked, not just adopted
    assert "nothing left to adopt" not in result.detail and "looked up" in result.detail
    await rig.close()


def test_policy_is_validated() -> None:
    with pytest.raises(ValueError, match="adopt"):
        Reconciler(None, None, policy="ignore")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------- start-up and supervision glue


class LookupsDown(SimBroker):
    """Order lookups fail (the broker's order endpoint is down)."""

    async def get_order(self, client_order_id: str) -> OrderUpdate | None:
        raise BrokerError("order endpoint unavailable")


class SilentAck(SimBroker):
    """Accepts orders but the acknowledgement never arrives."""

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        ack = await super().submit(client_order_id, request)
        return dataclasses.replace(ack, status=OrderStatus.SUBMITTED)


async def test_start_safely_halts_when_an_order_cannot_be_resolved(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "halt", LookupsDown)
    await rig.store.journal_order("tcx-00000001", 1, BUY, decision_id=None, ts=0)  # left by a dead process
    await rig.close()
    rig = await _rig(tmp_path, "halt", LookupsDown)
    outcome = await start_safely(rig.orders, rig.reconciler, 0, attempts=1, retry_delay=0)
    assert not outcome.may_trade and outcome.recovery.unresolved == ["tcx-00000001"]
    assert rig.governor.state is TradingState.HALTED
    assert rig.broker.state.submits == []
    await rig.close()


async def test_supervise_asks_about_silent_orders_and_reconciles_periodically(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, "halt", SilentAck)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    assert order.status is OrderStatus.SUBMITTED
    stop = asyncio.Event()
    task = asyncio.create_task(
        supervise(rig.orders, rig.reconciler, lambda: bar.ts + 3600, reconcile_every=0.05, timeouts_every=0.01,
                  stop=stop)
    )
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.wait_for(task, 1)
    assert order.status is OrderStatus.ACCEPTED
    assert rig.reconciler.stats.runs["ok"] >= 1
    assert rig.broker.state.submits == [order.client_order_id]
    await rig.close()


async def test_make_settle_applies_delivered_updates(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    bar = await _step(rig.broker)
    await rig.orders.submit(BUY, ts=bar.ts)
    await _step(rig.broker)
    await make_settle(rig.broker, rig.orders)()
    assert rig.portfolio.quantity(SYM) == D(10_000)
    await rig.close()
