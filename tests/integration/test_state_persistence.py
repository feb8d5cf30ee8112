"""PAUSED and HALTED survive a restart; only an explicit resume lifts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.runners import LiveRunner
from risk.governor import TradingState


def _config(tmp_path: Path) -> TradectlConfig:
    return TradectlConfig(
        api={"enabled": False},
        strategy={"kind": "sma_cross"},
        store={"path": str(tmp_path / "state.db")},
        data={"pace": 0},
    )


async def _start(config: TradectlConfig) -> LiveRunner:
    return await LiveRunner.open(config)


@pytest.mark.parametrize("stop_state", [TradingState.PAUSED, TradingState.HALTED])
async def test_stop_states_survive_restarts_until_resumed(tmp_path: Path, stop_state: TradingState) -> None:
    config = _config(tmp_path)
    first = await _start(config)
    if stop_state is TradingState.PAUSED:
        assert (await first.daemon.pause())["state"] == "paused"
    else:
        first.daemon.governor.transition(TradingState.HALTED, "test:halt")
    first.daemon.request_stop()  # stop before the first bar
    await first.run(install_signals=False)

    second = await _start(config)
    assert second.daemon.governor.state is stop_state
    second.daemon.request_stop()
    await second.run(install_signals=False)

    third = await _start(config)
    assert third.daemon.governor.state is stop_state, "a restart alone must not lift the stop"
    assert (await third.daemon.resume())["state"] == "active"
    third.daemon.request_stop()
    await third.run(install_signals=False)

    fourth = await _start(config)
    assert fourth.daemon.governor.state is TradingState.ACTIVE
    fourth.daemon.request_stop()
    await fourth.run(install_signals=False)


async def test_a_second_run_on_the_same_database_books_its_own_fills(tmp_path: Path) -> None:
    """Regression: a fresh simulated account per run restarted its order ids at 1, the store took the
    second run's fills for duplicates of the first run's, and reconciliation halted trading."""
    config = _config(tmp_path)
    for run in (1, 2):
        daemon = await LiveRunner.open(config, bars=load_bundled()[:1500])  # a few hundred bars are enough to trade
        await daemon.run(install_signals=False)
        counts = daemon.daemon.pipeline.counts
        assert counts.fills >= 10, f"run {run} booked {counts.fills} fills"
        assert daemon.daemon.orders.counts["duplicate_fills"] == 0
        assert daemon.daemon.governor.state is TradingState.ACTIVE, f"run {run} ended {daemon.daemon.governor.state}"
