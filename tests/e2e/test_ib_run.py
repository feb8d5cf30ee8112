"""`tradectl run` with broker.kind ib against the fake TWS for a few hundred bars, as a real process.

The daemon's own ib_async client connects to the fake over the TWS socket protocol, qualifies SPY, sums
5-second real-time bars into 15-second bars, and trades the SMA baseline on them: orders carry our client
order ids in orderRef (none twice), every execution is booked once at the venue's price with its commission,
and `tradectl status` shows the positions the fake holds. (Connectivity faults, refusals and the late
commission are tested at the adapter level in ``tests/integration/test_ib_adapter.py``.)
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
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.e2e.test_run_and_status import _free_port
from tests.fakes.tws import FakeTws

pytestmark = pytest.mark.slow
BARS = 240
STEP = 15  # the daemon's bar: three 5-second real-time bars
SIZE = Decimal(10)


def _store(db: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute(sql))


async def test_run_trades_the_fake_tws_and_status_shows_its_positions(tmp_path: Path) -> None:
    t0 = int(time.time()) // 60 * 60 - BARS * STEP  # the last bar closes about now
    db, port, log = tmp_path / "run.db", _free_port(), tmp_path / "daemon.log"
    async with FakeTws() as fake:
        config = tmp_path / "ib.yaml"
        config.write_text(f"""
broker:
  kind: ib
  ib: {{port: {fake.port}, client_id: 3, bar_seconds: {STEP}, backoff_floor_seconds: 0.1, backoff_cap_seconds: 1}}
data: {{symbol: SPY, bar_seconds: {STEP}}}
strategy: {{kind: sma_cross, sma_cross: {{fast: 3, slow: 8}}}}
sizing: {{method: fixed, fixed: {{units: '{SIZE}'}}}}
risk: {{stale_data: {{max_age_seconds: 100000}}}}
api: {{port: {port}}}
store: {{path: {db}}}
""", encoding="utf-8")
        with log.open("a") as out:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", "run", "--config",
                                                        str(config), stdout=out, stderr=out)
        try:
            await fake.wait_until(lambda: fake.subscribed("SPY") == 1, 60, "SPY real-time bars subscribed")
            for i in range(BARS):
                price = 100 + 5 * math.sin(i / 6)
                for k in range(3):
                    p = round(price + 0.05 * k, 4)
                    await fake.publish_bar("SPY", t0 + i * STEP + 5 * k, p, p + 0.3, p - 0.3, p + 0.02)
                await asyncio.sleep(0.01)
            last = t0 + BARS * STEP
            deadline = time.monotonic() + 45
            async with aiohttp.ClientSession() as http:
                while True:
                    async with http.get(f"http://127.0.0.1:{port}/status") as response:
                        doc = await response.json()
                    decided = (doc.get("last_decision") or {}).get("ts")
                    shown = {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]}
                    booked = _store(db, "SELECT COUNT(*) FROM fills")[0][0]
                    held = {"SPY": fake.position("SPY")} if fake.position("SPY") else {}
                    if decided == _iso(last) and shown == held and booked == len(fake.executions):
                        break
                    assert time.monotonic() < deadline, (decided, _iso(last), shown, held, booked,
                                                         log.read_text()[-3000:])
                    await asyncio.sleep(0.2)
            env = dict(os.environ)
            status = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", "status", "--json",
                                                          "--config", str(config), env=env,
                                                          stdout=asyncio.subprocess.PIPE)
            out_bytes, _ = await asyncio.wait_for(status.communicate(), 60)
            doc = json.loads(out_bytes)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(proc.wait(), 60) == 0, log.read_text()[-3000:]
        refs = fake.records.order_refs
        assert len(refs) >= 4 and all(r.startswith("tc") for r in refs), refs
        assert fake.records.duplicate_order_refs() == {}, "no client order id sent twice"
        assert doc["broker"] == "ib" and doc["feed"]["connected"] is True
        assert {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]} == held
        booked_fills = sorted((cid, Decimal(q), Decimal(p), Decimal(f)) for cid, q, p, f in
                              _store(db, "SELECT client_order_id, quantity, price, fee FROM fills"))
        executed = sorted((e.fields.order_ref, e.fields.shares, e.fields.price, e.fields.commission)
                          for e in fake.executions)
        assert booked_fills == executed, "every execution booked once, at the venue's price, with its commission"
        net: dict[str, Decimal] = defaultdict(Decimal)
        for symbol, side, qty in _store(db, "SELECT symbol, side, quantity FROM fills"):
            net[symbol] += Decimal(qty) if side == "buy" else -Decimal(qty)
        assert {s: q for s, q in net.items() if q} == held
        decided = [ts for (ts,) in _store(db, "SELECT ts FROM decisions ORDER BY id")]
        first = decided[0]
        assert decided == list(range(first, last + 1, STEP)) and first <= t0 + 8 * STEP, \
            "one decision per 15-second bar from the slow SMA's first, none twice, none missing"


def _iso(ts: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()
