"""Training throughput: ``TradingEnv`` steps per second alone beside RecurrentPPO's training steps per second.

Not a test: prints a table. Both are measured in this run on the same data
(the bundled bars' training head, exactly what ``tradectl train`` trains on)
with the same environment settings and hyperparameters, built by the train
command's own ``prepare`` / ``new_model``:

* ``env alone``: one ``TradingEnv`` stepped in a loop with seeded actions,
  resetting at each episode end, nothing else;
* ``env through DummyVecEnv``: the Monitor-wrapped environments as sb3's
  rollout steps them (all ``n_envs`` per call), counted per environment step;
* ``training``: ``RecurrentPPO.learn`` (rollouts with the LSTM policy plus the
  PPO epochs) after one warm-up rollout, counted per environment timestep.

The target (design brief): the environment costs <= 10 % of a training step,
i.e. ``training steps/s / env steps/s <= 0.10``. Torch runs one thread, as
``tradectl train --threads 1`` does by default (the figures are per core).

    python bench/train_throughput.py                         # train defaults (LSTM 64, 4 envs, 512 steps)
    python bench/train_throughput.py --timesteps 8192 -- --lstm-size 32 --n-epochs 3
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

from daemon.config import load_config  # noqa: E402
from strategies.training.command import add_arguments, new_model, prepare  # noqa: E402
from strategies.training.env import TradingEnv  # noqa: E402


def _env_alone(bars: list, env_kwargs: dict, steps: int, seed: int) -> float:
    env = TradingEnv(bars, **env_kwargs)
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, env.action_space.n, size=steps)
    env.reset(seed=seed)
    started = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(int(a))
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - started)


def _env_vectorised(vec_env: object, steps: int, seed: int) -> float:
    n = vec_env.num_envs  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    calls = max(1, steps // n)
    actions = rng.integers(0, 4, size=(calls, n))
    vec_env.reset()  # type: ignore[attr-defined]
    started = time.perf_counter()
    for row in actions:
        vec_env.step(row)  # type: ignore[attr-defined]  # resets finished episodes itself
    return calls * n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=8192, help="training timesteps measured (after warm-up)")
    parser.add_argument("--env-steps", type=int, default=20_000, help="environment steps measured alone")
    parser.add_argument("train_args", nargs="*", help="tradectl train options after --")
    ours = parser.parse_args()

    train_parser = argparse.ArgumentParser()
    add_arguments(train_parser)
    args = train_parser.parse_args(["--no-progress", *ours.train_args])
    config = load_config(None)
    prepared = prepare(args, config)  # sets torch's thread count from --threads
    import torch

    print(f"data     {prepared.data_path.name}: {len(prepared.train_bars):,} training bars")
    print(f"settings LSTM {args.lstm_size}, {args.n_envs} envs x {args.n_steps} steps, batch {args.batch_size}, "
          f"{args.n_epochs} epochs, episode {args.episode_bars} bars, torch threads {torch.get_num_threads()}")

    env_sps = _env_alone(prepared.train_bars, prepared.env_kwargs, ours.env_steps, args.seed)
    vec_sps = _env_vectorised(prepared.vec_env, ours.env_steps, args.seed)

    model = new_model(args, prepared)
    rollout = args.n_steps * args.n_envs
    model.learn(rollout, reset_num_timesteps=False)  # warm-up: torch's first calls, the first rollout
    start_steps = model.num_timesteps
    started = time.perf_counter()
    model.learn(ours.timesteps, reset_num_timesteps=False)
    seconds = time.perf_counter() - started
    train_sps = (model.num_timesteps - start_steps) / seconds

    rows = [
        ("TradingEnv alone", env_sps, 1 / env_sps),
        ("TradingEnv through DummyVecEnv+Monitor", vec_sps, 1 / vec_sps),
        ("RecurrentPPO training (rollout + update)", train_sps, 1 / train_sps),
    ]
    print()
    print(f"{'':42s} {'steps/s':>10s} {'µs/step':>10s}")
    for name, sps, sec in rows:
        print(f"{name:42s} {sps:10,.0f} {sec * 1e6:10,.1f}")
    share = train_sps / env_sps
    share_vec = train_sps / vec_sps
    print()
    print(f"environment share of a training step: {share:.1%} alone, {share_vec:.1%} as sb3 steps it "
          f"(target <= 10%: {'met' if share <= 0.10 else 'NOT met'})")


if __name__ == "__main__":
    main()
