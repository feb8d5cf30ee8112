"""Property tests: arbitrary bars and broker updates through the real pipeline pieces.

Hypothesis generates bar sequences with NaN/inf, non-positive and inconsistent
prices, negative volume, out-of-order, duplicate and gapped timestamps, and
between bars injects broker updates that are unknown-order, malformed,
duplicated, stale (out of order) or overfilling. The real bar guard,
strategy, sizing, governor, order manager, store and sim broker process them.

Properties:

* nothing raises, whatever arrives;
* no order is sent while handling a bar the guard rejected, nor one that an
  independent check finds invalid, nor outside bar handling at all;
* every rejection has a reason: bar rejections, risk denials, rejected
  orders and refused broker updates all carry a non-empty reason code, and
  every update we know to be bad is refused (counted) rather than applied;
* the books stay consistent: fills are stored once, and the position equals
  the sum of stored fills.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from decimal import Decimal
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokers.base import Bar, Fill, OrderRequest, OrderStatus, OrderUpdate, Side
from brokers.sim import SimBroker
from tests.integration.fakes.rig import build_rig, sim_broker

D = Decimal
SYM = "EURUSD"
T0 = 1_483_351_200  # a Monday, 2017-01-02 10:00 UTC
MAX_GAP = 259_200


class WitnessBroker(SimBroker):
    """The real sim broker, noting which bar the daemon was handling when each order arrived."""

    current: int | None = None

    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        self.sent_during.append(self.current)
        return await super().submit(client_order_id, request)

    def drain_updates(self) -> list[OrderUpdate]:
        updates = super().drain_updates()
        self.delivered.extend(updates)
        return updates


# ---------------------------------------------------------------------------- generators

_weird = st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -1.1, 1e12])


@st.composite
def _bars(draw: st.DrawFn) -> list[Bar]:
    n = draw(st.integers(8, 40))
    ts = T0
    price = 1.05
    bars = []
    for _ in range(n):
        ts += draw(st.sampled_from([3600] * 12 + [0, -3600, -7200, 7200, MAX_GAP + 3600]))
        price = max(0.5, price * (1 + draw(st.floats(-0.01, 0.01))))
        o, c = price, price * (1 + draw(st.floats(-0.005, 0.005)))
        h, lo = max(o, c) * 1.001, min(o, c) * 0.999
        volume = 100.0
        if draw(st.integers(0, 5)) == 0:  # a damaged bar
            field = draw(st.sampled_from(["open", "high", "low", "close", "volume", "swap"]))
            if field == "swap":
                h, lo = lo, h
            elif field == "volume":
                volume = draw(st.sampled_from([-1.0, math.nan]))
            else:
                value = draw(_weird)
                o, h, lo, c = [value if f == field else v for f, v in zip(("open", "high", "low", "close"),
                                                                           (o, h, lo, c), strict=True)]
        bars.append(Bar(SYM, ts, o, h, lo, c, volume))
    return bars


_KINDS = ("unknown_order", "malformed", "duplicate", "stale", "overfill", "none", "none")


# ---------------------------------------------------------------------------- oracle


def _plainly_invalid(bar: Bar) -> bool:
    prices = (bar.open, bar.high, bar.low, bar.close)
    if not all(math.isfinite(p) and p > 0 for p in prices) or not math.isfinite(bar.volume) or bar.volume < 0:
        return True
    return bar.high < bar.low or not (bar.low <= bar.open <= bar.high and bar.low <= bar.close <= bar.high)


def _malform(data: st.DataObject, order_id: str, symbol: str, ts: int) -> tuple[OrderUpdate, str]:
    good = Fill(f"bad-{ts}-{data.draw(st.integers(0, 10**6))}", order_id, symbol, Side.BUY, D(1), D("1.1"), D(0), ts)
    how = data.draw(st.sampled_from(["status", "ts", "quantity", "price", "fee", "symbol", "other_order", "fill_id"]))
    fills: dict[str, Any] = {
        "quantity": {"quantity": data.draw(st.sampled_from([D(-3), D(0), D("NaN"), D("Infinity")]))},
        "price": {"price": data.draw(st.sampled_from([D(-1), D(0), D("NaN")]))},
        "fee": {"fee": D("-0.5")},
        "symbol": {"symbol": "XAUUSD"},
        "other_order": {"client_order_id": "someone-else"},
        "fill_id": {"fill_id": ""},
    }
    if how == "status":
        return OrderUpdate(order_id, "exploded", ts), how  # type: ignore[arg-type]
    if how == "ts":
        return OrderUpdate(order_id, OrderStatus.ACCEPTED, float(ts) + 0.5), how  # type: ignore[arg-type]
    return OrderUpdate(order_id, OrderStatus.PARTIALLY_FILLED, ts, fill=dataclasses.replace(good, **fills[how])), how


# ---------------------------------------------------------------------------- the property


async def _run(tmp: Path, bars: list[Bar], data: st.DataObject) -> None:
    broker = sim_broker(bars, cls=WitnessBroker)
    broker.sent_during = []  # type: ignore[attr-defined]
    broker.delivered = []  # type: ignore[attr-defined]
    rig = await build_rig(tmp / "p.db", broker, batched=True)
    pipeline, orders = rig.pipeline, rig.orders
    invalid: set[int] = set()
    refused_expected = 0
    last_accepted: int | None = None
    index = 0
    try:
        async for bar in broker.bars():
            broker.current = index  # type: ignore[attr-defined]
            rejected_before = pipeline.counts.rejected_bars
            gaps_before = pipeline.guard.rejected["gap"]
            await pipeline.on_bar(bar)
            guard_rejected = pipeline.counts.rejected_bars > rejected_before
            if guard_rejected or _plainly_invalid(bar):
                invalid.add(index)
            if pipeline.guard.rejected["gap"] > gaps_before:
                last_accepted = None  # the symbol restarts: the next valid bar opens a new episode
            if not guard_rejected:
                assert not _plainly_invalid(bar), f"guard accepted an invalid bar {bar}"
                assert last_accepted is None or bar.ts > last_accepted, "guard accepted a bar out of order"
                last_accepted = bar.ts
            broker.current = None  # type: ignore[attr-defined]
            refused_expected += await _inject(data, rig, bar.ts)
            index += 1
        await pipeline.store.flush()

        # never an order on an invalid bar, nor outside bar handling
        sent = broker.sent_during  # type: ignore[attr-defined]
        assert None not in sent
        assert not invalid.intersection(sent), "an order was sent while handling an invalid bar"

        # every rejection has a reason
        refused = sum(orders.rejections.values())
        assert all(isinstance(k, str) and k for k in orders.rejections)
        assert refused >= refused_expected
        assert all(k for k in pipeline.guard.rejected)
        assert pipeline.guard.rejected_total == pipeline.counts.rejected_bars
        store = rig.store
        assert not await store.query("SELECT 1 FROM bar_rejections WHERE reason = '' OR reason IS NULL")
        assert not await store.query(
            "SELECT 1 FROM decisions WHERE verdict IN ('block', 'halt') AND COALESCE(verdict_reason, '') = ''"
        )
        assert not await store.query("SELECT 1 FROM risk_events WHERE COALESCE(reason, '') = ''")
        assert not await store.query("SELECT 1 FROM orders WHERE status = 'rejected' AND message = ''")

        # the books agree with the stored fills
        rows = await store.query("SELECT fill_id, side, quantity FROM fills")
        assert len({r[0] for r in rows}) == len(rows)
        position = sum((D(q) if s == "buy" else -D(q) for _, s, q in rows), D(0))
        assert rig.portfolio.quantity(SYM) == position
    finally:
        await rig.close()


async def _inject(data: st.DataObject, rig: Any, ts: int) -> int:
    """Deliver 0-2 hostile updates; returns how many of them must certainly be refused."""
    broker, orders = rig.broker, rig.orders
    must_refuse = 0
    for _ in range(data.draw(st.integers(0, 2))):
        kind = data.draw(st.sampled_from(_KINDS))
        known = sorted(broker.state.orders)
        if kind == "unknown_order":
            status = data.draw(st.sampled_from(list(OrderStatus)))
            await rig.pipeline.on_update(OrderUpdate(f"ghost-{ts}", status, ts))
            must_refuse += 1
        elif kind == "malformed" and known:
            cid = data.draw(st.sampled_from(known))
            update, _how = _malform(data, cid, broker.state.orders[cid].symbol, ts)
            await rig.pipeline.on_update(update)
            must_refuse += 1
        elif kind in ("duplicate", "stale") and broker.delivered:
            old = data.draw(st.sampled_from(broker.delivered))
            before = sum(orders.rejections.values())
            await rig.pipeline.on_update(old)
            if kind == "duplicate" and old.fill is not None:
                assert sum(orders.rejections.values()) == before + 1  # the fill is not booked twice
        elif kind == "overfill" and known:
            cid = data.draw(st.sampled_from(known))
            order = broker.state.orders[cid]
            fill = Fill(f"rogue-{cid}-{ts}", cid, order.symbol, order.side, order.quantity * 3, D("1.1"), D(0), ts)
            await rig.pipeline.on_update(OrderUpdate(cid, OrderStatus.FILLED, ts, fill=fill))
    return must_refuse


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(bars=_bars(), data=st.data())
def test_arbitrary_bars_and_broker_updates(tmp_path_factory: Any, bars: list[Bar], data: st.DataObject) -> None:
    asyncio.run(_run(tmp_path_factory.mktemp("prop"), bars, data))
