"""`tradectl train`: RecurrentPPO on historical bars, through the live feature path and cost model.

The training environment is ``strategies.training.env.TradingEnv``: the same
``FeatureProcessor`` the live strategy runs and the simulated broker's costs
from the configuration, so what the policy learns from is what it trades on.
The last ``--eval-fraction`` of the bars is held out; after training the
policy trades it greedily through ``LstmPolicyRunner`` (the live inference
path, not sb3's ``predict``) and the result goes into the model's metadata.

Reward: by default the equity change net of costs alone; the environment's
hold bonus and drawdown penalty are there (``--base-bonus``,
``--drawdown-coef``) but off. With them on — at the environment's defaults
(0.005, 0.5) and at 0.001/0.1 and 0.0002/0.05 — RecurrentPPO on the bundled
data learned never to open a position: costs outweigh any edge it finds, so
staying flat (and collecting the bonus) is the optimum, and a model that
never trades demonstrates nothing. A long discount (gamma 0.999) lets a
position's payoff over many bars reach the action that opened it.

Everything random is seeded from ``--seed`` (python, numpy, torch, the
environments' window sampling) and torch runs a fixed number of threads, so
the same command on the same data and versions reproduces the same weights.

This module is imported when the CLI builds its parser: ``add_arguments``
must stay cheap, so torch, sb3 and gymnasium are imported inside ``run``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokers.base import Bar, utc_datetime
from brokers.errors import ConfigError, DataError

if TYPE_CHECKING:
    from sb3_contrib import RecurrentPPO

    from daemon.config import TradectlConfig
    from strategies.training.env import TradingEnv

DEFAULT_OUT = Path("var/models/model.zip")
DEFAULT_CHECKPOINT_DIR = Path("var/models/checkpoints")
POLICIES = ("mlp-lstm", "regime-gated")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``train`` subcommand's options (the CLI adds ``--config``)."""
    parser.add_argument(
        "--data", type=Path, default=None, help="CSV/Parquet bars (default: config data.path, else the bundled data)"
    )
    parser.add_argument("--timesteps", type=int, default=200_000, help="environment steps to train for")
    parser.add_argument("--seed", type=int, default=7, help="seed for every random generator")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="model zip (metadata goes to <out>.meta.json)")
    parser.add_argument(
        "--checkpoint-every", type=int, default=50_000, help="save a checkpoint every N timesteps (0 = never)"
    )
    parser.add_argument("--checkpoint-dir", type=Path, default=DEFAULT_CHECKPOINT_DIR)
    parser.add_argument("--lstm-size", type=int, default=64, help="LSTM hidden units")
    parser.add_argument("--critic-lstm", action="store_true", help="give the critic its own LSTM (larger file)")
    parser.add_argument(
        "--policy", choices=POLICIES, default="mlp-lstm",
        help="mlp-lstm (MlpLstmPolicy) or regime-gated (a sigmoid gate of the regime features over the price features)",
    )  # fmt: skip
    parser.add_argument("--n-envs", type=int, default=4, help="environments stepped together")
    parser.add_argument("--n-steps", type=int, default=512, help="steps per environment per rollout")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--n-epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=3e-4)
    parser.add_argument("--gamma", type=float, default=0.999, help="long horizon: a position pays out over many bars")
    parser.add_argument("--ent-coef", type=float, default=0.01, help="entropy bonus (keeps the policy exploring)")
    parser.add_argument("--episode-bars", type=int, default=720, help="decisions per training episode")
    parser.add_argument("--trade-units", type=int, default=100_000, help="position size in the environment")
    parser.add_argument(
        "--drawdown-coef", type=float, default=0.0, help="reward penalty per point of new drawdown (env default 0.5)"
    )
    parser.add_argument(
        "--base-bonus", type=float, default=0.0, help="hold bonus the controller steers around (env default 0.005)"
    )
    parser.add_argument("--fast-kp", type=float, default=0.25, help="hold-bonus controller's fast-lane gain")
    parser.add_argument("--slow-kp", type=float, default=0.05, help="hold-bonus controller's slow-lane gain")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="tail of the data held out for evaluation")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (part of what makes runs repeatable)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    from strategies.training.cycles import add_arguments as cycle_arguments

    cycle_arguments(parser)


# ---------------------------------------------------------------------- run
@dataclass
class Prepared:
    """What a training run needs before the model exists: the data, its split, the environments, the metadata."""

    data_path: Path
    symbol: str
    bars: list[Bar]
    train_bars: list[Bar]
    eval_bars: list[Bar]
    env_kwargs: dict[str, Any]
    vec_env: Any  # DummyVecEnv of Monitor(TradingEnv)
    hyper: dict[str, Any]
    base_meta: dict[str, Any]


def prepare(
    args: argparse.Namespace, config: TradectlConfig, *, source: tuple[Path, str, list[Bar]] | None = None
) -> Prepared:
    """Check the arguments, load (or take ``source``: path, symbol, bars) and split the data, build the envs."""
    _check_args(args)
    import torch

    torch.set_num_threads(args.threads)
    data_path, symbol, bars = source if source is not None else load_data(args, config)
    train_bars, eval_bars = _split(bars, args.eval_fraction, args.episode_bars)
    env_kwargs: dict[str, Any] = {
        "cost_model": config.broker.sim.costs.model(),
        "episode_bars": args.episode_bars,
        "trade_units": args.trade_units,
        "drawdown_coef": args.drawdown_coef,
        "base_bonus": args.base_bonus,
        "fast_kp": args.fast_kp,
        "slow_kp": args.slow_kp,
    }
    vec_env = _vec_env(train_bars, env_kwargs, args.n_envs)
    hyper = _hyperparameters(args)
    probe = vec_env.envs[0].unwrapped
    base_meta = _base_metadata(args, config, probe, data_path, symbol, bars, train_bars, eval_bars, hyper)
    return Prepared(data_path, symbol, bars, train_bars, eval_bars, env_kwargs, vec_env, hyper, base_meta)


def new_model(args: argparse.Namespace, prepared: Prepared) -> RecurrentPPO:
    from sb3_contrib import RecurrentPPO

    return RecurrentPPO(
        "MlpLstmPolicy", prepared.vec_env, **prepared.hyper["ppo"], policy_kwargs=_policy_kwargs(args),
        seed=args.seed, device="cpu",
    )


def held_out_metrics(model: RecurrentPPO, prepared: Prepared) -> dict[str, Any]:
    """The greedy evaluation on the held-out tail and on as many of the last training bars, and the
    last training episodes' figures: what the model's metadata records of how it did."""
    train_bars, eval_bars, env_kwargs = prepared.train_bars, prepared.eval_bars, prepared.env_kwargs
    return {
        "timesteps": int(model.num_timesteps),
        **episode_stats(model),
        "train": evaluate(model, train_bars[-(len(eval_bars) or 1) :], env_kwargs) if eval_bars else None,
        "eval": evaluate(model, eval_bars, env_kwargs) if eval_bars else None,
    }


def train(
    args: argparse.Namespace, config: TradectlConfig, *, source: tuple[Path, str, list[Bar]] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Train, evaluate on the held-out tail, save model + metadata to ``args.out``; (metadata, metrics)."""
    from stable_baselines3.common.callbacks import CallbackList

    from strategies.model_file import save_model

    prepared = prepare(args, config, source=source)
    model = new_model(args, prepared)
    base_meta = prepared.base_meta
    callbacks = [_checkpoints(args.checkpoint_every, args.checkpoint_dir, args.out.stem, base_meta)]
    if not args.no_progress:
        callbacks.append(_progress(args.timesteps))
    started = time.monotonic()
    model.learn(total_timesteps=args.timesteps, callback=CallbackList(callbacks))
    seconds = time.monotonic() - started

    metrics: dict[str, Any] = {"train_seconds": round(seconds, 1), **held_out_metrics(model, prepared)}
    meta = save_model(model, args.out, {**base_meta, "training_metrics": metrics})
    return meta, metrics


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    """Train, evaluate on the held-out tail, save model + metadata. Returns the exit code."""
    meta, metrics = train(args, config)
    _print_report(args.out, meta, metrics)
    return 0


def _check_args(args: argparse.Namespace) -> None:
    positive = (
        "timesteps", "lstm_size", "n_envs", "n_steps", "batch_size", "n_epochs", "episode_bars", "threads",
        "trade_units",
    )  # fmt: skip
    bad = [f"--{name.replace('_', '-')}" for name in positive if getattr(args, name) < 1]
    if args.checkpoint_every < 0:
        bad.append("--checkpoint-every")
    if not 0 <= args.eval_fraction < 1:
        bad.append("--eval-fraction")
    if args.drawdown_coef < 0 or args.base_bonus < 0:
        bad.append("--drawdown-coef/--base-bonus")
    if bad:
        raise ConfigError(f"train: out of range: {', '.join(bad)}")


def load_data(args: argparse.Namespace, config: TradectlConfig) -> tuple[Path, str, list[Bar]]:
    """Bars the way the daemon loads them, so training sees what a backtest replays."""
    from brokers.history import BUNDLED_SYMBOL, bundled_dataset_path, load_bars

    data = config.data
    path = args.data or data.path
    if path is None:
        path, symbol = bundled_dataset_path(), BUNDLED_SYMBOL
        bars = load_bars(path, symbol)
    else:
        symbol = data.symbol
        bars = load_bars(
            path,
            symbol,
            columns=data.columns or None,
            timezone=data.timezone,
            stamp=data.stamp,
            bar_seconds=data.bar_seconds,
        )
    bad = [i for i, b in enumerate(bars) if not _finite_bar(b)]
    if bad:
        # The env has no bar guard: one NaN would poison every observation after it.
        raise DataError(f"{path}: {len(bad)} bars with missing or invalid prices (first at row {bad[0]})")
    return Path(path), symbol, bars


def _finite_bar(bar: Bar) -> bool:
    values = (bar.open, bar.high, bar.low, bar.close)
    return all(math.isfinite(v) and v > 0 for v in values) and bar.low <= min(bar.open, bar.close)


def _split(bars: Sequence[Bar], eval_fraction: float, episode_bars: int) -> tuple[list[Bar], list[Bar]]:
    """Training head and evaluation tail; the tail carries the warm-up bars it needs from the head
    so that its first decision is on the first held-out bar."""
    from strategies.features import DEFAULT_FEATURE_CONFIG

    warmup = DEFAULT_FEATURE_CONFIG.warmup_bars
    cut = len(bars) - int(len(bars) * eval_fraction)
    train = list(bars[:cut])
    if len(train) < warmup + episode_bars:
        raise DataError(
            f"{len(train)} training bars; a training window needs warm-up {warmup} + episode {episode_bars}"
        )
    if cut >= len(bars):
        return train, []
    return train, list(bars[cut - warmup + 1 :])


def _vec_env(bars: list[Bar], env_kwargs: dict[str, Any], n_envs: int) -> Any:
    from stable_baselines3.common.monitor import Monitor
    from stable_baselines3.common.vec_env import DummyVecEnv

    from strategies.training.env import TradingEnv

    def make() -> Monitor:
        return Monitor(TradingEnv(bars, **env_kwargs))

    try:
        return DummyVecEnv([make for _ in range(n_envs)])
    except ValueError as exc:  # no gap-free window long enough
        raise DataError(f"training data: {exc}") from None


def _hyperparameters(args: argparse.Namespace) -> dict[str, Any]:
    ppo = {
        "n_steps": args.n_steps,
        "batch_size": args.batch_size,
        "n_epochs": args.n_epochs,
        "learning_rate": args.learning_rate,
        "gamma": args.gamma,
        "ent_coef": args.ent_coef,
    }
    return {
        "ppo": ppo,
        "policy": {"lstm_hidden_size": args.lstm_size, "critic_lstm": args.critic_lstm, "net_arch": [64],
                   "architecture": args.policy},
        "n_envs": args.n_envs,
        "episode_bars": args.episode_bars,
        "timesteps": args.timesteps,
        "eval_fraction": args.eval_fraction,
        "threads": args.threads,
    }


def _policy_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "lstm_hidden_size": args.lstm_size,
        "enable_critic_lstm": args.critic_lstm,
        "net_arch": {"pi": [64], "vf": [64]},
    }
    if args.policy == "regime-gated":
        from strategies.features import FEATURE_NAMES
        from strategies.regime_gate import RegimeGatedExtractor, gate_slices

        price, regime = gate_slices(FEATURE_NAMES)  # the env's observation is the default feature schema
        kwargs["features_extractor_class"] = RegimeGatedExtractor
        kwargs["features_extractor_kwargs"] = {"price": price, "regime": regime}
    return kwargs


def _iso(ts: int) -> str:
    return utc_datetime(ts).isoformat().replace("+00:00", "Z")


def _base_metadata(
    args: argparse.Namespace,
    config: TradectlConfig,
    env: TradingEnv,
    data_path: Path,
    symbol: str,
    bars: list[Bar],
    train_bars: list[Bar],
    eval_bars: list[Bar],
    hyper: dict[str, Any],
) -> dict[str, Any]:
    """Everything but the metrics: what the model was trained on and how."""
    from strategies.model_file import file_sha256

    described = env.describe()
    feature_keys = ("feature_schema_version", "feature_hash", "feature_names", "feature_config", "warmup_bars")
    warmup = described["warmup_bars"]
    return {
        **{k: described[k] for k in feature_keys},
        "action_map": described["action_map"],
        "lstm_hidden_size": args.lstm_size,
        "data_file": data_path.name,
        "data_file_sha256": file_sha256(data_path),
        "data_symbol": symbol,
        "data_bars": len(bars),
        "data_start": _iso(bars[0].ts),
        "data_end": _iso(bars[-1].ts),
        "train_start": _iso(train_bars[0].ts),
        "train_end": _iso(train_bars[-1].ts),
        "eval_start": _iso(eval_bars[warmup - 1].ts) if eval_bars else None,
        "eval_end": _iso(eval_bars[-1].ts) if eval_bars else None,
        "config": {
            "training": hyper,
            "env": {k: v for k, v in described.items() if k not in (*feature_keys, "action_map")},
            "tradectl": config.public_dict(),
        },
        "seed": args.seed,
        "command": "tradectl train " + " ".join(_reproducible_argv(args)),
    }


def _reproducible_argv(args: argparse.Namespace) -> list[str]:
    """The options that change the weights, spelled out (paths and progress output do not)."""
    keep = (
        "timesteps", "seed", "lstm_size", "n_envs", "n_steps", "batch_size", "n_epochs",
        "learning_rate", "gamma", "ent_coef", "episode_bars", "trade_units", "drawdown_coef", "base_bonus", "fast_kp",
        "slow_kp",
        "eval_fraction", "threads",
    )  # fmt: skip
    out = [f"--{name.replace('_', '-')} {getattr(args, name)}" for name in keep]
    if args.critic_lstm:
        out.append("--critic-lstm")
    if args.policy != "mlp-lstm":
        out.append(f"--policy {args.policy}")
    if args.data is not None:
        out.append(f"--data {args.data}")
    return out


# ---------------------------------------------------------------------- evaluation
@dataclass
class _Tally:
    steps: int = 0
    holds: int = 0
    orders: int = 0
    round_trips: int = 0
    start_equity: float = 0.0
    end_equity: float = 0.0
    max_drawdown_pct: float = 0.0
    reward: float = 0.0


def evaluate(model: RecurrentPPO, bars: Sequence[Bar], env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Trade ``bars`` greedily with the live inference path; one episode per gap-free segment.

    Returns return %, orders, round trips, hold rate and the worst drawdown,
    with buy-and-hold over the same decisions for scale.
    """
    import numpy as np

    from strategies.policy import LstmPolicyRunner, StreamStates
    from strategies.training.env import DEFAULT_MAX_GAP_SECONDS, TradingEnv, gap_free_segments

    runner = LstmPolicyRunner(model)
    max_gap = env_kwargs.get("max_gap_seconds", DEFAULT_MAX_GAP_SECONDS)
    warmup = _warmup_bars()
    tally = _Tally()
    bh_return = 0.0
    segments = [(a, b) for a, b in gap_free_segments(bars, max_gap) if b - a + 1 > warmup]
    for first, last in segments:
        seg = list(bars[first : last + 1])
        env = TradingEnv(seg, **{**env_kwargs, "episode_bars": len(seg) - warmup})
        streams = StreamStates(runner)
        obs, _ = env.reset(options={"start": 0})
        start = True
        equity0 = float(env.initial_equity)
        peak = equity0
        equity = equity0
        position = 0.0
        while True:
            probs = streams.decide(("eval",), obs[None, :], (start,))
            start = False
            action = int(np.argmax(probs[0]))
            obs, reward, terminated, truncated, info = env.step(action)
            tally.steps += 1
            tally.holds += action == 0
            tally.reward += reward
            if info["fill_price"] is not None:
                tally.orders += 1
                if position and (info["position"] == 0 or (info["position"] > 0) != (position > 0)):
                    tally.round_trips += 1
            position = info["position"]
            equity = info["equity"]
            peak = max(peak, equity)
            tally.max_drawdown_pct = max(tally.max_drawdown_pct, (peak - equity) / peak * 100.0)
            if terminated or truncated:
                break
        tally.start_equity += equity0
        tally.end_equity += equity
        bh_return += (seg[-1].close / seg[warmup - 1].close - 1.0) * 100.0
    if not tally.steps:
        return {"bars": 0}
    return {
        "bars": tally.steps,
        "segments": len(segments),
        "return_pct": round((tally.end_equity / tally.start_equity - 1.0) * 100.0, 4),
        "buy_and_hold_pct": round(bh_return / len(segments), 4),
        "orders": tally.orders,
        "round_trips": tally.round_trips,
        "hold_rate": round(tally.holds / tally.steps, 4),
        "max_drawdown_pct": round(tally.max_drawdown_pct, 4),
        "mean_reward": round(tally.reward / tally.steps, 6),
        "start": _iso(bars[warmup - 1].ts),
        "end": _iso(bars[-1].ts),
    }


def _warmup_bars() -> int:
    from strategies.features import DEFAULT_FEATURE_CONFIG

    return DEFAULT_FEATURE_CONFIG.warmup_bars


def episode_stats(model: RecurrentPPO) -> dict[str, Any]:
    """Mean reward and length of the last training episodes (sb3 keeps the last 100)."""
    infos = list(model.ep_info_buffer or [])
    if not infos:
        return {"episodes": 0}
    rewards = [float(i["r"]) for i in infos]
    return {
        "last_episodes": len(infos),
        "mean_episode_reward": round(sum(rewards) / len(rewards), 4),
        "mean_episode_length": round(sum(float(i["l"]) for i in infos) / len(infos), 1),
    }


# ---------------------------------------------------------------------- callbacks
def _progress(total: int) -> Any:
    """A tqdm bar over timesteps (sb3's own progress bar needs rich, which we do not ship)."""
    from stable_baselines3.common.callbacks import BaseCallback
    from tqdm import tqdm

    class _Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.bar = tqdm(total=total, unit="step", file=sys.stderr, mininterval=0.5, desc="train")

        def _on_step(self) -> bool:
            self.bar.update(self.model.num_timesteps - self.bar.n)
            return True

        def _on_training_end(self) -> None:
            self.bar.close()

    return _Progress()


def _checkpoints(every: int, directory: Path, stem: str, base_meta: dict[str, Any]) -> Any:
    """Every ``every`` timesteps a loadable model, with its metadata, in ``directory``."""
    from stable_baselines3.common.callbacks import BaseCallback

    from strategies.model_file import save_model

    class _Checkpoints(BaseCallback):
        def _init_callback(self) -> None:
            self.next_at = every

        def _on_step(self) -> bool:
            if every and self.model.num_timesteps >= self.next_at:
                self.next_at += every
                steps = self.model.num_timesteps
                meta = {**base_meta, "training_metrics": {"timesteps": steps, "checkpoint": True}}
                save_model(self.model, directory / f"{stem}-{steps}.zip", meta)
            return True

    return _Checkpoints()


def _print_report(out: Path, meta: dict[str, Any], metrics: dict[str, Any]) -> None:
    print(f"model    {out}  ({meta['model_bytes']:,} bytes, sha256 {meta['sha256'][:16]}…)")
    print(f"features {meta['feature_hash'][:16]}…  obs {meta['obs_dim']}  actions {','.join(meta['action_map'])}")
    print(f"trained  {metrics['timesteps']:,} steps in {metrics['train_seconds']} s, seed {meta['seed']}")
    for name in ("train", "eval"):
        m = metrics.get(name)
        if m and m.get("bars"):
            print(
                f"{name:8s} {m['start'][:10]}..{m['end'][:10]}: return {m['return_pct']:+.2f}% "
                f"(buy&hold {m['buy_and_hold_pct']:+.2f}%), {m['orders']} orders, {m['round_trips']} round trips, "
                f"hold rate {m['hold_rate']:.2f}, max drawdown {m['max_drawdown_pct']:.2f}%"
            )
