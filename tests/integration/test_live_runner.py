"""The live runner books what the broker streams between bars, and stops promptly on request."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from brokers.base import Side
from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.runners import LiveRunner
from tests.waiting import until


def _config(tmp_path: Path) -> TradectlConfig:
    return TradectlConfig(
        api={"enabled": False},
        strategy={"kind": "sma_cross"},
        store={"path": str(tmp_path / "live.db")},
        data={"pace": 4},  # a bar every 250 ms: room for a report to arrive and be booked between two bars
    )


async def test_an_update_streamed_between_bars_is_booked_before_the_next_bar(tmp_path: Path) -> None:
    runner = await LiveRunner.open(_config(tmp_path), bars=load_bundled()[:200])
    daemon = runner.daemon
    trading = asyncio.create_task(runner.run(install_signals=False))
    try:
        await until(lambda: daemon.pipeline.counts.bars >= 3, seconds=20)
        # someone else trades the account and the venue streams the report (the sim's stand-in for a
        # live stream): the daemon must see it now, not when the next bar comes
        daemon.broker.external_trade("EURUSD", Side.BUY, Decimal(1000), notify=True)  # type: ignore[attr-defined]
        bars_then = daemon.pipeline.counts.bars
        await until(lambda: daemon.orders.counts["unknown_updates"] > 0, seconds=0.2)
        assert daemon.pipeline.counts.bars == bars_then, "booked by the update task, not by the next bar"
        assert daemon.orders.rejections["unknown_order"] == 1
    finally:
        daemon.request_stop()
        summary = await asyncio.wait_for(trading, 10)
    assert summary.bars < 200, "stopped on request, not at the end of the data"


async def test_the_daemon_publishes_start_state_changes_and_stop(tmp_path: Path) -> None:
    runner = await LiveRunner.open(_config(tmp_path), bars=load_bundled()[:50])
    daemon = runner.daemon
    seen: list[str] = []
    daemon.events.subscribe(lambda event: seen.append(event.kind))
    trading = asyncio.create_task(runner.run(install_signals=False))
    await until(lambda: "start" in seen, seconds=10)
    await daemon.pause()
    daemon.request_stop()
    await asyncio.wait_for(trading, 10)
    assert seen[0] == "start" and seen[-1] == "stop"
    assert "state" in seen
