"""Policy latency: sb3 ``model.predict`` vs ``LstmPolicyRunner.step``, and the whole pipeline.

Not a test: prints tables. Both inference paths run in the same process on
the same model and inputs, one after the other, so the ratio is like for
like. Torch and BLAS are pinned to one thread so the figures are per core
(the daemon runs one event loop on one core).

Then the daemon itself (the backtest and live runners, the recurrent strategy
with the same model, the bundled bars), every target a ratio to something
measured in this run:

* the core of a bar alone (feature update + policy step); the recurrent
  backtest's time per bar <= 3x that core, and bar -> ``broker.submit`` p50
  <= 4x that core;
* the durable live path (``store.synchronous: full``): bar -> ``broker.submit``
  p99 <= the disk's own fsync p99 + 1 ms, the fsync measured on the same disk.

    python bench/policy_latency.py                 # the shipped default model
    python bench/policy_latency.py --model m.zip   # another trained model file
    python bench/policy_latency.py --untrained     # a default-size untrained model (no pipeline part)
"""

from __future__ import annotations

import os

# Before numpy/torch load their thread pools.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from gymnasium import spaces  # noqa: E402
from sb3_contrib import RecurrentPPO  # noqa: E402

from strategies.policy import LstmPolicyRunner, StreamStates  # noqa: E402
from strategies.recurrent import default_model_path  # noqa: E402


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
    if not args.untrained:
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


def _streams_decide_one(runner: LstmPolicyRunner, obs: np.ndarray) -> Callable[[int], None]:
    """The strategy's per-bar call: one stream, a float64 observation vector, probabilities as floats."""
    streams = StreamStates(runner)
    rows = obs[:, 0].astype(np.float64)

    def call(i: int) -> None:
        streams.decide_one("S0", rows[i % len(rows)])

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
    parser.add_argument("--model", default=str(default_model_path()), help="model zip (with its .meta.json)")
    parser.add_argument("--untrained", action="store_true", help="build an untrained model instead (no pipeline)")
    parser.add_argument("--obs-dim", type=int, default=40, help="observation size of the untrained model")
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=16, help="streams in the batched case")
    parser.add_argument("--sb3-calls", type=int, default=3000)
    parser.add_argument("--calls", type=int, default=30000, help="calls for the numpy runner")
    parser.add_argument("--repeat", type=int, default=4, help="copies of the bundled year in the pipeline run")
    parser.add_argument("--backtests", type=int, default=3, help="backtest runs (the best one counts)")
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
        ]
        if n == 1:
            one = _time_calls(_streams_decide_one(runner, obs), args.calls, warmup=1000)
            rows.append(("StreamStates.decide_one, 1 stream", one))
        rows.append(("", None))
        ratios.append(
            (
                f"{n} stream(s)",
                float(np.percentile(sb3, 50) / np.percentile(ours, 50)),
                float(np.percentile(sb3, 99) / np.percentile(ours, 99)),
            )
        )

    source = "untrained, built here" if args.untrained else args.model
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
    if not args.untrained:
        del model, runner
        gc.collect()
        print()
        asyncio.run(_pipeline(Path(args.model), args.repeat, args.backtests))


# ---------------------------------------------------------------------- the whole pipeline
def _recurrent_config(model: Path, synchronous: str = "full") -> Any:
    from daemon.config import TradectlConfig

    return TradectlConfig(
        strategy={"kind": "recurrent", "recurrent": {"model": str(model)}},
        api={"enabled": False},
        store={"synchronous": synchronous},
    )


def _core_us(model: Path, bars: list[Any]) -> np.ndarray:
    """The core of a bar, alone: the feature update plus the policy step, per bar (µs), on a flat position.

    What the pipeline adds around it (guard, sizing, risk, journal, broker,
    portfolio, store) is its overhead; the targets are ratios to this.
    """
    from daemon.app import build_strategy
    from strategies.base import PositionView

    strategy = build_strategy(_recurrent_config(model))
    features, streams = strategy.features, strategy.streams  # type: ignore[attr-defined]
    flat = PositionView()
    clock = time.perf_counter_ns
    out: list[int] = []
    start = True
    for bar in bars:
        t0 = clock()
        obs = features.update(bar.symbol, bar, flat)
        if obs is not None:
            streams.decide_one(bar.symbol, obs, start)
            start = False
        out.append(clock() - t0)
    return np.array(out[strategy.warmup_bars:]) / 1000.0  # type: ignore[attr-defined]


async def _pipeline(model: Path, repeat: int, backtests: int) -> None:
    """Pipeline overhead against the core, the durable live path against the disk, all in this run."""
    from durable_submit import bare_fsync_ms  # bench/ is this script's folder

    from brokers.history import load_bundled, repeat_bars
    from daemon.logs import configure_logging
    from daemon.runners import BacktestRunner

    configure_logging("error", False)  # no log line per order or risk denial: their I/O is not the pipeline
    year = load_bundled()
    bars = repeat_bars(year, len(year) * max(1, repeat))
    core = _core_us(model, year)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        timings = await _order_latency(model, folder / "latency.db", bars, live=False)
        fsync = bare_fsync_ms(folder, 400, append=True) * 1000.0  # the same probe as bench/durable_submit.py
        # the live path: the durable store (an fsync per journal commit) and the one without
        live = {
            sync: await _order_latency(model, folder / f"live-{sync}.db", year, live=True, synchronous=sync)
            for sync in ("full", "normal")
        }
        per_bar = []
        for k in range(backtests):
            runner = await BacktestRunner.open(_recurrent_config(model), db_path=folder / f"bt{k}.db", bars=year)
            gc.collect()
            t0 = time.perf_counter()
            await runner.run(install_signals=False)
            per_bar.append((time.perf_counter() - t0) / runner.daemon.pipeline.counts.bars * 1e6)

    print(f"whole pipeline, recurrent policy ({model.name}), simulated broker")
    print(f"{'path':56s} {'p50 µs':>9s} {'p99 µs':>9s} {'max µs':>9s} {'n':>6s}")
    rows = {"core: feature update + policy step, alone": core, **timings}
    rows["disk: 512-byte append + fsync"] = fsync
    for sync, live_timings in live.items():
        rows[f"live, synchronous={sync}: bar -> broker.submit"] = live_timings[_SUBMIT]
        rows[f"live, synchronous={sync}: fills booked -> broker.submit"] = live_timings[_AFTER_BOOKING]
    for name, t in rows.items():
        if len(t):
            print(f"{name:56s} {np.percentile(t, 50):9.1f} {np.percentile(t, 99):9.1f} {t.max():9.1f} {len(t):6d}")
    core_mean, core_p50 = float(core.mean()), float(np.percentile(core, 50))
    best = min(per_bar)
    print()
    print(f"core per bar: mean {core_mean:.1f} µs, p50 {core_p50:.1f} µs")
    print(f"recurrent backtest, bundled year: {best:.1f} µs per bar (best of {len(per_bar)}:"
          f" {', '.join(f'{t:.1f}' for t in per_bar)}), {1e6 / best:,.0f} bars/s")
    _verdict("backtest time per bar / core mean", best / core_mean, 3.0)
    submit = timings[_SUBMIT]
    if len(submit):
        _verdict("bar -> broker.submit p50 / core p50", float(np.percentile(submit, 50)) / core_p50, 4.0)
    durable = live["full"][_AFTER_BOOKING]
    if len(durable):
        p99, disk = float(np.percentile(durable, 99)), float(np.percentile(fsync, 99))
        margin = p99 - disk
        verdict = "met" if margin <= 1000 else "MISSED"
        name = "durable live (fills booked) -> submit p99 - fsync p99"
        print(f"{name:44s} {margin:8.0f} µs  (target <= 1000 µs: {verdict}; {p99:.0f} vs {disk:.0f} µs)")


def _verdict(name: str, ratio: float, target: float) -> None:
    print(f"{name:44s} {ratio:8.2f}x  (target <= {target:g}x: {'met' if ratio <= target else 'MISSED'})")


_SUBMIT = "bar -> order at broker.submit"
# A fill reported since the last bar is booked when the next bar arrives at full replay speed; a live venue
# reports it between bars, when the live runner books it. The durable live target is read from here.
_AFTER_BOOKING = "bar, its fills booked -> order at broker.submit"
_STAGES = (
    ("decide_end", "bar -> strategy decided"),
    ("manager", "bar -> OrderManager.submit (sized, risk-checked)"),
    ("broker", _SUBMIT),
)


async def _order_latency(
    model: Path, db: Path, bars: list[Any], *, live: bool, synchronous: str = "full", config: Any = None,
    pace: float = 0,
) -> dict[str, np.ndarray]:
    """Time every bar through on_bar and, for bars that send an order, when each stage on the way to the
    broker adapter's ``submit`` is reached (µs since on_bar was entered). ``config`` replaces the recurrent
    default and ``pace`` (bars per second, live only; 0: back to back) the replay's speed
    (bench/broker_latency.py runs the simulator with its Alpaca run's settings, at its bars' pace)."""
    from daemon.runners import BacktestRunner, LiveRunner

    config = config or _recurrent_config(model, synchronous)
    runner: Any
    if live:
        runner = await LiveRunner.open(config, db_path=db, bars=bars, pace=pace)
    else:
        runner = await BacktestRunner.open(config, db_path=db, bars=bars)
    daemon = runner.daemon
    pipeline, clock = daemon.pipeline, time.perf_counter_ns
    marks: dict[str, int] = {}
    stages: dict[str, list[int]] = {key: [] for key, _ in _STAGES}
    bar_ns: list[int] = []

    def mark_after(obj: Any, name: str, key: str) -> None:
        inner = getattr(obj, name)

        def timed(*args: Any, **kwargs: Any) -> Any:
            result = inner(*args, **kwargs)
            marks[key] = clock()
            return result

        setattr(obj, name, timed)

    def mark_before(obj: Any, name: str, key: str) -> None:
        inner = getattr(obj, name)

        async def timed(*args: Any, **kwargs: Any) -> Any:
            marks[key] = clock()
            return await inner(*args, **kwargs)

        setattr(obj, name, timed)

    mark_after(daemon.strategy, "decide", "decide_end")
    mark_before(daemon.orders, "submit", "manager")
    mark_before(daemon.broker, "submit", "broker")
    on_bar, apply_updates = pipeline.on_bar, pipeline.apply_updates

    async def timed_apply_updates() -> int:
        booked = await apply_updates()
        marks["booked"] = clock()
        return booked

    async def timed_on_bar(bar: Any) -> None:
        marks.clear()
        t0 = clock()
        await on_bar(bar)
        bar_ns.append(clock() - t0)
        if "broker" in marks:
            for key, _ in _STAGES:
                stages[key].append(marks[key] - t0)
            after_booking.append(marks["broker"] - marks["booked"])

    after_booking: list[int] = []
    pipeline.on_bar = timed_on_bar  # type: ignore[method-assign]
    pipeline.apply_updates = timed_apply_updates  # type: ignore[method-assign]
    gc.collect()
    await runner.run(install_signals=False)
    out = {label: np.array(stages[key]) / 1000.0 for key, label in _STAGES}
    out[_AFTER_BOOKING] = np.array(after_booking) / 1000.0
    out["bar through on_bar (every bar)"] = np.array(bar_ns) / 1000.0
    return out


if __name__ == "__main__":
    main()
