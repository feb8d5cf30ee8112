"""PAUSED and HALTED survive a restart; only an explicit resume lifts them."""

from __future__ import annotations

from pathlib import Path

import pytest

from daemon.app import Daemon
from daemon.config import TradectlConfig
from risk.governor import TradingState


def _config(tmp_path: Path) -> TradectlConfig:
    return TradectlConfig(
        api={"enabled": False},
        strategy={"kind": "sma_cross"},
        store={"path": str(tmp_path / "state.db")},
        data={"pace": 0},
    )


async def _start(config: TradectlConfig) -> Daemon:
    return await Daemon.assemble(config, mode="run")


@pytest.mark.parametrize("stop_state", [TradingState.PAUSED, TradingState.HALTED])
async def test_stop_states_survive_restarts_until_resumed(tmp_path: Path, stop_state: TradingState) -> None:
    config = _config(tmp_path)
    first = await _start(config)
    if stop_state is TradingState.PAUSED:
        assert (await first.pause())["state"] == "paused"
    else:
        first.governor.transition(TradingState.HALTED, "test:halt")
    first.request_stop()  # stop before the first bar
    await first.run(install_signals=False)

    second = await _start(config)
    assert second.governor.state is stop_state
    second.request_stop()
    await second.run(install_signals=False)

    third = await _start(config)
    assert third.governor.state is stop_state, "a restart alone must not lift the stop"
    assert (await third.resume())["state"] == "active"
    third.request_stop()
    await third.run(install_signals=False)

    fourth = await _start(config)
    assert fourth.governor.state is TradingState.ACTIVE
    fourth.request_stop()
    await fourth.run(install_signals=False)
