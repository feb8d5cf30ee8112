"""No entries while the venue's streams are down (issue 9): a real LiveRunner on the Alpaca adapter and its
wire-level fake, with a scripted strategy so every decision is known in advance.

A bar the daemon already holds when the venue goes down is decided on while it is down: the test holds such a
bar at the pipeline's door (``on_bar`` waits for a gate), cuts the market-data socket and the trade-updates
socket and keeps both down, then lets the bar through. Its entry is refused with ``broker_disconnected``;
after ``restore_streams()`` an entry goes out again; an exit decided while both streams are down still goes
out over REST, and its fill, made while nobody listened, is recovered once the streams are back.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from brokers.base import Bar
from daemon.config import TradectlConfig
from daemon.runners import LiveRunner
from strategies.base import Action, Decision, PositionView
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca
from tests.waiting import until

D = Decimal
TOKEN = "disconnected-entries-token"
SYMBOL = "SPY"


class _Scripted:
    """A strategy whose action on each bar is fixed by the test (HOLD when the script says nothing)."""

    name = "scripted"
    warmup_bars = 0
    model_sha256 = None

    def __init__(self, script: dict[int, Action]) -> None:
        self.script = script

    def decide(self, bars: Sequence[Bar], positions: Sequence[PositionView]) -> list[Decision]:
        return [Decision(b.symbol, b.ts, self.script.get(b.ts, Action.HOLD), reason="script") for b in bars]

    def reset(self, symbol: str) -> None:
        return None

    def describe(self) -> dict[str, object]:
        return {"kind": self.name}


class _Door:
    """Holds chosen bars at ``pipeline.on_bar`` until released: a bar in hand while the venue goes down."""

    def __init__(self, runner: LiveRunner) -> None:
        pipeline = runner.daemon.pipeline
        self._on_bar = pipeline.on_bar
        self._gates: dict[int, asyncio.Event] = {}
        self.waiting: set[int] = set()
        pipeline.on_bar = self._gated  # type: ignore[method-assign]

    def hold(self, ts: int) -> None:
        self._gates[ts] = asyncio.Event()

    def release(self, ts: int) -> None:
        self._gates[ts].set()

    async def _gated(self, bar: Bar) -> None:
        gate = self._gates.get(bar.ts)
        if gate is not None:
            self.waiting.add(bar.ts)
            await gate.wait()
        await self._on_bar(bar)


async def _get(runner: LiveRunner, path: str) -> str:
    assert runner.api is not None
    async with aiohttp.ClientSession() as session, session.get(
            runner.api.url + path, headers={"Authorization": f"Bearer {TOKEN}"}) as response:
        assert response.status == 200, path
        return await response.text()


async def test_entries_wait_for_the_venue_while_exits_go_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRADECTL_ALPACA__KEY_ID", KEY_ID)
    monkeypatch.setenv("TRADECTL_ALPACA__SECRET_KEY", SECRET_KEY)
    t0 = int(time.time()) // 60 * 60 - 20 * 60  # every bar below is in the past: history once published
    opens = [datetime.fromtimestamp(t0 + i * 60, UTC) for i in range(5)]
    close = [t0 + i * 60 + 60 for i in range(5)]  # Bar.ts: stamped at the close
    script = {close[0]: Action.BUY, close[1]: Action.BUY, close[3]: Action.CLOSE}
    async with FakeAlpaca(start_time=opens[0]) as fake:
        config = TradectlConfig(
            broker={"kind": "alpaca", "alpaca": {
                "trading_url": fake.base_url, "data_url": fake.base_url,
                "data_stream_url": fake.stock_stream_url("iex"), "trading_stream_url": fake.trading_stream_url,
                "backoff_floor_seconds": 0.05, "backoff_cap_seconds": 0.3,
            }},
            data={"symbol": SYMBOL, "bar_seconds": 60},
            strategy={"kind": "sma_cross"},
            sizing={"method": "fixed", "fixed": {"units": "10"}},
            risk={"window": {"enabled": False}, "stale_data": {"max_age_seconds": 3600}},
            reconcile={"interval_seconds": 3600},
            api={"enabled": True, "port": 0, "token": TOKEN},
            store={"path": str(tmp_path / "live.db"), "synchronous": "normal"},
        )
        runner = await LiveRunner.open(config, bars=[])
        daemon = runner.daemon
        daemon.strategy = daemon.pipeline.strategy = _Scripted(script)
        door = _Door(runner)
        broker = daemon.broker
        trading = asyncio.create_task(runner.run(install_signals=False))

        async def publish(i: int) -> None:
            await fake.publish_bar(SYMBOL, opens[i], 100 + i, 100.5 + i, 99.5 + i, 100.2 + i)

        async def bar_in_hand_while_down(i: int) -> None:
            door.hold(close[i])
            await publish(i)
            await until(lambda: close[i] in door.waiting, 10, f"bar {i} in hand")
            await fake.drop_market_data(stay_down=True)
            await fake.drop_trade_updates(stay_down=True)
            await until(lambda: not (broker.market_data.connected or broker.trade_updates.connected), 10,
                        "the adapter saw both streams go")
            assert broker.feed_status()["connected"] is False
            door.release(close[i])
            await until(lambda: daemon.pipeline.last_decision is not None
                        and daemon.pipeline.last_decision.ts == close[i], 10, f"the decision on bar {i}")

        async def restored() -> None:
            fake.restore_streams()
            await until(lambda: broker.feed_status()["connected"] is True, 20, "both streams back")
            await fake.wait_subscribed(SYMBOL, seconds=10)

        try:
            await fake.wait_subscribed(SYMBOL, seconds=30)
            await fake.wait_listening(seconds=30)
            await until(lambda: runner.api is not None and runner.api.port != 0, 10, "the API")

            # an entry decided while both streams are down: refused, nothing reaches the venue
            await bar_in_hand_while_down(0)
            last = daemon.pipeline.last_decision
            assert (last.action, last.verdict, last.reason) == ("BUY", "block", "broker_disconnected")
            assert fake.received_client_order_ids == []

            # back up (backfill and order recovery done): the next entry goes out and fills
            await restored()
            await publish(1)
            await until(lambda: len(fake.received_client_order_ids) == 1, 10, "the entry reached the venue")
            await publish(2)
            await until(lambda: daemon.portfolio.quantity(SYMBOL) == D(10), 10, "the entry's fill booked")

            # an exit decided while both streams are down goes out over REST
            await bar_in_hand_while_down(3)
            await until(lambda: len(fake.received_client_order_ids) == 2, 10, "the exit reached the venue")
            last = daemon.pipeline.last_decision
            assert (last.action, last.verdict) == ("CLOSE", "allow")
            exit_id = fake.received_client_order_ids[1]
            await publish(4)  # the exit fills while nobody listens: history and the venue's books only
            assert SYMBOL not in fake.positions()
            assert daemon.portfolio.quantity(SYMBOL) == D(10), "no fill can reach the books while the stream is down"

            await restored()
            await until(lambda: daemon.portfolio.quantity(SYMBOL) == 0 and daemon.pipeline.counts.bars == 5, 20,
                        "the exit's fill recovered and the missed bar backfilled")
            risk = await _get(runner, "/risk")
            metrics = await _get(runner, "/metrics")
        finally:
            daemon.request_stop()
            await asyncio.wait_for(trading, 30)

        ids = fake.received_client_order_ids
        assert len(ids) == len(set(ids)) == 2 and ids[1] == exit_id, "each order sent once"
        executions = sorted((e.client_order_id, e.side, e.qty, e.price) for e in fake.executions)
        with sqlite3.connect(tmp_path / "live.db") as db:
            fills = sorted((cid, side, D(q), D(p)) for cid, side, q, p in db.execute(
                "SELECT client_order_id, side, quantity, price FROM fills"))
            denials = db.execute("SELECT layer, reason FROM risk_events WHERE kind = 'block'").fetchall()
    assert fills == executions and len(fills) == 2, "the books hold exactly the venue's executions"
    assert denials == [("broker_connection", "broker_disconnected")]
    layers = {layer["name"]: layer["figures"] for layer in json.loads(risk)["layers"]}
    assert layers["broker_connection"] == {"value": "connected", "limit": "connected"}, "as it last judged an order"
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(metrics) for s in family.samples}
    key = ("tradectl_risk_denials_total",
           (("layer", "broker_connection"), ("reason", "broker_disconnected"), ("verdict", "block")))
    assert samples[key] == 1.0
