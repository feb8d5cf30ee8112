"""`tradectl run` with broker.kind alpaca against the wire-level fake: orders carry our client ids, fills are
booked from the fake's trade updates, and `tradectl status` shows the positions the fake holds."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import socket
import sqlite3
import sys
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca

pytestmark = pytest.mark.slow
BARS = 200


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
    t0 = int(time.time()) // 60 * 60 - BARS * 60  # the last bar closes about now
    port = _free_port()
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        config = tmp_path / "alpaca.yaml"
        config.write_text(f"""
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
sizing: {{method: fixed, fixed: {{units: '10'}}}}
risk: {{stale_data: {{max_age_seconds: 100000}}}}
api: {{port: {port}}}
store: {{path: {tmp_path / 'run.db'}}}
""", encoding="utf-8")
        env = {**os.environ, "TRADECTL_ALPACA__KEY_ID": KEY_ID, "TRADECTL_ALPACA__SECRET_KEY": SECRET_KEY}
        with (tmp_path / "daemon.log").open("w") as log:
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "daemon.cli", "run", "--config",
                                                        str(config), env=env, stdout=log, stderr=log)
            try:
                await fake.wait_subscribed("SPY", seconds=60)
                await fake.wait_listening(seconds=60)
                for i in range(BARS):
                    price = 100 + 5 * math.sin(i / 6)
                    await fake.publish_bar("SPY", datetime.fromtimestamp(t0 + i * 60, UTC), price, price + 0.3,
                                           price - 0.3, price + 0.1)
                    await asyncio.sleep(0.01)
                await fake.wait_until(lambda: all(o.status == "filled" for o in fake.orders) and fake.orders,
                                      seconds=30, what="every order the daemon sent is filled")
                code, out, err = await _cli("status", "--json", "--config", str(config), env=env)
                assert code == 0, err
                doc = json.loads(out)
            finally:
                if proc.returncode is None:
                    proc.send_signal(signal.SIGTERM)
                assert await asyncio.wait_for(proc.wait(), 60) == 0, (tmp_path / "daemon.log").read_text()[-3000:]

        ids = fake.received_client_order_ids
        assert len(ids) >= 4 and all(i.startswith("tc") for i in ids), ids
        assert fake.records.duplicate_client_order_ids() == {}, "no client order id sent twice"
        assert doc["broker"] == "alpaca-paper" and doc["feed"]["connected"] is True
        held = {s: p.qty for s, p in fake.positions().items()}
        shown = {row["symbol"]: Decimal(str(row["quantity"])) for row in doc["positions"]}
        assert shown == held, (shown, held)
        with sqlite3.connect(tmp_path / "run.db") as db:
            booked = sorted((cid, Decimal(q), Decimal(p)) for cid, q, p in
                            db.execute("SELECT client_order_id, quantity, price FROM fills"))
        executed = sorted((e.client_order_id, e.qty, e.price) for e in fake.executions)
        assert booked == executed, "every execution booked once, at the venue's price"
