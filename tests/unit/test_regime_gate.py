"""The regime-gated policy: trained by sb3-contrib, run by the one numpy inference path, equal to sb3 within 1e-5.

Observations are real: the bundled EUR/USD bars through ``TradingEnv`` (the
live feature path), with a fixed action pattern so positions open and close.
The probabilities of our runner (single-stream fast path and batched step)
are compared with sb3's own ``get_distribution`` step by step, carrying the
LSTM state on both sides: once for a model trained by ``tradectl train
--policy regime-gated`` and loaded from its file, once for a model whose
every weight (the gate's included) was perturbed so none is trivial.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch as th
from sb3_contrib import RecurrentPPO
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import DummyVecEnv

from brokers.errors import ModelError
from brokers.history import load_bundled
from daemon.cli import main
from strategies.features import FEATURE_NAMES
from strategies.model_file import read_metadata
from strategies.policy import LstmPolicyRunner, StreamStates
from strategies.policy_network import read_actor
from strategies.recurrent import RecurrentStrategy
from strategies.regime_gate import RegimeGatedExtractor, gate_slices
from strategies.training.env import TradingEnv
from tests.bundled import bundled_slice
from tests.unit.test_policy import _model as perturbed_model

TOL = 1e-5
STEPS = 300


@pytest.fixture(scope="module")
def bars() -> list[Any]:
    return load_bundled()[:900]


@pytest.fixture(scope="module")
def observations(bars: list[Any]) -> np.ndarray:
    env = TradingEnv(bars, episode_bars=STEPS)
    obs, _ = env.reset(options={"start": 0})
    out = [obs]
    for t in range(STEPS - 1):
        obs, *_ = env.step((0, 1, 0, 0, 3, 2, 0, 3)[t % 8])
        out.append(obs)
    return np.array(out, dtype=np.float32)


def _gated_model(bars: list[Any], seed: int = 0) -> RecurrentPPO:
    """A regime-gated model with every weight perturbed (``test_policy``'s recipe) on the env's spaces."""
    price, regime = gate_slices(FEATURE_NAMES)
    space = TradingEnv(bars, episode_bars=96).observation_space
    return perturbed_model(space, seed=seed, lstm_hidden_size=16, features_extractor_class=RegimeGatedExtractor,
                           features_extractor_kwargs={"price": price, "regime": regime})


def _sb3_probabilities(model: RecurrentPPO, observations: np.ndarray) -> np.ndarray:
    layers, _, hidden = model.policy.lstm_hidden_state_shape
    state = (th.zeros(layers, 1, hidden), th.zeros(layers, 1, hidden))
    out = []
    with th.no_grad():
        for t, obs in enumerate(observations):
            start = th.tensor([1.0 if t == 0 else 0.0])
            dist, state = model.policy.get_distribution(th.as_tensor(obs[None, :]), state, start)
            out.append(dist.distribution.probs.numpy()[0])
    return np.array(out)


def _ours(model: RecurrentPPO, observations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(single-stream fast path, batched step) probabilities over the sequence."""
    streams = StreamStates(LstmPolicyRunner(model))
    single = np.array([streams.decide_one("EURUSD", obs, t == 0) for t, obs in enumerate(observations)])
    runner = LstmPolicyRunner(model)
    state = runner.initial_state(2)
    batched = []
    for t, obs in enumerate(observations):
        probs, state = runner.step(np.stack([obs, obs]), state, [t == 0, t == 0])
        batched.append(probs[1])
    return single, np.array(batched)


def test_perturbed_gated_model_matches_sb3_on_real_bars(bars: list[Any], observations: np.ndarray) -> None:
    model = _gated_model(bars)
    theirs = _sb3_probabilities(model, observations)
    single, batched = _ours(model, observations)
    assert np.max(np.abs(single - theirs)) <= TOL
    assert np.max(np.abs(batched - theirs)) <= TOL
    assert read_actor(model).gate is not None


def test_the_gate_step_is_applied(bars: list[Any], observations: np.ndarray) -> None:
    model = _gated_model(bars)
    gated = LstmPolicyRunner(model)
    ungated = LstmPolicyRunner(model)
    ungated._gate = None  # the same weights with the gate step left out
    a = StreamStates(gated)
    b = StreamStates(ungated)
    diff = max(
        float(np.max(np.abs(np.subtract(a.decide_one("s", o, t == 0), b.decide_one("s", o, t == 0)))))
        for t, o in enumerate(observations)
    )
    assert diff > 1e-3
    assert gated.fingerprint != LstmPolicyRunner(_gated_model(bars, seed=1)).fingerprint


def test_trained_regime_gated_model_runs_live_and_matches_sb3(tmp_path: Path, observations: np.ndarray) -> None:
    data = bundled_slice(tmp_path / "slice.csv", 900)
    out = tmp_path / "gated.zip"
    argv = ["train", "--data", str(data), "--out", str(out), "--policy", "regime-gated", "--timesteps", "256",
            "--n-envs", "2", "--n-steps", "64", "--batch-size", "64", "--n-epochs", "1", "--episode-bars", "96",
            "--lstm-size", "16", "--checkpoint-every", "0", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    meta = read_metadata(out)
    assert meta["config"]["training"]["policy"]["architecture"] == "regime-gated"
    assert "--policy regime-gated" in meta["command"]
    strategy = RecurrentStrategy(out)  # the daemon's loader: SHA-256, schema checks, then the numpy runner
    assert strategy.runner._gate is not None
    model = RecurrentPPO.load(out, device="cpu")
    model.policy.set_training_mode(False)
    single, batched = _ours(model, observations)
    theirs = _sb3_probabilities(model, observations)
    assert np.max(np.abs(single - theirs)) <= TOL
    assert np.max(np.abs(batched - theirs)) <= TOL


class _OtherExtractor(BaseFeaturesExtractor):
    def __init__(self, observation_space: Any) -> None:
        super().__init__(observation_space, features_dim=int(np.prod(observation_space.shape)))

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return observations


def test_an_unknown_features_extractor_is_refused(bars: list[Any]) -> None:
    env = DummyVecEnv([lambda: TradingEnv(bars, episode_bars=96)])
    model = RecurrentPPO("MlpLstmPolicy", env, n_steps=16, batch_size=16, device="cpu",
                         policy_kwargs={"lstm_hidden_size": 8, "features_extractor_class": _OtherExtractor})
    with pytest.raises(ModelError, match="unsupported features extractor _OtherExtractor"):
        read_actor(model)


def test_gate_slices_follow_the_schema() -> None:
    price, regime = gate_slices(FEATURE_NAMES)
    assert [FEATURE_NAMES[i] for i in range(*price)] == [
        "ret_1", "ret_4", "ret_24", "vol_24", "vol_96", "rsi_14", "atr_14", "zsma_24", "zsma_96", "range"
    ]
    assert all(FEATURE_NAMES[i].startswith("regime_") for i in range(*regime)) and regime[1] - regime[0] == 4
    with pytest.raises(ValueError, match="not contiguous"):
        gate_slices(["ret_1", "tod_sin", "ret_4", "regime_score"])
