"""The real `tradectl run` against the file-backed sim broker: killed, restarted, books still agree."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.sim.state import StateFile
from tests.e2e.test_run_and_status import _cli, _free_port

pytestmark = pytest.mark.slow


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    handle = log.open("a")
    return subprocess.Popen(
        [sys.executable, "-m", "daemon.cli", "run"], env=env, stdout=subprocess.PIPE, stderr=handle, text=True
    )


def _wait_status(env: dict[str, str], predicate: object, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = _cli("status", "--json", env=env)
        if result.returncode == 0:
            doc = json.loads(result.stdout)
            if predicate(doc):  # type: ignore[operator]
                return doc
        time.sleep(0.3)
    raise AssertionError("daemon did not reach the expected status in time")


def _risk(env: dict[str, str]) -> dict[str, object]:
    result = _cli("risk", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_sigkill_then_restart_meets_the_broker_as_it_left_it(tmp_path: Path) -> None:
    port = _free_port()
    env = dict(os.environ)
    env.update(
        TRADECTL_API__PORT=str(port),
        TRADECTL_API__TOKEN="t",
        TRADECTL_STORE__PATH=str(tmp_path / "run.db"),
        TRADECTL_BROKER__SIM__STATE_FILE=str(tmp_path / "broker.json"),
        TRADECTL_DATA__PACE="300",
        TRADECTL_STRATEGY__KIND="sma_cross",
    )
    log = tmp_path / "daemon.log"
    first = _start(env, log)
    try:
        before = _wait_status(env, lambda d: d["counts"]["fills"] >= 3, timeout=60)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    assert before["counts"]["fills"] >= 3

    second = _start(env, log)
    try:
        doc = _wait_status(env, lambda d: d["feed"]["position"] > before["feed"]["position"], timeout=60)
        risk = _risk(env)
        startup = risk["startup"]
        assert startup is not None and startup["may_trade"], startup
        assert startup["reconciliation"]["status"] == "ok"
        assert doc["state"] == "active"
        # the replay continues where the broker's clock stopped instead of starting over
        assert doc["feed"]["position"] >= before["feed"]["position"]
    finally:
        second.send_signal(signal.SIGTERM)
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, log.read_text()[-2000:]
    assert "tradectl run summary" in out

    broker = StateFile(tmp_path / "broker.json").load()
    with sqlite3.connect(tmp_path / "run.db") as conn:
        stored = {row[0] for row in conn.execute("SELECT fill_id FROM fills")}
        sent = [row[0] for row in conn.execute("SELECT client_order_id FROM orders WHERE status != 'rejected'")]
        signed = conn.execute("SELECT side, quantity FROM fills").fetchall()
    broker_fills = {f.fill_id for f in broker.fills}
    assert broker_fills <= stored, "a broker fill is missing from the store"
    assert len(sent) == len(set(sent))
    position = sum((Decimal(q) if side == "buy" else -Decimal(q) for side, q in signed), Decimal(0))
    broker_position = sum((p.quantity for p in broker.positions.values()), Decimal(0))
    assert position == broker_position
