"""The live recurrent strategy: refusals, sb3 parity, decisions, episode starts, state export/restore.

Bars are the bundled EUR/USD hours. Several "symbols" are the same real
series taken from different offsets, so streams see different sequences.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO

from brokers.base import Bar
from brokers.errors import ModelError
from brokers.history import load_bundled
from daemon.config import TradectlConfig
from strategies.base import ACTION_MAP, FLAT, Action, Decision, PositionView
from strategies.features import FeatureConfig, feature_hash
from strategies.model_file import load_model, meta_path, read_metadata, save_model
from strategies.recurrent import (
    RecurrentStrategy,
    default_model_path,
    replay_period,
    restore_from_store,
    save_to_store,
)
from strategies.training.env import TradingEnv

TOL = 1e-5


@pytest.fixture(scope="module")
def bars() -> list[Bar]:
    return load_bundled()


@pytest.fixture(scope="module")
def sb3_model() -> RecurrentPPO:
    path = default_model_path()
    meta = read_metadata(path)
    model, _ = load_model(
        path, expected_obs_dim=meta["obs_dim"], expected_action_map=ACTION_MAP, expected_feature_hash=feature_hash()
    )
    model.policy.set_training_mode(False)
    return model


def _strategy(**kwargs: Any) -> RecurrentStrategy:
    return RecurrentStrategy(default_model_path(), **kwargs)


def _as(symbol: str, bar: Bar) -> Bar:
    return Bar(symbol, bar.ts, bar.open, bar.high, bar.low, bar.close, bar.volume)


def _feed(strategy: RecurrentStrategy, bars: Sequence[Bar], position: PositionView = FLAT) -> list[Decision]:
    out: list[Decision] = []
    for bar in bars:
        out += strategy.decide((bar,), (position,))
    return out


# ---------------------------------------------------------------------- refusals
class _Spaces:
    """An untrained model file with chosen spaces, saved with metadata we choose."""

    @staticmethod
    def save(path: Path, *, obs_dim: int = 22, n_actions: int = 4, **meta: Any) -> Path:
        import gymnasium as gym
        from gymnasium import spaces

        class Env(gym.Env):
            observation_space = spaces.Box(-1.0, 1.0, (obs_dim,), np.float32)
            action_space = spaces.Discrete(n_actions)

            def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
                return np.zeros(obs_dim, np.float32), {}

            def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
                return np.zeros(obs_dim, np.float32), 0.0, False, False, {}

        model = RecurrentPPO(
            "MlpLstmPolicy", Env(), n_steps=8, batch_size=8, policy_kwargs={"lstm_hidden_size": 8}, device="cpu"
        )
        metadata = {"feature_hash": feature_hash(), "action_map": list(ACTION_MAP), **meta}
        save_model(model, path, metadata)
        return path


def test_refuses_a_model_with_another_action_count(tmp_path: Path) -> None:
    path = _Spaces.save(tmp_path / "m.zip", n_actions=5, action_map=[*ACTION_MAP, "REVERSE"])
    with pytest.raises(ModelError, match=r"action map: model \(HOLD, BUY, SELL, CLOSE, REVERSE\)"):
        RecurrentStrategy(path)


def test_refuses_a_model_trained_on_another_feature_schema(tmp_path: Path) -> None:
    other = FeatureConfig(return_windows=(1, 4, 48))
    path = _Spaces.save(tmp_path / "m.zip", feature_hash=other.hash())
    with pytest.raises(ModelError, match=f"feature hash: model {other.hash()}, running configuration {feature_hash()}"):
        RecurrentStrategy(path)


def test_refuses_a_model_with_another_observation_size(tmp_path: Path) -> None:
    path = _Spaces.save(tmp_path / "m.zip", obs_dim=21)
    with pytest.raises(ModelError, match="observation size: model 21, running configuration 22"):
        RecurrentStrategy(path)


def test_refuses_features_this_code_computes_differently(tmp_path: Path) -> None:
    """The recorded feature_config is rebuilt by this code and hashed: a record that does not hash
    to the model's feature hash (a changed definition, a newer schema) is refused."""
    recorded = asdict(FeatureConfig(sma_windows=(12, 96)))
    path = _Spaces.save(tmp_path / "m.zip", feature_config=recorded)
    with pytest.raises(ModelError, match=r"feature hash: .*\(no setting differs: .* computes those features"):
        RecurrentStrategy(path)


def test_refuses_a_tampered_model_file(tmp_path: Path) -> None:
    path = _Spaces.save(tmp_path / "m.zip")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match=r"SHA-256 of m\.zip does not match its metadata"):
        RecurrentStrategy(path)


def test_missing_model_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="does not exist"):
        RecurrentStrategy(tmp_path / "nope.zip")


def test_cli_refuses_to_trade_with_a_mismatched_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from daemon.cli import main

    model = _Spaces.save(tmp_path / "m.zip", n_actions=5, action_map=[*ACTION_MAP, "REVERSE"])
    config = tmp_path / "c.yaml"
    config.write_text(f"strategy:\n  kind: recurrent\n  recurrent:\n    model: {model}\n")
    db = tmp_path / "bt.db"
    assert main(["backtest", "--config", str(config), "--db", str(db), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "tradectl backtest: model" in err and "action map" in err and "Traceback" not in err
    if db.exists():
        import sqlite3

        with sqlite3.connect(db) as conn:
            assert conn.execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 0


# ---------------------------------------------------------------------- the shipped model
def test_default_model_ships_with_complete_metadata() -> None:
    path = default_model_path()
    assert path.is_file() and meta_path(path).is_file()
    assert path.stat().st_size < 600_000
    meta = read_metadata(path)
    assert meta["feature_hash"] == feature_hash()
    assert meta["action_map"] == ACTION_MAP
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    for key in ("data_file_sha256", "data_start", "data_end", "config", "seed", "training_metrics", "feature_names"):
        assert meta.get(key) is not None, key
    assert meta["training_metrics"]["eval"]["bars"] > 1000


def test_from_config_uses_the_bundled_model_and_describes_it() -> None:
    config = TradectlConfig(strategy={"kind": "recurrent"})
    strategy = RecurrentStrategy.from_config(config.strategy.recurrent, config)
    described = strategy.describe()
    meta = read_metadata(default_model_path())
    assert described["name"] == "recurrent"
    assert described["model"] == str(default_model_path())
    assert described["model_sha256"] == meta["sha256"]
    assert described["feature_hash"] == feature_hash()
    assert described["trained_on"] == f"{meta['train_start']} .. {meta['train_end']}"
    assert strategy.max_gap_seconds == config.guard.max_gap_seconds


# ---------------------------------------------------------------------- decisions
def test_no_decision_during_warm_up_then_one_per_bar(bars: list[Bar]) -> None:
    strategy = _strategy()
    warm = strategy.warmup_bars
    assert _feed(strategy, bars[: warm - 1]) == []
    assert len(_feed(strategy, bars[warm - 1 : warm + 9])) == 10


def test_decision_carries_probabilities_confidence_and_extras(bars: list[Bar]) -> None:
    strategy = _strategy()
    decisions = _feed(strategy, bars[:400])
    d = decisions[-1]
    probs = d.probabilities
    assert probs is not None and len(probs) == len(ACTION_MAP)
    assert sum(probs) == pytest.approx(1.0, abs=1e-6)
    assert d.action is Action(int(np.argmax(probs)))
    assert d.confidence == max(probs)
    obs = strategy.last_observation["EURUSD"]
    assert d.extras["obs_hash"] == hashlib.blake2b(obs.tobytes(), digest_size=8).hexdigest()
    assert d.extras["model_sha256"] == strategy.model_sha256
    assert d.extras["regime_score"] == strategy.features.regime("EURUSD").score
    # ATR in price units for the sizer: the mean true range of the last 14 bars.
    window = bars[386:400]
    prev = [b.close for b in bars[385:399]]
    ranges = [max(b.high - b.low, abs(b.high - p), abs(b.low - p)) for b, p in zip(window, prev, strict=True)]
    assert d.extras["atr"] == pytest.approx(sum(ranges) / 14, rel=1e-9)
    json.dumps(d.extras)  # the pipeline stores it as JSON


def test_reset_restarts_warm_up_and_the_lstm(bars: list[Bar]) -> None:
    strategy = _strategy()
    warm = strategy.warmup_bars
    _feed(strategy, bars[:300])
    strategy.reset("EURUSD")
    assert _feed(strategy, bars[300 : 300 + warm - 1]) == []
    after_reset = _feed(strategy, bars[300 + warm - 1 : 300 + warm + 20])
    fresh = _strategy()
    assert _feed(fresh, bars[300 : 300 + warm - 1]) == []
    assert after_reset == _feed(fresh, bars[300 + warm - 1 : 300 + warm + 20])


def _streams(bars: list[Bar], n: int, offset: int) -> list[list[Bar]]:
    length = len(bars) - offset * (n - 1)
    return [[_as(f"S{k}", b) for b in bars[k * offset : k * offset + length]] for k in range(n)]


def test_probabilities_equal_sb3_across_streams_with_resets(bars: list[Bar], sb3_model: RecurrentPPO) -> None:
    """Three symbols decide together on every step; S1 restarts its episode midway. The strategy's
    probabilities equal sb3's get_distribution fed the same observations, states and episode starts."""
    strategy = _strategy()
    strategy.trace = []
    series = _streams(bars[:1600], 3, 200)
    steps = len(series[0])
    reset_at = 700
    for t in range(steps):
        if t == reset_at:
            strategy.reset("S1")
        strategy.decide([s[t] for s in series], [FLAT] * 3)

    policy = sb3_model.policy
    layers, _, hidden = policy.lstm_hidden_state_shape
    state = {f"S{k}": (th.zeros(layers, 1, hidden), th.zeros(layers, 1, hidden)) for k in range(3)}
    first = {f"S{k}" for k in range(3)}
    restart_ts = series[1][reset_at + strategy.warmup_bars - 1].ts
    worst = 0.0
    checked = 0
    for symbol, ts, obs, probs in strategy.trace:
        start = symbol in first or (symbol == "S1" and ts == restart_ts)
        first.discard(symbol)
        with th.no_grad():
            dist, state[symbol] = policy.get_distribution(
                th.as_tensor(obs[None, :], dtype=th.float32), state[symbol], th.tensor([float(start)])
            )
        worst = max(worst, float(np.abs(dist.distribution.probs.numpy()[0] - probs).max()))
        checked += 1
    assert checked > 2500
    assert worst <= TOL, f"max |p - p_sb3| = {worst:.3g}"


def test_batched_decisions_equal_one_symbol_at_a_time(bars: list[Bar]) -> None:
    series = _streams(bars[:900], 2, 100)
    together = _strategy()
    alone = [_strategy(), _strategy()]
    for t in range(len(series[0])):
        batch = together.decide([s[t] for s in series], [FLAT, FLAT])
        single = [d for k in range(2) for d in alone[k].decide((series[k][t],), (FLAT,))]
        assert [d.action for d in batch] == [d.action for d in single]
        for a, b in zip(batch, single, strict=True):
            assert np.allclose(a.probabilities, b.probabilities, atol=1e-6)


# ---------------------------------------------------------------------- state export / restore
class _MemoryStore:
    """The two Store methods the glue uses, over a dict (the real Store is exercised by the
    integration restart test)."""

    def __init__(self) -> None:
        self.rows: dict[str, tuple[str, str, int, bytes]] = {}

    async def save_blob(self, symbol: str, model_sha256: str, ts: int, state: bytes) -> None:
        self.rows[symbol] = (symbol, model_sha256, ts, state)

    async def load_blobs(self) -> list[tuple[str, str, int, bytes]]:
        return list(self.rows.values())


class _History:
    """historical_bars over the bars a restarted daemon has already passed."""

    def __init__(self, bars: Sequence[Bar]) -> None:
        self.bars = list(bars)

    async def historical_bars(self, symbol: str, start_ts: int, end_ts: int) -> list[Bar]:
        return [b for b in self.bars if b.symbol == symbol and start_ts <= b.ts <= end_ts]


def _positions(n: int) -> Iterator[PositionView]:
    """A position that changes over time, so position features take part."""
    for i in range(n):
        side = (i // 90) % 3 - 1
        if side:
            yield PositionView(Decimal(10_000 * side), 1.1, i % 90, 0.0)
        else:
            yield FLAT


def _run(strategy: RecurrentStrategy, bars: Sequence[Bar], positions: Sequence[PositionView]) -> list[Decision]:
    out: list[Decision] = []
    for bar, position in zip(bars, positions, strict=True):
        out += strategy.decide((bar,), (position,))
    return out


@pytest.mark.parametrize("cut", [150, 1000, 2000])
async def test_restart_reproduces_the_uninterrupted_decisions_exactly(bars: list[Bar], cut: int) -> None:
    """Cut inside warm-up, after one replay period, and after two: decisions after the restart equal
    those of the uninterrupted run bit for bit (probabilities, observation hashes)."""
    data = bars[:2600]
    positions = list(_positions(len(data)))
    reference = _run(_strategy(), data, positions)

    before = _strategy()
    before.reset("EURUSD")
    _run(before, data[:cut], positions[:cut])
    store = _MemoryStore()
    assert await save_to_store(before, store) == 1

    after = _strategy()
    outcome = await restore_from_store(after, store, _History(data[:cut]), now_ts=data[cut].ts)
    assert outcome == {"EURUSD": "exact"}
    after.reset("EURUSD")  # a fresh bar guard calls the first bar an episode start
    resumed = _run(after, data[cut:], positions[cut:])
    expected = [d for d in reference if d.ts >= data[cut].ts]
    assert resumed == expected


async def test_restart_catches_up_on_bars_missed_while_down(bars: list[Bar]) -> None:
    data = bars[:1400]
    reference = _feed(_strategy(), data)
    before = _strategy()
    _feed(before, data[:1000])
    store = _MemoryStore()
    await save_to_store(before, store)
    after = _strategy()
    # Down for five bars: the broker has them, the strategy never saw them.
    outcome = await restore_from_store(after, store, _History(data[:1005]), now_ts=data[1005].ts)
    assert outcome == {"EURUSD": "exact"}
    resumed = _feed(after, data[1005:])
    assert resumed == [d for d in reference if d.ts >= data[1005].ts]  # flat all along, so exact


async def test_stale_state_is_rewarmed_and_decides_at_once(bars: list[Bar]) -> None:
    before = _strategy(max_state_age_seconds=3600)
    _feed(before, bars[:1000])
    store = _MemoryStore()
    await save_to_store(before, store)
    after = _strategy(max_state_age_seconds=3600)
    now = bars[1100].ts
    plans = after.restore_states(await store.load_blobs(), now)
    assert [(p.resume, "old" in p.reason) for p in plans] == [(False, True)]
    outcome = await restore_from_store(after, store, _History(bars[:1100]), now_ts=now)
    assert outcome == {"EURUSD": "rewarmed"}
    after.reset("EURUSD")
    decided = after.decide((bars[1100],), (FLAT,))
    assert len(decided) == 1  # no second warm-up
    # Re-warmed over warm-up + rewarm_steps bars, from a zero LSTM state at their first decision.
    span = bars[1100 - after.warmup_bars - after.rewarm_steps : 1101]
    assert decided == _feed(_strategy(), span)[-1:]


async def test_state_of_another_model_is_not_restored(bars: list[Bar]) -> None:
    before = _strategy()
    _feed(before, bars[:500])
    store = _MemoryStore()
    await save_to_store(before, store)
    symbol, _, ts, blob = store.rows["EURUSD"]
    store.rows["EURUSD"] = (symbol, "0" * 64, ts, blob)
    after = _strategy()
    plans = after.restore_states(await store.load_blobs(), bars[500].ts)
    assert [p.resume for p in plans] == [False]
    assert plans[0].reason.startswith("state saved for model 0000")


async def test_corrupt_state_is_rewarmed_not_trusted(bars: list[Bar]) -> None:
    store = _MemoryStore()
    await store.save_blob("EURUSD", _strategy().model_sha256, bars[499].ts, b"garbage")
    after = _strategy()
    outcome = await restore_from_store(after, store, _History(bars[:500]), now_ts=bars[500].ts)
    assert outcome == {"EURUSD": "rewarmed"}


async def test_truncated_lstm_state_is_rewarmed(bars: list[Bar]) -> None:
    before = _strategy()
    _feed(before, bars[:500])
    ts, blob = before.export_states()["EURUSD"]
    store = _MemoryStore()
    await store.save_blob("EURUSD", before.model_sha256, ts, blob[:-8])
    after = _strategy()
    outcome = await restore_from_store(after, store, _History(bars[:500]), now_ts=bars[500].ts)
    assert outcome == {"EURUSD": "rewarmed"}


async def test_first_bar_after_a_gap_restarts_a_restored_symbol(bars: list[Bar]) -> None:
    before = _strategy()
    _feed(before, bars[:600])
    store = _MemoryStore()
    await save_to_store(before, store)
    after = _strategy()
    await restore_from_store(after, store, _History(bars[:600]), now_ts=bars[600].ts)
    after.reset("EURUSD")
    late = bars[600]
    gap = 4 * 86_400
    moved = Bar(late.symbol, late.ts + gap, late.open, late.high, late.low, late.close, late.volume)
    assert after.decide((moved,), (FLAT,)) == []  # warm-up starts again
    assert after.features.bars_seen("EURUSD") == 1


async def test_replayed_history_going_back_in_time_restarts(bars: list[Bar]) -> None:
    """`tradectl run` replays the bundled year from its start every time: a state saved at its end
    must not swallow the new replay's bars."""
    before = _strategy()
    _feed(before, bars[:600])
    store = _MemoryStore()
    await save_to_store(before, store)
    after = _strategy()
    outcome = await restore_from_store(after, store, _History([]), now_ts=bars[0].ts)
    assert outcome == {"EURUSD": "cold"}  # planned as a re-warm: the state is from the future
    after.reset("EURUSD")
    decisions = _feed(after, bars[:300])
    assert len(decisions) == 300 - after.warmup_bars + 1
    # Even if the state were resumed, the first bar going back in time restarts the episode.
    again = _strategy()
    await restore_from_store(again, store, _History(bars[:600]), now_ts=bars[600].ts)
    again.reset("EURUSD")
    decisions = _feed(again, bars[:300])
    assert len(decisions) == 300 - after.warmup_bars + 1


def test_replay_period_is_the_lcm_of_every_window() -> None:
    assert replay_period(FeatureConfig()) == 672


def test_strategy_follows_env_observations_on_flat_bars(bars: list[Bar]) -> None:
    """Smoke check of the shared path (the parity test covers fills and the daemon)."""
    env = TradingEnv(bars[:600], episode_bars=400)
    obs, _ = env.reset(options={"start": 0})
    strategy = _strategy()
    _feed(strategy, bars[: env.features.warmup_bars])
    assert np.array_equal(strategy.last_observation["EURUSD"].astype(np.float32), obs)
