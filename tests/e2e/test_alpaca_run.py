"""`tradectl run` with broker.kind alpaca against the wire-level fake: orders carry our client ids, fills are
booked from the fake's trade updates, and `tradectl status` shows the positions the fake holds.

Then the faults a real process meets, each ending with the store's fills and positions equal to the fake's
and no client order id sent twice: SIGKILL between the journal commit and the send, and between the send and
the fill (``tests/e2e/killable_run.py`` kills at exactly those points), each followed by a restart; and a
burst of 429s in the middle of a run. (The adapter-level faults, reconnect and backfill, a lost submit answer
and 429 handling, are tested in ``tests/integration/test_alpaca_adapter.py``.)
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_run_and_status import _free_port
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca

pytestmark = pytest.mark.slow
BARS = 200
SIZE = Decimal(10)


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


class _Run:
    """The fake (in this process, the test is the market) and `tradectl run` processes trading it, one at a time."""

    def __init__(self, tmp_path: Path, fake: FakeAlpaca, t0: int) -> None:
        self.tmp, self.fake, self.t0 = tmp_path, fake, t0
        self.db = tmp_path / "run.db"
        self.port = _free_port()
        self.config = tmp_path / "alpaca.yaml"
        self.config.write_text(f"""
broker:
  kind: alpaca
  alpaca:
    trading_url: {fake.base_url}
    data_url: {fake.base_url}
    data_stream_url: {fake.stock_stream_url('iex')}
    trading_stream_url: {fake.trading_stream_url}
    backoff_floor_seconds: 0.1
    backoff_cap_seconds: 1
data: {{symbol: SPY, bar_seconds: 60}}
strategy: {{kind: sma_cross, sma_cross: {{fast: 3, slow: 8}}}}
sizing: {{method: fixed, fixed: {{units: '{SIZE}'}}}}
risk: {{stale_data: {{max_age_seconds: 100000}}}}
api: {{port: {self.port}}}
store: {{path: {self.db}}}
""", encoding="utf-8")
        self.env = {**os.environ, "TRADECTL_ALPACA__KEY_ID": KEY_ID, "TRADECTL_ALPACA__SECRET_KEY": SECRET_KEY}
        self.proc: asyncio.subprocess.Process | None = None
        self.published = 0
        self.log = tmp_path / "daemon.log"

    async def start(self, kill_at: str = "") -> None:
        """A daemon (killable at ``kill_at``, see killable_run) whose streams are up."""
        env = {**self.env, "TRADECTL_KILL_AT": kill_at}
        with self.log.open("a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.e2e.killable_run", "run", "--config", str(self.config), env=env,
                stdout=log, stderr=log)
        await self.fake.wait_until(lambda: self.fake.market_data.subscribed("SPY") == 1, 60, "SPY subscribed")
        await self.fake.wait_listening(seconds=60)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def publish(self, n: int, *, while_alive: bool = False) -> None:
        """The next ``n`` bars of one deterministic price path (an SMA 3/8 cross trades every few bars)."""
        for _ in range(n):
            if while_alive and not self.alive:
                return
            i = self.published
            price = 100 + 5 * math.sin(i / 6)
            await self.fake.publish_bar("SPY", datetime.fromtimestamp(self.t0 + i * 60, UTC), price, price + 0.3,
                                        price - 0.3, price + 0.1)
            self.published += 1
            await asyncio.sleep(0.01)

    async def caught_up(self) -> None:
        """Until the daemon has decided on the last published bar, stored every execution the fake made and
        shows (over its API) the fake's positions: the books are compared only once every update is booked.
        An order sent on the last bar may still be open at the fake (no bar has filled it yet)."""
        fake = self.fake
        last = datetime.fromtimestamp(self.t0 + self.published * 60, UTC).isoformat()
        deadline = time.monotonic() + 45
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"http://127.0.0.1:{self.port}/status") as response:
                    doc = await response.json()
                decided = (doc.get("last_decision") or {}).get("ts")
                shown = {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]}
                booked = self.store("SELECT COUNT(*) FROM fills")[0][0]
                if decided == last and shown == self.held() and booked == len(fake.executions):
                    return
                assert time.monotonic() < deadline, (decided, last, shown, self.held(), booked, len(fake.executions))
                await asyncio.sleep(0.2)

    def held(self) -> dict[str, Decimal]:
        return {s: p.qty for s, p in self.fake.positions().items()}

    async def until_killed(self, kill_at: str) -> None:
        """A daemon that SIGKILLs itself at ``kill_at``, fed bars until it has."""
        await self.start(kill_at=kill_at)
        await self.publish(BARS // 2, while_alive=True)
        assert self.proc is not None
        assert await asyncio.wait_for(self.proc.wait(), 30) == -signal.SIGKILL, self.tail()

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), 60) == 0, self.tail()

    async def status(self) -> dict[str, Any]:
        code, out, err = await _cli("status", "--json", "--config", str(self.config), env=self.env)
        assert code == 0, err
        return json.loads(out)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    def store(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as db:
            return list(db.execute(sql))

    def assert_books_agree(self) -> None:
        """The store's fills are the fake's executions, its positions the fake's, and no id went out twice."""
        fake = self.fake
        assert fake.records.duplicate_client_order_ids() == {}, "no client order id sent twice"
        booked = sorted((cid, Decimal(q), Decimal(p)) for cid, q, p in
                        self.store("SELECT client_order_id, quantity, price FROM fills"))
        executed = sorted((e.client_order_id, e.qty, e.price) for e in fake.executions)
        assert booked == executed, "every execution booked once, at the venue's price"
        held: dict[str, Decimal] = defaultdict(Decimal)
        for symbol, side, qty in self.store("SELECT symbol, side, quantity FROM fills"):
            held[symbol] += Decimal(qty) if side == "buy" else -Decimal(qty)
        assert {s: q for s, q in held.items() if q} == self.held()
        sent = set(fake.received_client_order_ids)
        journaled = {cid for (cid,) in self.store("SELECT client_order_id FROM orders")}
        assert sent <= journaled, "every order the venue has was journaled first"


def _t0() -> int:
    return int(time.time()) // 60 * 60 - BARS * 60  # the last bar closes about now


async def test_run_trades_the_fake_and_status_shows_its_positions(tmp_path: Path) -> None:
    async with FakeAlpaca(start_time=datetime.fromtimestamp(_t0(), UTC)) as fake:
        run = _Run(tmp_path, fake, _t0())
        await run.start()
        try:
            await run.publish(BARS)
            await run.caught_up()
            doc = await run.status()
        finally:
            await run.stop()
        ids = fake.received_client_order_ids
        assert len(ids) >= 4 and all(i.startswith("tc") for i in ids), ids
        assert doc["broker"] == "alpaca-paper" and doc["feed"]["connected"] is True
        shown = {row["symbol"]: Decimal(str(row["quantity"])) for row in doc["positions"]}
        assert shown == run.held(), "`tradectl status` shows the positions the fake holds"
        run.assert_books_agree()


async def test_killed_between_journal_and_send_the_order_is_never_sent(tmp_path: Path) -> None:
    t0 = _t0()
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        run = _Run(tmp_path, fake, t0)
        await run.until_killed("after_journal:2")
        assert len(fake.received_client_order_ids) == 1, "the second order died before it was sent"
        (lost,) = [cid for (cid,) in run.store("SELECT client_order_id FROM orders WHERE status = 'new'")]
        await run.start()
        try:
            await run.publish(60)
            await run.caught_up()
            doc = await run.status()
        finally:
            await run.stop()
        assert lost not in fake.received_client_order_ids, "a journaled order that was never sent is not re-sent"
        assert run.store(f"SELECT status FROM orders WHERE client_order_id = '{lost}'") == [("rejected",)]
        assert len(fake.received_client_order_ids) >= 3, "the restarted daemon trades on"
        assert {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]} == run.held()
        run.assert_books_agree()


async def test_killed_between_send_and_fill_the_fill_is_booked_after_restart(tmp_path: Path) -> None:
    t0 = _t0()
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        run = _Run(tmp_path, fake, t0)
        await run.until_killed("after_send:1")
        (sent,) = fake.received_client_order_ids
        await run.publish(1)  # the venue fills the order while the daemon is down
        assert fake.order(sent) is not None and fake.order(sent).status == "filled"
        assert run.store("SELECT COUNT(*) FROM fills") == [(0,)]
        await run.start()
        try:
            await fake.wait_until(lambda: run.store(f"SELECT COUNT(*) FROM fills WHERE client_order_id = '{sent}'")
                                  == [(1,)], 30, "the fill made while the daemon was down is booked")
            await run.publish(60)
            await run.caught_up()
        finally:
            await run.stop()
        assert fake.received_client_order_ids.count(sent) == 1
        assert len(fake.received_client_order_ids) >= 3, "the restarted daemon trades on"
        run.assert_books_agree()


async def test_a_burst_of_429s_mid_run_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    t0 = _t0()
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        run = _Run(tmp_path, fake, t0)
        await run.start()
        try:
            await run.publish(40)
            refused = [s for *_, s in fake.records.responses].count(429)
            fake.rate_limit_next(4, reset_in_seconds=0.5)
            await run.publish(60)
            await fake.wait_until(lambda: [s for *_, s in fake.records.responses].count(429) == refused + 4, 30,
                                  "the whole burst was served")
            await run.publish(40)
            await run.caught_up()
            doc = await run.status()
        finally:
            await run.stop()
        assert doc["state"] == "active", doc["state"]
        refused = [(m, p) for m, p, s in fake.records.responses if s == 429].count(("POST", "/v2/orders"))
        rejected = run.store("SELECT COUNT(*) FROM orders WHERE status = 'rejected' AND message LIKE '%rate limited%'")
        assert rejected == [(refused,)], "an order refused with 429 is rejected, never sent again"
        assert {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]} == run.held()
        run.assert_books_agree()
