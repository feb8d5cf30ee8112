"""Policy inference latency: sb3 ``model.predict`` vs ``LstmPolicyRunner.step``.

Not a test: prints a table. Both paths run in the same process on the same
model and inputs, one after the other, so the ratio is like for like. Torch
and BLAS are pinned to one thread so the figures are per core (the daemon
runs one event loop on one core).

    python bench/policy_latency.py                 # default-size untrained model
    python bench/policy_latency.py --model m.zip   # a trained model file
"""

from __future__ import annotations

import os

# Before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from gymnasium import spaces  # noqa: E402
from sb3_contrib import RecurrentPPO  # noqa: E402

from strategies.policy import LstmPolicyRunner, StreamStates  # noqa: E402


class _SpacesEnv(gym.Env):
    """Only the spaces matter: the model is built, never trained."""

    def __init__(self, obs_dim: int, n_actions: int) -> None:
        self.observation_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        self.action_space = spaces.Discrete(n_actions)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        return np.zeros(self.observation_space.shape, np.float32), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return np.zeros(self.observation_space.shape, np.float32), 0.0, False, False, {}


def _build_model(args: argparse.Namespace) -> RecurrentPPO:
    if args.model:
        return RecurrentPPO.load(args.model, device="cpu")
    env = _SpacesEnv(args.obs_dim, 4)
    kwargs = dict(lstm_hidden_size=args.hidden, n_lstm_layers=args.layers)
    return RecurrentPPO("MlpLstmPolicy", env, policy_kwargs=kwargs, seed=0, device="cpu")


def _time_calls(fn: Callable[[int], None], calls: int, warmup: int) -> np.ndarray:
    """Per-call wall time in µs. GC stays on: the daemon runs with it on."""
    for i in range(warmup):
        fn(i)
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn(i)
        out[i] = clock() - t0
    return out / 1000.0


def _sb3_predict(model: RecurrentPPO, obs: np.ndarray) -> Callable[[int], None]:
    n = obs.shape[1]
    state: list[Any] = [None]
    not_start = np.zeros(n, dtype=bool)

    def call(i: int) -> None:
        # State and episode_start passed back every call, as live trading must.
        _, state[0] = model.predict(obs[i % len(obs)], state=state[0], episode_start=not_start, deterministic=True)

    return call


def _runner_step(runner: LstmPolicyRunner, obs: np.ndarray) -> Callable[[int], None]:
    n = obs.shape[1]
    state = [runner.initial_state(n)]
    not_start = np.zeros(n, dtype=bool)

    def call(i: int) -> None:
        _, state[0] = runner.step(obs[i % len(obs)], state[0], not_start)

    return call


def _streams_decide(runner: LstmPolicyRunner, obs: np.ndarray) -> Callable[[int], None]:
    streams = StreamStates(runner)
    ids = [f"S{k}" for k in range(obs.shape[1])]

    def call(i: int) -> None:
        streams.decide(ids, obs[i % len(obs)])

    return call


def _max_prob_diff(model: RecurrentPPO, runner: LstmPolicyRunner, obs: np.ndarray) -> float:
    """Equality check on the benchmark inputs themselves (the bench is no test, but
    a fast wrong answer would make its numbers meaningless)."""
    n = obs.shape[1]
    layers, _, hidden = model.policy.lstm_hidden_state_shape
    theirs = (th.zeros(layers, n, hidden), th.zeros(layers, n, hidden))
    ours = runner.initial_state(n)
    starts = np.zeros(n, dtype=bool)
    worst = 0.0
    for t in range(min(len(obs), 300)):
        with th.no_grad():
            dist, theirs = model.policy.get_distribution(th.as_tensor(obs[t]), theirs, th.as_tensor(starts * 1.0))
        probs, ours = runner.step(obs[t], ours, starts)
        worst = max(worst, float(np.abs(probs - dist.distribution.probs.numpy()).max()))
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a RecurrentPPO zip to load instead of building one")
    parser.add_argument("--obs-dim", type=int, default=40)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16, help="streams in the batched case")
    parser.add_argument("--sb3-calls", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=30000, help="calls for the numpy runner")
    args = parser.parse_args(argv)

    th.set_num_threads(1)
    model = _build_model(args)
    model.policy.set_training_mode(False)
    runner = LstmPolicyRunner(model)
    rng = np.random.default_rng(0)

    rows: list[tuple[str, np.ndarray | None]] = []
    ratios: list[tuple[str, float, float]] = []
    diffs: list[tuple[int, float]] = []
    for n in (1, args.batch):
        obs = rng.normal(size=(512, n, runner.obs_dim)).astype(np.float32)
        diffs.append((n, _max_prob_diff(model, runner, obs)))
        gc.collect()
        sb3 = _time_calls(_sb3_predict(model, obs), args.sb3_calls, warmup=200)
        ours = _time_calls(_runner_step(runner, obs), args.calls, warmup=1000)
        decide = _time_calls(_streams_decide(runner, obs), args.calls, warmup=1000)
        rows += [
            (f"sb3 model.predict, {n} stream(s)", sb3),
            (f"LstmPolicyRunner.step, {n} stream(s)", ours),
            (f"StreamStates.decide, {n} stream(s)", decide),
            ("", None),
        ]
        ratios.append(
            (
                f"{n} stream(s)",
                float(np.percentile(sb3, 50) / np.percentile(ours, 50)),
                float(np.percentile(sb3, 99) / np.percentile(ours, 99)),
            )
        )

    source = args.model or "untrained, built here"
    print(
        f"policy inference latency: model {source}; obs {runner.obs_dim}, LSTM {runner.hidden_size} x "
        f"{runner.n_layers} layer(s), {runner.n_actions} actions; runner dtype {runner.dtype}"
    )
    print(f"torch threads: {th.get_num_threads()} (torch.set_num_threads(1)); BLAS threads pinned to 1")
    print()
    print(f"{'path':40s} {'p50 µs':>9s} {'p99 µs':>9s} {'calls':>7s}")
    for name, t in rows:
        if t is None:
            print()
            continue
        print(f"{name:40s} {np.percentile(t, 50):9.1f} {np.percentile(t, 99):9.1f} {len(t):7d}")
    print(f"{'speed-up sb3 / runner.step':40s} {'p50':>9s} {'p99':>9s}")
    for name, r50, r99 in ratios:
        print(f"{'  ' + name:40s} {r50:8.1f}x {r99:8.1f}x")
    print()
    for n, worst in diffs:
        print(f"max |p_runner - p_sb3| over 300 steps, {n} stream(s): {worst:.2e}")


if __name__ == "__main__":
    main()
