"""`tradectl run` as a real process, `tradectl status` from another, Ctrl-C exits 0 with a summary."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def _env(port: int, tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        TRADECTL_API__PORT=str(port),
        TRADECTL_STORE__PATH=str(tmp_path / "run.db"),
        TRADECTL_DATA__PACE="100",  # 62 s of bars: the CLI calls below finish long before, even on a loaded machine
        TRADECTL_API__TOKEN="e2e-token",
    )
    return env


def test_run_status_pause_and_clean_shutdown(tmp_path: Path) -> None:
    port = _free_port()
    env = _env(port, tmp_path)
    log_path = tmp_path / "daemon.log"
    with log_path.open("w") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "daemon.cli", "run"], env=env, stdout=subprocess.PIPE, stderr=log_file, text=True
        )
        try:
            doc = _wait_for_trades(env, timeout=60)
            assert doc["broker"] == "sim"
            assert doc["counts"]["fills"] >= 1
            assert doc["positions"] or doc["counts"]["trades"] >= 1
            assert isinstance(doc["pnl_today"], int | float)
            assert doc["loop_lag_ms"]["samples"] > 0

            table = _cli("status", env=env)
            assert table.returncode == 0, table.stderr
            for label in ("State", "Equity", "P&L today", "Feed"):
                assert label.lower() in table.stdout.lower()

            paused = _cli("pause", "--json", env=env)
            assert paused.returncode == 0, paused.stderr
            assert json.loads(paused.stdout)["state"] == "paused"
            resumed = _cli("resume", "--json", env=env)
            assert json.loads(resumed.stdout)["state"] == "active"

            risk = _cli("risk", env=env)
            assert risk.returncode == 0, risk.stderr
            assert "trading state   active" in risk.stdout
            for layer in ("kill_switch", "position_limit", "fat_finger", "daily_loss", "drawdown"):
                assert layer in risk.stdout

            no_token = dict(env)
            del no_token["TRADECTL_API__TOKEN"]
            refused = _cli("pause", env=no_token)
            assert refused.returncode == 1 and "401 missing or wrong bearer token" in refused.stderr
            assert _status(env)["state"] == "active"

            paused = _cli("pause", env=env)  # stop new entries so the flatten result stays visible
            flat = _cli("flatten", "--json", env=env)
            assert flat.returncode == 0, flat.stderr
            result = json.loads(flat.stdout)
            assert result["denied"] == []
            _wait(lambda: not _status(env)["positions"], timeout=20, what="positions closed by flatten")
        finally:
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, log_path.read_text()[-2000:]
    assert "tradectl run summary" in out
    assert "round-trip trades" in out
    log_text = log_path.read_text()
    assert "order" in log_text and "fill" in log_text


def _status(env: dict[str, str]) -> dict[str, object]:
    result = _cli("status", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait(check: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _wait_for_trades(env: dict[str, str], timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        result = _cli("status", "--json", env=env)
        if result.returncode == 0:
            doc = json.loads(result.stdout)
            if doc["counts"]["fills"] >= 1:
                return doc
        last = result.stderr
        time.sleep(0.5)
    raise AssertionError(f"no trades within {timeout}s; last status error: {last}")


def test_status_without_a_daemon_is_a_clear_message(tmp_path: Path) -> None:
    env = _env(_free_port(), tmp_path)
    result = _cli("status", env=env)
    assert result.returncode == 3
    assert "no tradectl daemon answering" in result.stderr
    assert "Traceback" not in result.stderr
