"""Training/live parity: the daemon's observations equal TradingEnv's on the same bars and fills.

The live side is the real daemon (``Daemon.assemble``, sim broker, portfolio,
sizing, governor) running the recurrent strategy in a backtest. Sizing is
fixed at the environment's ``trade_units`` and the optional risk layers are
off, so every decision becomes exactly the order the environment would
execute for the same action. The environment is then stepped with the
actions the live pipeline decided; at every bar its observation (float64,
from its own FeatureProcessor) and its position must equal the live ones.

Two action sources: the shipped model's own decisions, and a script over the
same strategy that opens, flips and closes positions on fixed bars, so the
position features are exercised whatever the model prefers to do.
"""

from __future__ import annotations

import csv
import dataclasses
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from brokers.base import Bar, utc_datetime
from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.runners import BacktestRunner
from strategies.base import Action, Decision, PositionView
from strategies.recurrent import RecurrentStrategy
from strategies.training.env import TradingEnv

BARS = 1500
UNITS = 10_000
_OPTIONAL_LAYERS = (
    "window", "drip", "stale_data", "confidence", "cooldown", "trade_count", "submit_rate", "position",
    "gross_exposure", "fat_finger", "daily_loss", "drawdown", "volatility", "loss_streak",
)  # fmt: skip


def write_bars(path: Path, bars: Sequence[Bar]) -> Path:
    """A bar file the daemon loads back to the very same floats (repr round-trips)."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["ts", "open", "high", "low", "close", "volume"])
        for b in bars:
            stamp = utc_datetime(b.ts).strftime("%Y-%m-%dT%H:%M:%SZ")
            out.writerow([stamp, repr(b.open), repr(b.high), repr(b.low), repr(b.close), repr(b.volume)])
    return path


def parity_config() -> TradectlConfig:
    return TradectlConfig(
        strategy={"kind": "recurrent"},
        sizing={"method": "fixed", "fixed": {"units": str(UNITS)}},
        risk={name: {"enabled": False} for name in _OPTIONAL_LAYERS},
    )


class _Recording(RecurrentStrategy):
    """The real strategy, also keeping the position view it was given for every bar."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.trace = []
        self.views: dict[int, PositionView] = {}

    def decide(self, bars: Sequence[Bar], positions: Sequence[PositionView]) -> list[Decision]:
        for bar, position in zip(bars, positions, strict=True):
            self.views[bar.ts] = position
        return super().decide(bars, positions)


class _Scripted(_Recording):
    """Observations and probabilities from the model; actions from a script keyed by bar time."""

    script: dict[int, Action] = {}

    def _decision(self, bar: Bar, obs: np.ndarray, probs: np.ndarray) -> Decision:
        decision = super()._decision(bar, obs, probs)
        return dataclasses.replace(decision, action=self.script.get(bar.ts, Action.HOLD))


def _script(bars: Sequence[Bar]) -> dict[int, Action]:
    plan = {
        250: Action.BUY, 330: Action.SELL, 331: Action.SELL, 420: Action.CLOSE, 500: Action.SELL,
        610: Action.BUY, 700: Action.CLOSE, 701: Action.CLOSE, 800: Action.BUY, 950: Action.CLOSE,
        1000: Action.SELL, 1200: Action.CLOSE, 1300: Action.BUY,
    }  # fmt: skip
    return {bars[i].ts: action for i, action in plan.items()}


async def _live(tmp_path: Path, bars: list[Bar], scripted: bool) -> tuple[_Recording, dict[int, str], list[tuple]]:
    data = write_bars(tmp_path / "bars.csv", bars)
    daemon = await BacktestRunner.open(parity_config(), data=data, db_path=tmp_path / "live.db")
    built = daemon.daemon.strategy
    assert isinstance(built, RecurrentStrategy)
    cls = _Scripted if scripted else _Recording
    strategy = cls(built.model_path, max_gap_seconds=built.max_gap_seconds)
    if scripted:
        strategy.script = _script(bars)
    daemon.daemon.strategy = daemon.daemon.pipeline.strategy = strategy
    await daemon.run(install_signals=False)
    with sqlite3.connect(tmp_path / "live.db") as conn:
        actions = dict(conn.execute("SELECT ts, action FROM decisions ORDER BY id").fetchall())
        fills = conn.execute("SELECT ts, side, quantity, price, fee FROM fills ORDER BY ts").fetchall()
    return strategy, actions, fills


@pytest.mark.parametrize("scripted", [False, True], ids=["model-actions", "scripted-actions"])
async def test_live_observations_equal_training_observations(tmp_path: Path, scripted: bool) -> None:
    bars = load_bundled()[:BARS]
    live, actions, live_fills = await _live(tmp_path, bars, scripted)
    observed = {ts: obs for _, ts, obs, _ in live.trace or []}

    starting_cash = parity_config().broker.sim.starting_cash
    env = TradingEnv(
        bars,
        cost_model=parity_config().broker.sim.costs.model(),
        episode_bars=len(bars) - live.warmup_bars,
        trade_units=UNITS,
        initial_equity=starting_cash,
    )
    obs32, info = env.reset(options={"start": 0})
    env_fills = []
    worst = 0.0
    steps = 0
    held = 0
    while True:
        ts = info["ts"]
        env_obs = env.features.observation(env.symbol, info["position_view"])
        worst = max(worst, float(np.abs(env_obs - observed[ts]).max()))
        assert np.array_equal(obs32, observed[ts].astype(np.float32)), f"float32 observation differs at {ts}"
        assert info["position_view"] == live.views[ts], f"position differs at {ts}"
        held += info["position"] != 0
        obs32, _, terminated, truncated, info = env.step(int(Action[actions[ts]]))
        steps += 1
        if info["fill_price"] is not None:
            env_fills.append((info["ts"], info["fill_price"]))
        if terminated or truncated:
            break
    # The last bar's observation too (its action is never executed).
    ts = info["ts"]
    assert np.array_equal(env.features.observation(env.symbol, info["position_view"]), observed[ts])

    assert steps == len(bars) - live.warmup_bars
    assert worst <= 1e-9, f"max |obs_live - obs_env| = {worst:.3g}"
    assert worst == 0.0  # one code path: not merely close, identical
    assert [(ts, float(Decimal(price))) for ts, _, _, price, _ in live_fills] == env_fills
    if scripted:
        assert len(env_fills) == 11  # opens, flips and closes, each at the next bar's open
        assert held > 600
    assert env.features.feature_hash == live.feature_hash
