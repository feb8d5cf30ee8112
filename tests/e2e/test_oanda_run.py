"""`tradectl run` with broker.kind oanda against the wire-level fake for 300 M1 bars: orders carry our client ids
(none twice), fills are booked from the fake's transactions at its prices and fees, and `tradectl status` shows
the positions the fake holds."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import sqlite3
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from tests.brokers.harness import publish_oanda_bar
from tests.fakes.oanda import ACCOUNT_ID, TOKEN, FakeOanda

pytestmark = pytest.mark.slow
BARS = 300
T0 = 1704794400  # 2024-01-09T10:00:00Z, a Tuesday: the FX week is open for all 300 minutes


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", *args, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode or 0, out.decode(), err.decode()


async def test_run_trades_the_fake_and_status_shows_its_positions(tmp_path: Path) -> None:
    port = _free_port()
    async with FakeOanda(start_time=T0, commission="0.05", heartbeat_every=1.0) as fake:
        config = tmp_path / "oanda.yaml"
        config.write_text(f"""
broker:
  kind: oanda
  oanda:
    account_id: {ACCOUNT_ID}
    granularity: M1
    api_url: {fake.base_url}
    stream_url: {fake.base_url}
    transactions_poll_seconds: 0.2
    backoff_floor_seconds: 0.1
    backoff_cap_seconds: 1
data: {{symbol: EURUSD, bar_seconds: 60}}
strategy: {{kind: sma_cross, sma_cross: {{fast: 3, slow: 8}}}}
sizing: {{method: fixed, fixed: {{units: '1000'}}}}
risk: {{stale_data: {{max_age_seconds: 1000000000}}}}
api: {{port: {port}}}
store: {{path: {tmp_path / 'run.db'}}}
""", encoding="utf-8")
        env = {**os.environ, "TRADECTL_OANDA__TOKEN": TOKEN}
        with (tmp_path / "daemon.log").open("w") as log:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", "run", "--config",
                                                        str(config), env=env, stdout=log, stderr=log)
            try:
                await fake.wait_streaming(1, seconds=60)
                for i in range(BARS):
                    price = 1.10 + 0.004 * math.sin(i / 6)
                    publish_oanda_bar(fake, T0 + i * 60, (price, price + 0.0003, price - 0.0003, price + 0.0001))
                    await asyncio.sleep(0.01)
                await fake.wait_until(lambda: bool(fake.orders) and all(o.state == "FILLED" for o in fake.orders),
                                      seconds=30, what="every order the daemon sent is filled")
                await asyncio.sleep(1.0)  # a few transaction polls: every fill booked
                code, out, err = await _cli("status", "--json", "--config", str(config), env=env)
                assert code == 0, err
                doc = json.loads(out)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 60) == 0, (tmp_path / "daemon.log").read_text()[-3000:]
        log_text = (tmp_path / "daemon.log").read_text()
        assert "mismatch" not in log_text and "Traceback" not in log_text, log_text[-3000:]

        ids = fake.records.client_ids
        print(f"{len(ids)} orders, {len(fake.fills)} fills, positions {fake.net_positions()}")
        assert len(ids) >= 4 and all(i.startswith("tc") for i in ids), ids
        assert fake.records.duplicate_client_ids() == {}, "no client order id sent twice"
        assert doc["broker"] == "oanda-practice" and doc["feed"]["connected"] is True
        held = {i.replace("_", ""): units for i, units in fake.net_positions().items()}
        shown = {row["symbol"]: Decimal(str(row["quantity"])) for row in doc["positions"]}
        shown = {symbol: quantity for symbol, quantity in shown.items() if quantity}
        assert shown == held, (shown, held)
        with sqlite3.connect(tmp_path / "run.db") as db:
            booked = sorted((fid, cid, Decimal(q), Decimal(p), Decimal(f)) for fid, cid, q, p, f in
                            db.execute("SELECT fill_id, client_order_id, quantity, price, fee FROM fills"))
        cid_of = {o.id: o.client_id for o in fake.orders}
        executed = sorted((tx["id"], cid_of[tx["orderID"]], abs(Decimal(tx["units"])), Decimal(tx["price"]),
                           Decimal(tx["commission"])) for tx in fake.fills)
        assert booked == executed, "every execution booked once, at the venue's price and fee"
