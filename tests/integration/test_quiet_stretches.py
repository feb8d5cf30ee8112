"""The backtester's quiet stretches (``TradingPipeline.run_quiet``) change nothing but the speed.

Each scenario runs the same backtest twice, once with every bar through
``on_bar`` and once with stretches, and compares every stored row.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from daemon.app import Daemon
from daemon.config import TradectlConfig

_TABLES = {
    "orders": "client_order_id",
    "order_events": "id",
    "fills": "fill_id",
    "trades": "id",
    "decisions": "id",
    "equity_snapshots": "rowid",
    "risk_events": "id",
    "bar_rejections": "id",
    "state": "key",
}
_TIMING = ("elapsed_seconds", "bars_per_second")


async def _run(tmp_path: Path, name: str, doc: dict[str, Any], data: Path | None, stretches: bool) -> Daemon:
    config = TradectlConfig(**{"api": {"enabled": False}, **doc})  # type: ignore[arg-type]
    daemon = await Daemon.assemble(config, mode="backtest", db_path=tmp_path / name, data=data)
    daemon.quiet_stretches = stretches
    summary = await daemon.run(install_signals=False)
    daemon.summary = {k: v for k, v in summary.as_dict().items() if k not in _TIMING}  # type: ignore[attr-defined]
    return daemon


def _dump(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        return {table: conn.execute(f"SELECT * FROM {table} ORDER BY {key}").fetchall()
                for table, key in _TABLES.items()}


def _bars_with_trouble(path: Path) -> Path:
    """Hourly bars with a swing every 10 bars, bad bars in the middle and a gap (a new episode)."""
    rows = ["ts,open,high,low,close,volume"]
    price = 1.1
    for i in range(400):
        hour = i + (200 if i >= 250 else 0)  # a 200-hour gap after bar 250
        price += 0.0004 if (i // 10) % 2 == 0 else -0.0004
        ts = 1_704_067_200 + 3600 * hour
        rows.append(f"{ts},{price:.5f},{price + 0.0005:.5f},{price - 0.0005:.5f},{price:.5f},100")
        if i in (60, 61, 170):
            rows.append(f"{ts + 1800},nan,1.2,1.0,1.1,10")
        if i == 120:
            rows.append(f"{ts - 7200},{price:.5f},{price:.5f},{price:.5f},{price:.5f},10")  # out of order
    path.write_text("\n".join(rows) + "\n")
    return path


SCENARIOS = {
    "bundled-year": ({"strategy": {"kind": "sma_cross"}}, None),
    "bundled-year-tight-risk": (
        {
            "strategy": {"kind": "sma_cross", "sma_cross": {"fast": 5, "slow": 20}},
            # the drawdown tiers and the daily limit fire inside stretches: warnings, halve, REDUCING, HALTED
            "risk": {"drawdown": {"warn": 0.001, "halve": 0.002, "reducing": 0.003, "halt": 0.01},
                     "daily_loss": {"limit": 0.004}},
        },
        None,
    ),
    "bad-bars-and-gap": ({"strategy": {"kind": "sma_cross", "sma_cross": {"fast": 3, "slow": 8}},
                          "data": {"symbol": "TEST"}}, "csv"),
    "long-only": ({"strategy": {"kind": "sma_cross", "sma_cross": {"allow_short": False}}}, None),
}


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
async def test_stretches_store_exactly_what_every_bar_through_on_bar_stores(tmp_path: Path, scenario: str) -> None:
    doc, data = SCENARIOS[scenario]
    path = _bars_with_trouble(tmp_path / "bars.csv") if data == "csv" else None
    slow = await _run(tmp_path, "slow.db", doc, path, stretches=False)
    fast = await _run(tmp_path, "fast.db", doc, path, stretches=True)
    assert slow.pipeline.quiet_bars == 0
    assert fast.pipeline.quiet_bars > fast.pipeline.counts.bars // 2, "the stretches should carry most bars"
    assert fast.summary == slow.summary  # type: ignore[attr-defined]
    assert fast.pipeline.status() == slow.pipeline.status()
    slow_rows, fast_rows = _dump(tmp_path / "slow.db"), _dump(tmp_path / "fast.db")
    assert slow_rows["orders"], "the scenario should trade"
    for table in _TABLES:
        assert fast_rows[table] == slow_rows[table], table
    if scenario == "bundled-year-tight-risk":
        assert {r[4] for r in slow_rows["risk_events"]} >= {"drawdown"}
    if scenario == "bad-bars-and-gap":
        assert len(slow_rows["bar_rejections"]) == 5
