"""A running LiveRunner follows promotions and rollbacks without a restart and without an order in between;
a drifted model that fails a day gate is rolled back by itself.

The second model is the bundled one with its policy parameters moved by a known relative amount
(``tests.model_copies.perturbed_copy``): a real model file the daemon loads, verifies and trades,
cheap to make, and with an exactly known drift.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from itertools import groupby
from pathlib import Path
from typing import Any

import pytest

from brokers.history import load_bundled
from daemon.cli import main
from daemon.config import TradectlConfig
from daemon.models import register_model
from daemon.promotion import promote
from daemon.runners import LiveRunner
from daemon.store import Store
from daemon.telegram.alerts import format_event
from strategies.drift import model_drift
from strategies.recurrent import default_model_path
from tests.model_copies import perturbed_copy
from tests.waiting import until

TOKEN = "hot-switch-token"


async def _registry(db: Path, *candidates: Path) -> tuple[str, list[str]]:
    """The bundled model registered as gold and (forced, nothing to compare it with) production; then the
    candidates registered. Returns the SHA-256s."""
    store = await Store.open(db)
    try:
        default = (await register_model(store, default_model_path(), gold=True))["sha256"]
        shas = [(await register_model(store, c))["sha256"] for c in candidates]
        await promote(store, default, drift_limit=0.15, force=True, reason="bootstrap: the bundled model")
    finally:
        await store.close()
    return default, shas


def _instrument(runner: LiveRunner) -> tuple[list[tuple[float, float]], list[float]]:
    """Record when each strategy swap held the bar path, and when each order went to the broker."""
    daemon = runner.daemon
    swaps: list[tuple[float, float]] = []
    submits: list[float] = []
    install, submit = daemon.install_strategy, daemon.broker.submit

    async def timed_install(strategy: Any, ts: int) -> None:
        started = time.monotonic()
        await install(strategy, ts)
        swaps.append((started, time.monotonic()))

    async def timed_submit(*args: Any, **kwargs: Any) -> Any:
        submits.append(time.monotonic())
        return await submit(*args, **kwargs)

    daemon.install_strategy = timed_install  # type: ignore[method-assign]
    daemon.broker.submit = timed_submit  # type: ignore[method-assign]
    return swaps, submits


def _decision_models(db: Path) -> tuple[list[int], list[str], set[int]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT ts, extras, run_id FROM decisions ORDER BY id").fetchall()
    return [r[0] for r in rows], [json.loads(r[1])["model_sha256"] for r in rows], {r[2] for r in rows}


def _cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


async def test_promote_and_roll_back_a_running_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TRADECTL_API__TOKEN", TOKEN)
    db = tmp_path / "live.db"
    default, (candidate,) = await _registry(db, perturbed_copy(tmp_path / "candidate.zip", 0.05, seed=1))
    # polling far slower than the test: the switches below come from the CLI's POST /models/promote
    config = TradectlConfig(api={"port": 0}, data={"pace": 150}, promotion={"poll_seconds": 60})
    runner = await LiveRunner.open(config, db_path=db, bars=load_bundled()[:1400])
    daemon = runner.daemon
    swaps, submits = _instrument(runner)
    kinds: list[str] = []
    daemon.events.subscribe(lambda e: kinds.append(e.kind))
    trading = asyncio.create_task(runner.run(install_signals=False))
    try:
        await until(lambda: daemon.pipeline.counts.decisions >= 100, 30, "the bundled model deciding")
        assert runner.api is not None
        port = str(runner.api.port)
        common = ["--db", str(db), "--port", port]

        code, out = await asyncio.to_thread(
            _cli, capsys, ["models", "promote", candidate[:12], *common, "--force", "--reason", "hot switch test"]
        )
        assert code == 0 and "daemon: now trading" in out, out
        assert daemon.strategy.model_sha256 == candidate, "switched when the command returned"
        decided = daemon.pipeline.counts.decisions
        await until(lambda: daemon.pipeline.counts.decisions >= decided + 150, 30, "the candidate deciding")

        started = time.monotonic()
        code, out = await asyncio.to_thread(_cli, capsys, ["models", "rollback", *common, "--json"])
        elapsed = time.monotonic() - started
        doc = json.loads(out[out.index("{\n"):])  # the daemon logs to the same captured stdout
        assert code == 0 and daemon.strategy.model_sha256 == default
        assert doc["daemon"]["switched"] and doc["promotion"]["action"] == "rollback"
        assert doc["daemon"]["seconds"] < 1.0, "the daemon's switch back"
        assert elapsed < 1.0, f"rollback command to switched daemon took {elapsed:.3f} s"
        decided = daemon.pipeline.counts.decisions
        await until(lambda: daemon.pipeline.counts.decisions >= decided + 100, 30, "the bundled model again")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 30)

    ts, models, runs = _decision_models(db)
    assert len(runs) == 1, "one run: no restart"
    assert ts == sorted(ts) and len(set(ts)) == len(ts), "every bar decided once, in order"
    assert [m for m, _ in groupby(models)] == [default, candidate, default]
    assert len(swaps) == 2 and submits, "orders went out while trading"
    assert not [t for t in submits for a, b in swaps if a <= t <= b], "no order while a switch held the bar path"
    assert {"model_switch", "model_rollback"} <= set(kinds)
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT action, sha256, previous_sha256, forced FROM model_promotions ORDER BY id")
        changes = rows.fetchall()
    assert changes == [
        ("promote", default, None, 1), ("promote", candidate, default, 1), ("rollback", default, candidate, 0),
    ]


async def test_drift_beyond_the_limit_and_a_failed_day_gate_roll_back_by_themselves(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    near = perturbed_copy(tmp_path / "near.zip", 0.05, seed=2)
    far = perturbed_copy(tmp_path / "far.zip", 0.30, seed=3)
    _default, (near_sha, far_sha) = await _registry(db, near, far)
    config = TradectlConfig(
        api={"enabled": False}, data={"pace": 200},
        # a day fails when any action takes more than 26% of its decisions: every model fails it daily
        validation={"max_action_share": 0.26},
        promotion={"poll_seconds": 0.02, "shadow_gates": ["action_share"], "drift_limit": 0.15},
    )
    runner = await LiveRunner.open(config, db_path=db, bars=load_bundled()[:1400])
    daemon = runner.daemon
    kinds: list[str] = []
    alerts: list[str | None] = []
    daemon.events.subscribe(lambda e: kinds.append(e.kind))
    daemon.events.subscribe(lambda e: alerts.append(format_event(e)) if e.kind.startswith("model_") else None)
    trading = asyncio.create_task(runner.run(install_signals=False))
    try:
        await until(lambda: daemon.pipeline.counts.decisions >= 24, 30, "deciding")
        async with _store(db) as store:
            await promote(store, near_sha, drift_limit=0.15, force=True, reason="small drift")
        await until(lambda: daemon.strategy.model_sha256 == near_sha, 5, "the near model switched in by polling")
        decided = daemon.pipeline.counts.decisions
        await until(lambda: daemon.pipeline.counts.decisions >= decided + 72, 30, "three days of the near model")
        assert daemon.strategy.model_sha256 == near_sha, "failed days alone do not roll a model back"

        async with _store(db) as store:
            await promote(store, far_sha, drift_limit=0.15, force=True, reason="large drift")
        await until(lambda: daemon.strategy.model_sha256 == far_sha, 5, "the far model switched in")
        # the switch is visible before its alert is published: wait for both, or a stop in between drops it
        await until(lambda: daemon.strategy.model_sha256 == near_sha and "model_rollback" in kinds, 20,
                    "rolled back by itself, and said so")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 30)

    assert kinds.count("model_drift") == 1 and "model_rollback" in kinds
    assert any(a and a.startswith("📐 parameter drift: ") and "(limit 15%)" in a for a in alerts), alerts
    assert any(a and a.startswith("↩️ model rollback: ") and "auto_rollback" in a for a in alerts), alerts
    with sqlite3.connect(db) as conn:
        drift = conn.execute(
            "SELECT old_value, new_value, relative_l2, drift_limit FROM parameter_drift_log"
        ).fetchall()
        last = conn.execute(
            "SELECT action, sha256, previous_sha256, who, reason FROM model_promotions ORDER BY id DESC LIMIT 1"
        ).fetchone()
        production = conn.execute("SELECT sha256 FROM model_registry WHERE is_production = 1").fetchall()
    assert [(o, n) for o, n, _, _ in drift] == [(near_sha, far_sha)], "only the drift beyond the limit is logged"
    assert drift[0][2] == pytest.approx(model_drift(far, near)) and drift[0][2] > 0.15 and drift[0][3] == 0.15
    assert last[:4] == ("auto_rollback", near_sha, far_sha, "tradectl daemon")
    assert "parameter drift" in last[4] and "action_share" in last[4]
    assert production == [(near_sha,)]


class _store:
    """A second connection to the daemon's registry, as another process (the CLI) would have."""

    def __init__(self, db: Path) -> None:
        self.db = db

    async def __aenter__(self) -> Store:
        self.store = await Store.open(self.db)
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.store.close()
