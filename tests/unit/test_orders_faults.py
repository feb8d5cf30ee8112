"""The order manager under faults: unknown outcomes, lost acknowledgements, crashes, cancel/replace, overfills.

Every test runs the real store, the real simulated broker (file-backed where a
restart is involved) and the real pipeline. Faults are injected by small
``SimBroker`` subclasses that do the real work and then lose the answer, or
raise ``SimulatedCrash`` (a ``BaseException``, so nothing in the daemon can
catch it) to stop the "process" at an exact point; a restart is a fresh set
of components over the same database and broker state file.
"""

from __future__ import annotations

import asyncio
import dataclasses
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import Bar, Fill, OrderRequest, OrderStatus, OrderType, OrderUpdate, Side
from brokers.errors import BrokerError, OrderRejected, UnknownOrderOutcome
from brokers.history import load_bundled
from brokers.sim import SimBroker
from daemon.orders import NEVER_SENT, ManagedOrder
from risk.governor import TradingState
from tests.integration.fakes.rig import Rig, build_rig, sim_broker

D = Decimal
BARS: list[Bar] = load_bundled()[:40]
SYM = BARS[0].symbol
BUY = OrderRequest(SYM, Side.BUY, D(10_000), reason="buy")


class SimulatedCrash(BaseException):
    """The process dies here: nothing after this point runs."""


class LostAnswer(SimBroker):
    """Takes the order, then the connection drops before the answer arrives."""

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        await super().submit(client_order_id, request)
        raise UnknownOrderOutcome("connection reset after the request was sent")


class SlowAnswer(SimBroker):
    """Takes the order, then answers far later than the manager waits."""

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        ack = await super().submit(client_order_id, request)
        await asyncio.sleep(5)
        return ack


class LostRequest(SimBroker):
    """The request never reaches the broker, and the client cannot tell."""

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        raise UnknownOrderOutcome("timeout: no response")


class SilentAck(SimBroker):
    """Takes the order but the acknowledgement never comes (the answer says only 'sent')."""

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        ack = await super().submit(client_order_id, request)
        return dataclasses.replace(ack, status=OrderStatus.SUBMITTED)


class FlakyLookup(LostAnswer):
    """Loses the submit answer and fails the first ``failures`` lookups."""

    failures = 1

    async def get_order(self, client_order_id: str) -> OrderUpdate | None:
        if self.failures:
            self.failures -= 1
            raise BrokerError("gateway timeout")
        return await super().get_order(client_order_id)


class CrashBeforeSend(SimBroker):
    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        raise SimulatedCrash


class CrashAfterSend(SimBroker):
    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        await super().submit(client_order_id, request)
        raise SimulatedCrash


async def _step(broker: SimBroker, n: int = 1) -> Bar:
    """Deliver ``n`` bars to the broker (it executes working orders on each); updates stay in its inbox."""
    bar = None
    iterator = broker.bars()
    for _ in range(n):
        bar = await anext(iterator)
    assert bar is not None
    return bar


async def _rig(tmp_path: Path, cls: type[SimBroker] = SimBroker, **kwargs: object) -> Rig:
    broker_kwargs = {k: kwargs.pop(k) for k in ("max_fill_quantity",) if k in kwargs}
    broker = sim_broker(BARS, state_file=tmp_path / "broker.json", cls=cls, **broker_kwargs)  # type: ignore[arg-type]
    return await build_rig(tmp_path / "t.db", broker, **kwargs)  # type: ignore[arg-type]


async def _store_fill_ids(rig: Rig) -> list[str]:
    return [r[0] for r in await rig.store.query("SELECT fill_id FROM fills ORDER BY rowid")]


# ---------------------------------------------------------------------------- unknown outcomes


async def test_lost_submit_answer_is_resolved_by_lookup_never_resent(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, LostAnswer)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    assert order.status is OrderStatus.ACCEPTED  # the broker had it: lookup by client id found it
    assert rig.broker.state.submits == [order.client_order_id]
    await _step(rig.broker)
    await rig.settle()
    assert order.status is OrderStatus.FILLED
    assert rig.portfolio.quantity(SYM) == D(10_000)
    assert rig.broker.state.submits == [order.client_order_id]
    await rig.close()


async def test_submit_timeout_after_acceptance_is_resolved_by_lookup(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, SlowAnswer, submit_timeout=0.05)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    assert order.status is OrderStatus.ACCEPTED
    events = await rig.store.query("SELECT to_status, message FROM order_events ORDER BY id")
    assert [e[0] for e in events] == ["new", "unknown", "accepted"]
    assert "TimeoutError" in events[1][1]
    assert rig.broker.state.submits == [order.client_order_id]
    await rig.close()


class AnswersAfterAWhile(SimBroker):
    """Suspends a few times before answering (a real network round trip), within the submit timeout."""

    reject = False

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        for _ in range(3):
            await asyncio.sleep(0)
        await asyncio.sleep(0.001)
        if self.reject:
            raise OrderRejected("insufficient margin")
        return await super().submit(client_order_id, request)


async def test_submit_that_suspends_runs_under_the_timeout_to_its_answer(tmp_path: Path) -> None:
    """A broker that suspends answers under the submit deadline; its answer (or rejection) comes through."""
    rig = await _rig(tmp_path, AnswersAfterAWhile, submit_timeout=5)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    assert order.status is OrderStatus.ACCEPTED
    rig.broker.reject = True  # type: ignore[attr-defined]
    rejected = await rig.orders.submit(BUY, ts=bar.ts)
    assert rejected.status is OrderStatus.REJECTED
    events = await rig.store.query("SELECT client_order_id, to_status FROM order_events ORDER BY id")
    assert [e[1] for e in events] == ["new", "submitted", "accepted", "new", "rejected"]
    await rig.close()


async def test_submit_that_suspends_past_the_timeout_is_cancelled(tmp_path: Path) -> None:
    """The deadline cancels the suspended broker call; the order is then looked up, never re-sent."""
    rig = await _rig(tmp_path, SlowAnswer, submit_timeout=0.01)
    cancelled: list[bool] = []
    original = rig.broker.submit

    async def submit(client_order_id: str, request: OrderRequest) -> OrderUpdate:
        try:
            return await original(client_order_id, request)
        except asyncio.CancelledError:
            cancelled.append(True)
            raise

    rig.broker.submit = submit  # type: ignore[method-assign]
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    assert cancelled == [True]
    assert order.status is OrderStatus.ACCEPTED  # found by the lookup, never re-sent
    assert rig.broker.state.submits == [order.client_order_id]
    await rig.close()


async def test_request_that_never_arrived_is_rejected_after_lookups_not_resent(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, LostRequest, ack_timeout=30)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    # maybe still in flight: it stays UNKNOWN and keeps its quantity pending, so the strategy cannot double up
    assert order.status is OrderStatus.UNKNOWN
    assert rig.orders.pending_quantity(SYM) == D(10_000)
    assert await rig.orders.check_timeouts(bar.ts + 29) == []
    assert await rig.orders.check_timeouts(bar.ts + 30) == [order.client_order_id]
    assert order.status is OrderStatus.UNKNOWN
    await rig.orders.check_timeouts(bar.ts + 60)
    assert order.status is OrderStatus.REJECTED
    assert "3 lookups" in (await rig.store.query("SELECT message FROM orders"))[0][0]
    assert rig.broker.state.submits == []
    assert rig.orders.pending_quantity(SYM) == 0
    await rig.close()


async def test_missing_acknowledgement_triggers_a_lookup_after_the_timeout(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, SilentAck, ack_timeout=30)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    assert order.status is OrderStatus.SUBMITTED
    assert await rig.orders.check_timeouts(bar.ts + 10) == []
    assert order.status is OrderStatus.SUBMITTED
    assert await rig.orders.check_timeouts(bar.ts + 30) == [order.client_order_id]
    assert order.status is OrderStatus.ACCEPTED
    assert await rig.orders.check_timeouts(bar.ts + 90) == []  # acknowledged: nothing more to ask
    assert rig.broker.state.submits == [order.client_order_id]
    await rig.close()


async def test_failed_lookup_leaves_the_order_unknown_until_a_later_lookup(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, FlakyLookup, ack_timeout=30)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    assert order.status is OrderStatus.UNKNOWN
    await _step(rig.broker)  # it fills at the broker meanwhile
    await rig.orders.check_timeouts(bar.ts + 30)
    assert order.status is OrderStatus.FILLED
    await rig.settle()  # the streamed fill arrives too: booked once
    assert await _store_fill_ids(rig) == [f.fill_id for f in rig.broker.state.fills]
    assert rig.portfolio.quantity(SYM) == D(10_000)
    assert rig.broker.state.submits == [order.client_order_id]
    await rig.close()


# ---------------------------------------------------------------------------- recovery after a crash


async def test_recovery_rejects_journaled_orders_that_never_reached_the_broker(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, CrashBeforeSend)
    bar = await _step(rig.broker)
    with pytest.raises(SimulatedCrash):
        await rig.orders.submit(BUY, ts=bar.ts)
    await rig.store.close()  # "died": what counts is what was committed; this only stops the db thread

    again = await _rig(tmp_path)
    (cid,) = [o.client_order_id for o in again.orders.working()]
    report = await again.orders.recover(bar.ts)
    assert report.never_sent == [cid] and report.ok
    assert (await again.store.query("SELECT status, message FROM orders")) == [("rejected", NEVER_SENT)]
    assert again.broker.state.submits == []  # and it was not sent now either
    assert again.orders.working() == []
    await again.close()


async def test_recovery_finds_orders_sent_just_before_the_crash(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, CrashAfterSend)
    bar = await _step(rig.broker)
    with pytest.raises(SimulatedCrash):
        await rig.orders.submit(BUY, ts=bar.ts)
    await rig.store.close()

    again = await _rig(tmp_path)
    (order,) = again.orders.working()
    assert order.status is OrderStatus.NEW
    report = await again.orders.recover(bar.ts)
    assert report.found_at_broker == [order.client_order_id]
    assert order.status is OrderStatus.ACCEPTED
    await _step(again.broker)
    await again.settle()
    assert order.status is OrderStatus.FILLED
    assert again.broker.state.submits == [order.client_order_id]
    events = await again.store.query("SELECT to_status FROM order_events ORDER BY id")
    assert [e[0] for e in events] == ["new", "submitted", "accepted", "filled"]
    await again.close()


async def test_recovery_books_every_missing_fill_exactly_once(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, max_fill_quantity=D(4000))
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    await _step(rig.broker)
    await rig.settle()  # the first partial fill is booked ...
    await _step(rig.broker, 2)  # ... the next two happen at the broker, and then the daemon dies
    assert len(rig.broker.state.fills) == 3
    assert len(await _store_fill_ids(rig)) == 1
    await rig.store.close()

    again = await _rig(tmp_path, max_fill_quantity=D(4000))
    assert again.portfolio.quantity(SYM) == D(4000)  # the books as stored
    report = await again.orders.recover(bar.ts)
    assert report.fills_booked == 2 and report.final == {order.client_order_id: "filled"}
    broker_ids = [f.fill_id for f in again.broker.state.fills]
    assert await _store_fill_ids(again) == broker_ids
    assert again.portfolio.quantity(SYM) == D(10_000)
    result = await again.reconciler.startup(bar.ts)
    assert result.status.value == "ok"
    await again.close()

    third = await _rig(tmp_path, max_fill_quantity=D(4000))  # another restart books nothing twice
    assert (await third.orders.recover(bar.ts)).fills_booked == 0
    assert await _store_fill_ids(third) == broker_ids
    assert third.portfolio.quantity(SYM) == D(10_000)
    await third.close()


async def test_crash_between_storing_a_fill_and_moving_its_order(tmp_path: Path) -> None:
    def crash_after_booking(on_fill):  # type: ignore[no-untyped-def]
        async def booked_then_died(fill: Fill, order: ManagedOrder) -> None:
            await on_fill(fill, order)
            raise SimulatedCrash

        return booked_then_died

    rig = await _rig(tmp_path, wrap_fill=crash_after_booking)
    bar = await _step(rig.broker)
    await rig.orders.submit(BUY, ts=bar.ts)
    await _step(rig.broker)
    with pytest.raises(SimulatedCrash):
        await rig.settle()
    assert (await rig.store.query("SELECT status, filled_quantity FROM orders")) == [("accepted", "0")]
    await rig.store.close()

    again = await _rig(tmp_path)
    (order,) = again.orders.working()
    assert order.filled_quantity == D(10_000)  # counted from the stored fills, not the stale order row
    report = await again.orders.recover(bar.ts)
    assert report.fills_booked == 0
    assert order.status is OrderStatus.FILLED
    assert again.portfolio.quantity(SYM) == D(10_000)
    assert len(await _store_fill_ids(again)) == 1
    await again.close()


# ---------------------------------------------------------------------------- cancel / replace


def _limit(quantity: str, price: str) -> OrderRequest:
    return OrderRequest(SYM, Side.BUY, D(quantity), OrderType.LIMIT, D(price), reason="buy")


async def test_replace_cancels_then_sends_a_new_journaled_order(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    bar = await _step(rig.broker)
    old = await rig.orders.submit(_limit("10000", "0.5"), ts=bar.ts)  # far below the market: rests
    new = await rig.orders.replace(old.client_order_id, ts=bar.ts, quantity=D(6000))
    assert new is not None and old.status is OrderStatus.CANCELLED
    assert new.request.quantity == D(6000) and new.request.limit_price == D("0.5")
    assert new.status is OrderStatus.ACCEPTED
    newer = await rig.orders.replace(new.client_order_id, ts=bar.ts, limit_price=D("0.6"))
    assert newer is not None and newer.request.limit_price == D("0.6") and newer.request.quantity == D(6000)
    assert rig.broker.state.submits == [old.client_order_id, new.client_order_id, newer.client_order_id]
    assert [o.client_order_id for o in rig.orders.working()] == [newer.client_order_id]
    with pytest.raises(ValueError, match="replace quantity"):
        await rig.orders.replace(newer.client_order_id, ts=bar.ts, quantity=D(7000))  # more than approved
    with pytest.raises(ValueError, match="limit_price"):
        await rig.orders.replace(newer.client_order_id, ts=bar.ts, limit_price=D(-1))
    journaled = await rig.store.query("SELECT client_order_id, status FROM orders ORDER BY client_order_id")
    assert [s for _, s in journaled] == ["cancelled", "cancelled", "accepted"]
    await rig.close()


async def test_replace_after_a_partial_fill_sends_only_the_rest(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, max_fill_quantity=D(4000))
    bar = await _step(rig.broker)
    old = await rig.orders.submit(_limit("10000", "5"), ts=bar.ts)  # marketable: fills 4000 per bar
    await _step(rig.broker)
    await rig.settle()
    assert old.status is OrderStatus.PARTIALLY_FILLED
    new = await rig.orders.replace(old.client_order_id, ts=bar.ts, quantity=D(10_000))
    assert new is not None and new.request.quantity == D(6000)
    assert old.status is OrderStatus.CANCELLED and old.filled_quantity == D(4000)
    assert await rig.orders.replace(new.client_order_id, ts=bar.ts, quantity=D(5000)) is not None
    await rig.close()


async def test_market_order_price_cannot_be_replaced(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, SilentAck)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    with pytest.raises(ValueError, match="limit order"):
        await rig.orders.replace(order.client_order_id, ts=bar.ts, limit_price=D("1.1"))
    await rig.close()


# ---------------------------------------------------------------------------- broker misreports


async def test_overfill_halts_trading(tmp_path: Path) -> None:
    rig = await _rig(tmp_path, SilentAck)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    fill = Fill("rogue-1", order.client_order_id, SYM, Side.BUY, D(15_000), D("1.05"), D(0), bar.ts)
    await rig.orders.apply(OrderUpdate(order.client_order_id, OrderStatus.FILLED, bar.ts, fill=fill))
    assert rig.governor.state is TradingState.HALTED
    assert ("overfill", f"{order.client_order_id}: filled 15000 of 10000") in rig.anomalies
    verdict = rig.pipeline.governor.check(BUY, rig.pipeline._context(BUY, bar, None))
    assert not verdict.allowed and verdict.reason in ("overfill", "halted")
    await rig.close()


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"quantity": D(-5)}, "malformed_fill_quantity"),
        ({"price": D("NaN")}, "malformed_fill_price"),
        ({"side": Side.SELL}, "fill_side_mismatch"),
        ({"symbol": "GBPUSD"}, "fill_symbol_mismatch"),
        ({"client_order_id": "someone-else"}, "fill_for_other_order"),
    ],
)
async def test_malformed_fills_are_refused_with_a_reason(tmp_path: Path, change: dict, reason: str) -> None:
    rig = await _rig(tmp_path, SilentAck)
    bar = await _step(rig.broker)
    order = await rig.orders.submit(BUY, ts=bar.ts)
    fill = dataclasses.replace(Fill("f-1", order.client_order_id, SYM, Side.BUY, D(10), D("1.05"), D(0), bar.ts),
                               **change)
    await rig.orders.apply(OrderUpdate(order.client_order_id, OrderStatus.PARTIALLY_FILLED, bar.ts, fill=fill))
    assert rig.orders.rejections[reason] == 1
    assert rig.portfolio.quantity(SYM) == 0 and await _store_fill_ids(rig) == []
    assert order.status is OrderStatus.SUBMITTED
    await rig.close()


async def test_update_for_an_unknown_order_is_refused_and_alerted(tmp_path: Path) -> None:
    rig = await _rig(tmp_path)
    await rig.orders.apply(OrderUpdate("nobody", OrderStatus.FILLED, 1))
    assert rig.orders.rejections["unknown_order"] == 1
    assert rig.anomalies == [("unknown_order", "update for unknown order 'nobody'")]
    await rig.close()
