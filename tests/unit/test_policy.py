"""The numpy LSTM runner against sb3-contrib's own forward pass.

Models are untrained (random initial weights, then perturbed deterministically
so every bias, including the LSTM's, is non-trivial): equality of the forward
pass does not depend on what the weights learned.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from sb3_contrib import RecurrentPPO

from brokers.errors import ModelError
from strategies.policy import LstmPolicyRunner, StreamStates, greedy

TOL = 1e-5


class _SpacesEnv(gym.Env):
    """Just enough of an environment to give RecurrentPPO its spaces."""

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space) -> None:
        self.observation_space = observation_space
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample() * 0, {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample() * 0, 0.0, False, False, {}


def _box(*shape: int) -> spaces.Box:
    return spaces.Box(-np.inf, np.inf, shape, np.float32)


def _model(
    obs_space: spaces.Space | None = None,
    action_space: spaces.Space | None = None,
    seed: int = 0,
    **policy_kwargs: Any,
) -> RecurrentPPO:
    env = _SpacesEnv(obs_space if obs_space is not None else _box(12), action_space or spaces.Discrete(4))
    model = RecurrentPPO(
        "MlpLstmPolicy", env, n_steps=16, batch_size=16, policy_kwargs=policy_kwargs, seed=seed, device="cpu"
    )
    th.manual_seed(1000 + seed)
    with th.no_grad():
        for p in model.policy.parameters():
            p.add_(th.randn_like(p) * 0.25)
    model.policy.set_training_mode(False)
    return model


def _sb3_step(
    model: RecurrentPPO, obs: np.ndarray, state: tuple[th.Tensor, th.Tensor], starts: np.ndarray
) -> tuple[np.ndarray, tuple[th.Tensor, th.Tensor]]:
    with th.no_grad():
        dist, new_state = model.policy.get_distribution(
            th.as_tensor(obs), state, th.as_tensor(starts, dtype=th.float32)
        )
    return dist.distribution.probs.numpy(), new_state


def _sb3_initial(model: RecurrentPPO, n: int) -> tuple[th.Tensor, th.Tensor]:
    layers, _, hidden = model.policy.lstm_hidden_state_shape
    return th.zeros(layers, n, hidden), th.zeros(layers, n, hidden)


def _observations(rng: np.random.Generator, steps: int, n: int, shape: tuple[int, ...]) -> np.ndarray:
    # Persistent offsets per stream plus noise: the LSTM sees sequences with
    # structure, so its state actually matters.
    drift = rng.normal(scale=1.5, size=(1, n, *shape))
    return (drift + rng.normal(size=(steps, n, *shape))).astype(np.float32)


VARIANTS = {
    "h32-l1": dict(lstm_hidden_size=32),
    "h64-l2": dict(lstm_hidden_size=64, n_lstm_layers=2),
    "h32-l2-shared": dict(lstm_hidden_size=32, n_lstm_layers=2, shared_lstm=True, enable_critic_lstm=False),
    "h64-l1-no-critic-lstm": dict(lstm_hidden_size=64, enable_critic_lstm=False),
    "h48-l3-relu-pi32": dict(
        lstm_hidden_size=48, n_lstm_layers=3, net_arch=dict(pi=[32], vf=[16]), activation_fn=th.nn.ReLU
    ),
    "h16-linear-head": dict(lstm_hidden_size=16, net_arch=[]),
    "h32-elu-no-lstm-bias": dict(
        lstm_hidden_size=32, activation_fn=th.nn.ELU, net_arch=dict(pi=[24, 24]), lstm_kwargs=dict(bias=False)
    ),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_batched_probabilities_match_sb3(variant: str, dtype: type) -> None:
    model = _model(**VARIANTS[variant])
    runner = LstmPolicyRunner(model, dtype=dtype)
    rng = np.random.default_rng(7)
    steps, n = 240, 5
    obs = _observations(rng, steps, n, (12,))
    starts = rng.random((steps, n)) < 0.04
    starts[0] = True

    ours = runner.initial_state(n)
    theirs = _sb3_initial(model, n)
    worst = worst_state = 0.0
    for t in range(steps):
        probs, ours = runner.step(obs[t], ours, starts[t])
        ref, theirs = _sb3_step(model, obs[t], theirs, starts[t])
        assert probs.shape == (n, 4)
        worst = max(worst, float(np.abs(probs - ref).max()))
        worst_state = max(worst_state, _relative_diff(ours[0], theirs[0]), _relative_diff(ours[1], theirs[1]))
    assert worst <= TOL, f"probabilities: max abs difference {worst:.3g}"
    # The cell state is unbounded (tens with these weights), so compare it relative to its size.
    assert worst_state <= TOL, f"LSTM state: max relative difference {worst_state:.3g}"


def _relative_diff(ours: np.ndarray, theirs: th.Tensor) -> float:
    ref = theirs.numpy()
    return float((np.abs(ours - ref) / np.maximum(1.0, np.abs(ref))).max())


def test_single_stream_matches_sb3_predict_actions() -> None:
    """The greedy action equals what sb3's deterministic predict returns, state passed back."""
    model = _model(lstm_hidden_size=64)
    runner = LstmPolicyRunner(model)
    rng = np.random.default_rng(3)
    obs = _observations(rng, 200, 1, (12,))
    ours = runner.initial_state(1)
    state = None
    start = np.ones(1, dtype=bool)
    for t in range(200):
        probs, ours = runner.step(obs[t], ours, start)
        action, state = model.predict(obs[t], state=state, episode_start=start, deterministic=True)
        chosen, confidence = greedy(probs)
        assert chosen[0] == action[0]
        assert confidence[0] == pytest.approx(probs[0].max())
        assert _relative_diff(ours[0], th.as_tensor(state[0])) <= TOL
        start = np.zeros(1, dtype=bool)


def test_flattens_multidimensional_box_observations() -> None:
    model = _model(_box(3, 4), lstm_hidden_size=32)
    runner = LstmPolicyRunner(model)
    assert runner.obs_dim == 12
    rng = np.random.default_rng(5)
    obs = _observations(rng, 50, 3, (3, 4))
    ours, theirs = runner.initial_state(3), _sb3_initial(model, 3)
    for t in range(50):
        probs, ours = runner.step(obs[t], ours, np.zeros(3, dtype=bool))
        ref, theirs = _sb3_step(model, obs[t], theirs, np.zeros(3, dtype=bool))
        assert np.abs(probs - ref).max() <= TOL


def test_image_observations_are_scaled_like_sb3() -> None:
    model = _model(spaces.Box(0, 255, (1, 4, 4), np.uint8), lstm_hidden_size=16)
    runner = LstmPolicyRunner(model)
    rng = np.random.default_rng(9)
    obs = rng.integers(0, 256, size=(60, 2, 1, 4, 4), dtype=np.uint8)
    ours, theirs = runner.initial_state(2), _sb3_initial(model, 2)
    for t in range(60):
        probs, ours = runner.step(obs[t], ours, np.zeros(2, dtype=bool))
        ref, theirs = _sb3_step(model, obs[t], theirs, np.zeros(2, dtype=bool))
        assert np.abs(probs - ref).max() <= TOL


def test_step_does_not_modify_its_inputs() -> None:
    runner = LstmPolicyRunner(_model(lstm_hidden_size=32))
    rng = np.random.default_rng(1)
    state = tuple(rng.normal(size=(1, 2, 32)).astype(np.float32) for _ in range(2))
    before = tuple(s.copy() for s in state)
    runner.step(rng.normal(size=(2, 12)), state, np.array([True, False]))
    assert all(np.array_equal(a, b) for a, b in zip(state, before, strict=True))


def test_stream_states_match_per_stream_sb3_runs() -> None:
    """Streams deciding on different timestamps, batched when they coincide,
    each follow exactly its own sb3 trajectory, resets included."""
    model = _model(lstm_hidden_size=32, n_lstm_layers=2)
    streams = StreamStates(LstmPolicyRunner(model), capacity=2)  # forces the pool to grow
    ids = [f"S{i}" for i in range(5)]
    rng = np.random.default_rng(11)
    obs = _observations(rng, 220, 5, (12,))
    sb3_states = {sid: _sb3_initial(model, 1) for sid in ids}
    worst = 0.0
    for t in range(220):
        deciding = [i for i in range(5) if rng.random() < 0.6]
        if not deciding:
            continue
        starts = rng.random(len(deciding)) < 0.05
        for i in deciding:
            if rng.random() < 0.02:
                streams.reset(ids[i])
                sb3_states[ids[i]] = _sb3_initial(model, 1)
        probs = streams.decide([ids[i] for i in deciding], obs[t, deciding], starts)
        for row, (i, start) in enumerate(zip(deciding, starts, strict=True)):
            ref, sb3_states[ids[i]] = _sb3_step(model, obs[t, i : i + 1], sb3_states[ids[i]], np.array([start]))
            worst = max(worst, float(np.abs(probs[row] - ref[0]).max()))
    assert worst <= TOL
    assert sorted(streams.ids) == ids


def test_state_is_carried_between_calls() -> None:
    """Guards against the classic failure: running the LSTM stateless."""
    runner = LstmPolicyRunner(_model(lstm_hidden_size=64))
    streams = StreamStates(runner)
    rng = np.random.default_rng(2)
    obs = _observations(rng, 60, 1, (12,))
    worst = 0.0
    for t in range(60):
        stateful = streams.decide(["EURUSD"], obs[t])
        stateless, _ = runner.step(obs[t], runner.initial_state(1))
        worst = max(worst, float(np.abs(stateful - stateless).max()))
    assert worst > 1e-3
    h, c = streams.state("EURUSD")
    assert h.shape == c.shape == (1, 1, 64)
    assert np.abs(h).max() > 0


def test_reset_returns_stream_to_initial_state() -> None:
    runner = LstmPolicyRunner(_model(lstm_hidden_size=32))
    streams = StreamStates(runner)
    obs = np.ones((1, 12), dtype=np.float32)
    first = streams.decide(["A"], obs)
    streams.decide(["A"], obs * 3)
    streams.reset("A")
    assert np.array_equal(streams.decide(["A"], obs), first)
    fresh = streams.decide(["A"], obs, np.array([True]))
    assert np.array_equal(fresh, first)


def test_export_restore_continues_identically() -> None:
    model = _model(lstm_hidden_size=32, n_lstm_layers=2)
    original = StreamStates(LstmPolicyRunner(model))
    ids = ["AAPL", "MSFT", "EURUSD"]
    rng = np.random.default_rng(4)
    obs = _observations(rng, 100, 3, (12,))
    for t in range(50):
        original.decide(ids, obs[t])
    blobs = original.export()
    assert set(blobs) == set(ids)
    assert all(isinstance(b, bytes) for b in blobs.values())

    restored = StreamStates(LstmPolicyRunner(model))  # as after a restart
    restored.restore(blobs)
    for t in range(50, 100):
        assert np.array_equal(original.decide(ids, obs[t]), restored.decide(ids[::-1], obs[t][::-1])[::-1])


def test_restore_refuses_state_of_another_model() -> None:
    streams = StreamStates(LstmPolicyRunner(_model(lstm_hidden_size=32, seed=1)))
    streams.decide(["A"], np.ones((1, 12)))
    blobs = streams.export()
    other = StreamStates(LstmPolicyRunner(_model(lstm_hidden_size=32, seed=2)))
    with pytest.raises(ModelError, match="another model"):
        other.restore(blobs)
    bigger = StreamStates(LstmPolicyRunner(_model(lstm_hidden_size=64, seed=1)))
    with pytest.raises(ModelError, match="expected"):
        bigger.restore(blobs)
    with pytest.raises(ModelError, match="not an LSTM state"):
        streams.restore({"A": b"XXXX" + blobs["A"][4:]})
    assert len(other) == 0, "a refused restore leaves nothing half-applied"


def test_empty_batch_decides_nothing() -> None:
    streams = StreamStates(LstmPolicyRunner(_model(lstm_hidden_size=16)))
    assert streams.decide([], np.zeros((0, 12))).shape == (0, 4)


def test_duplicate_ids_in_a_batch_are_refused() -> None:
    streams = StreamStates(LstmPolicyRunner(_model(lstm_hidden_size=16)))
    with pytest.raises(ValueError, match="duplicate"):
        streams.decide(["A", "A"], np.zeros((2, 12)))


def test_wrong_observation_size_is_a_model_error() -> None:
    runner = LstmPolicyRunner(_model(lstm_hidden_size=16))
    with pytest.raises(ModelError, match="observation size: model 12, got 11"):
        runner.step(np.zeros((1, 11)), runner.initial_state(1))


def test_continuous_actions_are_refused() -> None:
    model = _model(action_space=spaces.Box(-1, 1, (2,), np.float32), lstm_hidden_size=16)
    with pytest.raises(ModelError, match="only Discrete actions"):
        LstmPolicyRunner(model)


def test_unknown_activation_is_refused() -> None:
    model = _model(lstm_hidden_size=16, activation_fn=th.nn.Softsign)
    with pytest.raises(ModelError, match="unsupported activation Softsign"):
        LstmPolicyRunner(model)


def test_non_model_is_refused() -> None:
    with pytest.raises(ModelError, match="expected a RecurrentPPO"):
        LstmPolicyRunner(object())  # type: ignore[arg-type]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_single_stream_fast_path_equals_step_bit_for_bit(variant: str) -> None:
    """decide_one (and decide for one stream) run the stream's own step plan, which keeps the state
    in its buffers; interleaved with batches, resets, state reads, export/restore and pool growth, every
    probability and state must equal the generic runner.step's exactly."""
    model = _model(**VARIANTS[variant])
    runner = LstmPolicyRunner(model)
    streams = StreamStates(runner, capacity=1)  # the second stream grows the pool
    ids = ["A", "B", "C"]
    rng = np.random.default_rng(11)
    steps = 120
    obs = _observations(rng, steps, 3, (12,)).astype(np.float64)
    starts = rng.random((steps, 3)) < 0.05
    ref = {sid: runner.initial_state(1) for sid in ids}
    for t in range(steps):
        if t % 17 == 5:  # all three in one batch through runner.step
            probs = streams.decide(ids, obs[t], starts[t])
            h = np.concatenate([ref[sid][0] for sid in ids], axis=1)
            c = np.concatenate([ref[sid][1] for sid in ids], axis=1)
            expected, (h, c) = runner.step(obs[t], (h, c), starts[t])
            np.testing.assert_array_equal(probs, expected)
            ref = {sid: (h[:, i : i + 1], c[:, i : i + 1]) for i, sid in enumerate(ids)}
            continue
        for i, sid in enumerate(ids):
            expected, ref[sid] = runner.step(obs[t, i : i + 1], ref[sid], starts[t, i : i + 1])
            if (t + i) % 3:
                got = streams.decide_one(sid, obs[t, i], bool(starts[t, i]))
                assert type(got) is tuple and all(type(p) is float for p in got)
                assert got == tuple(expected[0].tolist())
            else:
                got_array = streams.decide([sid], obs[t, i : i + 1], starts[t, i : i + 1])
                assert got_array.dtype == expected.dtype
                np.testing.assert_array_equal(got_array, expected)
        if t % 23 == 7:
            h, c = streams.state("B")
            np.testing.assert_array_equal(h, ref["B"][0])
            np.testing.assert_array_equal(c, ref["B"][1])
        if t == 60:
            streams.reset("C")
            ref["C"] = runner.initial_state(1)
        if t == 90:  # export and restore into a fresh pool mid-run
            blobs = streams.export()
            streams = StreamStates(runner)
            streams.restore(blobs)
    for sid in ids:
        h, c = streams.state(sid)
        np.testing.assert_array_equal(h, ref[sid][0])
        np.testing.assert_array_equal(c, ref[sid][1])


def test_single_stream_fast_path_falls_back_where_it_does_not_apply() -> None:
    """float64 inference has no single-stream plan, and integer observations skip it: decide_one still
    answers, through runner.step; a wrong observation size is still a ModelError."""
    model = _model(lstm_hidden_size=16)
    obs = _observations(np.random.default_rng(3), 20, 1, (12,))
    cases = [(LstmPolicyRunner(model, dtype=np.float64), obs), (LstmPolicyRunner(model), np.rint(obs * 3).astype(int))]
    for runner, series in cases:
        streams = StreamStates(runner)
        state = runner.initial_state(1)
        for t in range(20):
            expected, state = runner.step(series[t], state, [t == 0])
            assert streams.decide_one("S", series[t, 0], t == 0) == tuple(expected[0].tolist())
    with pytest.raises(ModelError):
        StreamStates(LstmPolicyRunner(model)).decide_one("S", np.zeros(5))
