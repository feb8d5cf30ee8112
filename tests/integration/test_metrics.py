"""GET /metrics on a live daemon (the simulator, in-process, real HTTP): the figures agree with /status,
a state change shows up, and promtool finds nothing to complain about."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.runners import LiveRunner
from tests.waiting import until

TOKEN = "metrics-test-token"


def _config(tmp_path: Path) -> TradectlConfig:
    return TradectlConfig(
        api={"enabled": True, "port": 0, "token": TOKEN},
        strategy={"kind": "sma_cross", "sma_cross": {"fast": 3, "slow": 8, "allow_short": True}},
        store={"path": str(tmp_path / "live.db")},
        data={"pace": 200},
    )


@contextlib.asynccontextmanager
async def _running(tmp_path: Path) -> AsyncIterator[LiveRunner]:
    runner = await LiveRunner.open(_config(tmp_path), bars=load_bundled()[:3000])
    trading = asyncio.create_task(runner.run(install_signals=False))
    try:
        daemon = runner.daemon
        await until(lambda: runner.api is not None and runner.api.port != 0 and daemon.pipeline.counts.fills >= 2,
                     seconds=15)
        yield runner
    finally:
        runner.daemon.request_stop()
        await asyncio.wait_for(trading, 10)


async def _get(runner: LiveRunner, path: str, method: str = "GET") -> tuple[int, str, str]:
    assert runner.api is not None
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession() as session, session.request(method, runner.api.url + path,
                                                                     headers=headers) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _by(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, label: str) -> dict[str, float]:
    return {dict(key)[label]: v for (n, key), v in samples.items() if n == name}


async def _scrape_with_status(runner: LiveRunner) -> tuple[str, str, dict[str, Any]]:
    """The scrape and /status over HTTP while no bar or broker report is being booked: the same moment."""
    async with runner._books:
        status, content_type, text = await _get(runner, "/metrics")
        assert status == 200, text
        _, _, doc = await _get(runner, "/status")
    return content_type, text, json.loads(doc)


async def test_a_live_scrape_agrees_with_the_daemon_status(tmp_path: Path) -> None:
    async with _running(tmp_path) as runner:
        content_type, text, status = await _scrape_with_status(runner)
        daemon = runner.daemon
        samples = _samples(text)

    assert content_type.startswith("text/plain; version=0.0.4")
    counts = status["counts"]
    assert counts["bars"] > 0 and counts["orders"] > 0 and counts["fills"] >= 2
    assert _value(samples, "tradectl_bars_processed_total") == counts["bars"]
    assert _by(samples, "tradectl_bars_rejected_total", "reason") == status["rejected_by_reason"]
    assert sum(_by(samples, "tradectl_decisions_total", "action").values()) == counts["decisions"]
    assert _value(samples, "tradectl_orders_sent_total") == counts["orders"]
    assert _value(samples, "tradectl_orders_total", status="new") == counts["orders"]
    assert _value(samples, "tradectl_orders_total", status="filled") == counts["fills"]  # the sim fills in one piece
    assert _value(samples, "tradectl_fills_total") == counts["fills"]
    assert _value(samples, "tradectl_trades_closed_total") == counts["trades"]
    assert _by(samples, "tradectl_trading_state", "state") == {"active": 1, "reducing": 0, "halted": 0, "paused": 0}
    assert _value(samples, "tradectl_equity") == pytest.approx(status["equity"], abs=0.005)
    assert _value(samples, "tradectl_pnl_today") == pytest.approx(status["pnl_today"], abs=0.005)
    positions = {row["symbol"]: float(Decimal(row["quantity"])) for row in status["positions"]}
    assert _by(samples, "tradectl_position", "symbol") == positions
    # every accepted bar was one policy step; every strategy order one bar -> order latency
    accepted = counts["bars"] - counts["rejected_bars"]
    assert _value(samples, "tradectl_policy_step_seconds_count") == accepted
    assert _value(samples, "tradectl_bar_to_order_seconds_count") == counts["orders"]
    assert 0 < _value(samples, "tradectl_bar_to_order_seconds_sum") < counts["orders"]  # seconds, not ms
    assert _value(samples, "tradectl_broker_connected") == 1
    assert _value(samples, "tradectl_broker_reconnects_total") == 0
    assert _value(samples, "tradectl_alert_outbox_messages") == 0
    assert _value(samples, "tradectl_event_loop_lag_seconds", stat="max") == pytest.approx(
        status["loop_lag_ms"]["max"] / 1000, abs=0.05)
    assert daemon.pipeline.observe_policy is not None


async def test_a_state_change_and_the_alert_outbox_show_up_in_the_next_scrape(tmp_path: Path) -> None:
    async with _running(tmp_path) as runner:
        assert runner.metrics is not None
        runner.metrics.outbox_depth = lambda: 3
        status, _, body = await _get(runner, "/pause", method="POST")
        assert status == 200, body
        _, text, doc = await _scrape_with_status(runner)
        assert doc["state"] == "paused"
        samples = _samples(text)
        assert _by(samples, "tradectl_trading_state", "state") == {"active": 0, "reducing": 0, "halted": 0, "paused": 1}
        assert _value(samples, "tradectl_alert_outbox_messages") == 3
        await _get(runner, "/resume", method="POST")
        _, text, _ = await _scrape_with_status(runner)
        assert _value(_samples(text), "tradectl_trading_state", state="active") == 1


async def test_promtool_check_metrics_is_clean_on_a_live_scrape(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian package `prometheus`; .ci/run installs it)")
    async with _running(tmp_path) as runner:
        _, _, text = await _get(runner, "/metrics")
    assert "tradectl_bar_to_order_seconds_bucket" in text and "tradectl_trading_state{" in text
    result = await asyncio.to_thread(
        subprocess.run, [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0 and not result.stdout.strip() and not result.stderr.strip(), (
        result.stdout + result.stderr
    )
