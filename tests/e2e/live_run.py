"""`tradectl run` processes trading a venue's wire-level fake, one at a time: the e2e fault tests' common part.

The fake runs in the test's process (the test is the market); each daemon is the real CLI under
``tests/e2e/killable_run.py``, so a test can SIGKILL it between the journal commit and the send, or between
the send and the fill, and start another on the same store. A venue subclass says how to configure it, how
to publish a bar on its fake, when its streams are up and what the fake executed and holds; waiting for
the daemon to catch up and comparing the books are the same for every venue.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import sqlite3
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp

from tests.e2e.test_run_and_status import _free_port


async def cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """One `tradectl` command as its own process: exit code, stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


class LiveRun:
    """A venue's fake and the `tradectl run` processes trading it (subclass per venue)."""

    symbol = ""  # our symbol (data.symbol)
    base_price = 100.0  # the published path: base * (1 + amplitude * sin(i / 6)); an SMA 3/8 cross every few bars
    amplitude = 0.05
    units = "10"
    bars_per_kill = 100  # bars fed to a daemon that is to kill itself

    def __init__(self, tmp_path: Path, t0: int, *, broker_yaml: str, env: dict[str, str],
                 max_age_seconds: int = 100_000, extra_yaml: str = "") -> None:
        self.tmp, self.t0 = tmp_path, t0
        self.db = tmp_path / "run.db"
        self.port = _free_port()
        self.config = tmp_path / "run.yaml"
        self.config.write_text(broker_yaml + f"""
data: {{symbol: {self.symbol}, bar_seconds: 60}}
strategy: {{kind: sma_cross, sma_cross: {{fast: 3, slow: 8}}}}
sizing: {{method: fixed, fixed: {{units: '{self.units}'}}}}
risk: {{stale_data: {{max_age_seconds: {max_age_seconds}}}}}
api: {{port: {self.port}}}
store: {{path: {self.db}}}
""" + extra_yaml, encoding="utf-8")
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None
        self.published = 0
        self.log = tmp_path / "daemon.log"

    # ------------------------------------------------------------------ the venue's part
    async def ready(self) -> None:
        """Until the daemon's streams at the fake are up."""
        raise NotImplementedError

    async def publish_bar(self, open_ts: int, ohlc: tuple[float, float, float, float]) -> None:
        raise NotImplementedError

    def held(self) -> dict[str, Decimal]:
        """The fake's net positions by our symbol (flat ones left out)."""
        raise NotImplementedError

    def executed(self) -> list[tuple[str, Decimal, Decimal]]:
        """Every execution at the fake: (client order id, quantity, price)."""
        raise NotImplementedError

    def sent(self) -> list[str]:
        """Every client order id the fake received, repeats included."""
        raise NotImplementedError

    def filled_at_venue(self, client_order_id: str) -> bool:
        """The fake has filled this order completely."""
        raise NotImplementedError

    # ------------------------------------------------------------------ the process
    async def start(self, kill_at: str = "") -> None:
        """A daemon (killable at ``kill_at``, see killable_run) whose streams are up."""
        env = {**self.env, "TRADECTL_KILL_AT": kill_at}
        with self.log.open("a") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.e2e.killable_run", "run", "--config", str(self.config), env=env,
                stdout=log, stderr=log)
        await self.ready()

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def publish(self, n: int, *, while_alive: bool = False) -> None:
        """The next ``n`` bars of one deterministic price path."""
        for _ in range(n):
            if while_alive and not self.alive:
                return
            i = self.published
            price = self.base_price * (1 + self.amplitude * math.sin(i / 6))
            spread = self.base_price * self.amplitude * 0.06
            await self.publish_bar(self.t0 + i * 60, (price, price + spread, price - spread, price + spread / 3))
            self.published += 1
            await asyncio.sleep(0.01)

    async def caught_up(self) -> None:
        """Until the daemon has decided on the last published bar, stored every execution the fake made and
        shows (over its API) the fake's positions: the books are compared only once every update is booked.
        An order sent on the last bar may still be open at the fake (no bar has filled it yet)."""
        last = datetime.fromtimestamp(self.t0 + self.published * 60, UTC).isoformat()
        deadline = time.monotonic() + 45
        async with aiohttp.ClientSession() as http:
            while True:
                async with http.get(f"http://127.0.0.1:{self.port}/status") as response:
                    doc = await response.json()
                decided = (doc.get("last_decision") or {}).get("ts")
                shown = {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]}
                shown = {s: q for s, q in shown.items() if q}
                booked = self.store("SELECT COUNT(*) FROM fills")[0][0]
                if decided == last and shown == self.held() and booked == len(self.executed()):
                    return
                assert time.monotonic() < deadline, (decided, last, shown, self.held(), booked, len(self.executed()))
                await asyncio.sleep(0.2)

    async def until_killed(self, kill_at: str) -> None:
        """A daemon that SIGKILLs itself at ``kill_at``, fed bars until it has."""
        await self.start(kill_at=kill_at)
        await self.publish(self.bars_per_kill, while_alive=True)
        assert self.proc is not None
        assert await asyncio.wait_for(self.proc.wait(), 30) == -signal.SIGKILL, self.tail()

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(self.proc.wait(), 60) == 0, self.tail()

    async def status(self) -> dict[str, Any]:
        code, out, err = await cli("status", "--json", "--config", str(self.config), env=self.env)
        assert code == 0, err
        return json.loads(out)

    def tail(self) -> str:
        return self.log.read_text()[-3000:]

    async def until(self, check: Callable[[], bool], what: str, seconds: float = 30) -> None:
        """Until ``check()`` holds; fails naming ``what`` with the daemon's log tail after ``seconds``."""
        deadline = time.monotonic() + seconds
        while not check():
            assert time.monotonic() < deadline, f"not within {seconds:g} s: {what}\n{self.tail()}"
            await asyncio.sleep(0.05)

    def store(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as db:
            return list(db.execute(sql))

    def assert_books_agree(self) -> None:
        """The store's fills are the fake's executions, its positions the fake's, and no id went out twice."""
        sent = self.sent()
        assert len(sent) == len(set(sent)), f"no client order id sent twice: {sent}"
        booked = sorted((cid, Decimal(q), Decimal(p)) for cid, q, p in
                        self.store("SELECT client_order_id, quantity, price FROM fills"))
        assert booked == sorted(self.executed()), "every execution booked once, at the venue's price"
        held: dict[str, Decimal] = defaultdict(Decimal)
        for symbol, side, qty in self.store("SELECT symbol, side, quantity FROM fills"):
            held[symbol] += Decimal(qty) if side == "buy" else -Decimal(qty)
        assert {s: q for s, q in held.items() if q} == self.held()
        journaled = {cid for (cid,) in self.store("SELECT client_order_id FROM orders")}
        assert set(sent) <= journaled, "every order the venue has was journaled first"


# ---------------------------------------------------------------------- the fault scenarios, for every venue
async def killed_between_journal_and_send(run: LiveRun) -> None:
    """SIGKILL after the second order's journal commit, before the venue is asked; then a restart trades on.
    The journaled order is never sent: the restarted daemon looks it up, finds nothing and rejects it."""
    await run.until_killed("after_journal:2")
    assert len(run.sent()) == 1, "the second order died before it was sent"
    (lost,) = [cid for (cid,) in run.store("SELECT client_order_id FROM orders WHERE status = 'new'")]
    await run.start()
    try:
        await run.publish(60)
        await run.caught_up()
        doc = await run.status()
    finally:
        await run.stop()
    assert lost not in run.sent(), "a journaled order that was never sent is not re-sent"
    assert run.store(f"SELECT status FROM orders WHERE client_order_id = '{lost}'") == [("rejected",)]
    assert len(run.sent()) >= 3, "the restarted daemon trades on"
    shown = {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]}
    assert {s: q for s, q in shown.items() if q} == run.held(), "`tradectl status` shows the fake's positions"
    run.assert_books_agree()


async def killed_between_send_and_fill(run: LiveRun) -> str:
    """SIGKILL after the first order reached the venue; the venue fills it while no daemon runs; the restarted
    daemon finds it by client id and books the fill once. Returns the order's client id."""
    await run.until_killed("after_send:1")
    (sent,) = run.sent()
    await run.publish(1)  # the venue fills the order while the daemon is down
    assert run.filled_at_venue(sent)
    assert run.store("SELECT COUNT(*) FROM fills") == [(0,)]
    await run.start()
    try:
        await run.until(lambda: run.store(f"SELECT COUNT(*) FROM fills WHERE client_order_id = '{sent}'") == [(1,)],
                        "the fill made while the daemon was down is booked")
        await run.publish(60)
        await run.caught_up()
    finally:
        await run.stop()
    assert run.sent().count(sent) == 1
    assert len(run.sent()) >= 3, "the restarted daemon trades on"
    run.assert_books_agree()
    return sent


async def oversized_fill_halts_and_alerts(run: LiveRun, bot: Any, *, ordered: Decimal, extra: Decimal) -> None:
    """The venue's first execution is ``extra`` larger than its ``ordered`` order (the test has armed the fake;
    ``bot`` is the fake Telegram Bot API the daemon alerts): the fill is booked as the venue made it, never
    hidden, trading halts (orders/halt/overfill in ``risk_events``, the HALTED state stored), the alert goes out,
    and no order follows the halt."""
    from tests.e2e.test_telegram_process import OPS

    await run.start()
    try:
        while not run.executed():  # bar by bar until an order meets a price (the fakes fill at the next one)
            assert run.published < 150, run.tail()
            await run.publish(1)
        first = run.sent()[0]
        assert run.executed()[0][:2] == (first, ordered + extra)
        await run.until(lambda: run.store("SELECT value FROM state WHERE key = 'trading_state'") == [("halted",)],
                        "trading halted")
        sent_at_halt = len(run.sent())
        await run.publish(60)  # many crosses: none may become an order now
        await run.caught_up()
        doc = await run.status()
        await run.until(lambda: any("overfill" in t for t in bot.texts(OPS)), "the overfill alert sent")
    finally:
        await run.stop()
    assert doc["state"] == "halted", doc["state"]
    assert len(run.sent()) == sent_at_halt, "no order after the halt"
    halts = run.store("SELECT layer, kind, reason, message FROM risk_events WHERE reason = 'overfill'")
    assert ("orders", "halt", "overfill", f"{first}: filled {ordered + extra} of {ordered}") in halts, halts
    outbox = run.store("SELECT kind, status FROM alert_outbox WHERE kind = 'overfill'")
    assert outbox == [("overfill", "sent")], outbox
    booked = run.store(f"SELECT quantity FROM fills WHERE client_order_id = '{first}'")
    assert booked == [(str(ordered + extra),)], "the venue's execution is booked as it happened, never hidden"
    run.assert_books_agree()
