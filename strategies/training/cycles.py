"""Cyclic training: one model trained in cycles, each ending in a checkpoint and an evaluation.

A single long ``learn`` call hands back one model at the end, however it got
there. Training in cycles (the seed system's "Stairways") stops after every
``steps_per_cycle`` timesteps to save a checkpoint and judge it, so that:

* the model keeps learning across cycles (``learn(reset_num_timesteps=False)``:
  the timestep count, learning-rate schedule and optimizer state carry on);
* each cycle can ask for different behaviour: a per-cycle hold-rate target
  schedule (for example 0.75 -> 0.25) moves the dual-lane controller's target,
  so early cycles are paid to wait and later ones to act;
* training stops once it stops improving: after ``patience`` cycles in a row
  without at least ``min_improvement`` (relative) gain in the selection
  metric over the best earlier cycle, provided ``min_cycles`` have run;
* a killed run resumes from its last recorded cycle, and no cycle is recorded
  twice.

The selection metric, ``rolling-sharpe`` by default, is the Sharpe ratio of
the rewards of the last (up to) 100 training episodes (sb3 keeps exactly
those in ``ep_info_buffer``): mean / sample std, not annualised. sb3 does
not save that buffer with the model, so after a resume the figure covers the
resumed cycle's episodes only. ``eval-sharpe`` selects on the annualised
Sharpe of the held-out evaluation instead.

This module owns the loop and its rules; the caller supplies the two things
that live in the daemon (``daemon.cycles``): ``evaluate`` (a checkpoint
through the backtest pipeline and the validation gates) and a ``Ledger`` (the
``cycle_metrics`` rows in the store). A row is written only after its
checkpoint is on disk and evaluated: a row means the cycle is done.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from brokers.errors import ConfigError, ModelError

if TYPE_CHECKING:
    from sb3_contrib import RecurrentPPO

    from strategies.training.command import Prepared

__all__ = [
    "SELECTION_METRICS",
    "CycleEvaluation",
    "CycleOutcome",
    "CycleSettings",
    "EarlyStop",
    "Ledger",
    "StopReason",
    "add_arguments",
    "checkpoint_path",
    "hold_schedule",
    "improvement",
    "parameter_drift",
    "parameter_vector",
    "rolling_sharpe",
    "settings_from_args",
    "train_cycles",
]

SELECTION_METRICS = ("rolling-sharpe", "eval-sharpe")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The cyclic options of ``tradectl train`` (without ``--cycles`` it trains in one go)."""
    group = parser.add_argument_group("cyclic training (--cycles N)")
    group.add_argument("--cycles", type=int, default=None, help="train in N cycles, each checkpointed and evaluated")
    group.add_argument("--steps-per-cycle", type=int, default=6000, help="timesteps per cycle")
    group.add_argument(
        "--hold-schedule", default="0.75:0.25",
        help="per-cycle hold-rate target: START:END (linear over the cycles) or one value per cycle, comma-separated",
    )  # fmt: skip
    group.add_argument("--min-cycles", type=int, default=3, help="cycles always run before early stopping may stop")
    group.add_argument("--patience", type=int, default=2, help="stop after N cycles in a row without improvement")
    group.add_argument(
        "--min-improvement", type=float, default=0.01, help="relative gain of the selection metric that counts (0.01)"
    )
    group.add_argument("--select", choices=SELECTION_METRICS, default="rolling-sharpe", help="selection metric")
    group.add_argument("--run-dir", type=Path, default=None, help="checkpoints and run record (default var/runs/<out>)")
    group.add_argument("--resume", action="store_true", help="require an interrupted run in --run-dir and resume it")
    group.add_argument("--db", type=Path, default=None, help="store for cycle_metrics (default: config store.path)")


# ---------------------------------------------------------------------- settings
def hold_schedule(spec: str, cycles: int) -> tuple[float, ...]:
    """One hold-rate target per cycle from ``START:END`` (linear, both included) or ``a,b,c,...``."""
    try:
        if ":" in spec:
            start, end = (float(v) for v in spec.split(":"))
            values = tuple(float(v) for v in np.linspace(start, end, cycles)) if cycles > 1 else (start,)
        else:
            values = tuple(float(v) for v in spec.split(","))
    except ValueError:
        raise ConfigError(f"--hold-schedule {spec!r}: expected START:END or comma-separated numbers") from None
    if len(values) != cycles:
        raise ConfigError(f"--hold-schedule {spec!r} gives {len(values)} targets for {cycles} cycles")
    if not all(0.0 <= v <= 1.0 for v in values):
        raise ConfigError(f"--hold-schedule {spec!r}: hold-rate targets must lie in [0, 1]")
    return tuple(round(v, 6) for v in values)


@dataclass(frozen=True, slots=True)
class CycleSettings:
    cycles: int
    steps_per_cycle: int
    hold_targets: tuple[float, ...]
    min_cycles: int
    patience: int
    min_improvement: float
    selection: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "cycles": self.cycles, "steps_per_cycle": self.steps_per_cycle, "hold_targets": list(self.hold_targets),
            "min_cycles": self.min_cycles, "patience": self.patience, "min_improvement": self.min_improvement,
            "selection": self.selection,
        }  # fmt: skip


def settings_from_args(args: argparse.Namespace) -> CycleSettings:
    bad = [
        flag for flag, value, low in (
            ("--cycles", args.cycles, 1), ("--steps-per-cycle", args.steps_per_cycle, 1),
            ("--min-cycles", args.min_cycles, 1), ("--patience", args.patience, 1),
        ) if value < low
    ]  # fmt: skip
    if args.min_improvement < 0:
        bad.append("--min-improvement")
    if bad:
        raise ConfigError(f"train: out of range: {', '.join(bad)}")
    if args.eval_fraction <= 0:
        raise ConfigError("train --cycles: every cycle is evaluated on held-out bars; --eval-fraction must be > 0")
    return CycleSettings(
        cycles=args.cycles, steps_per_cycle=args.steps_per_cycle,
        hold_targets=hold_schedule(args.hold_schedule, args.cycles), min_cycles=args.min_cycles,
        patience=args.patience, min_improvement=args.min_improvement, selection=args.select,
    )  # fmt: skip


# ---------------------------------------------------------------------- figures
def rolling_sharpe(model: RecurrentPPO) -> float | None:
    """Sharpe of the last (up to 100) training episodes' rewards: mean / sample std; None under two episodes
    or with no spread."""
    rewards = np.array([float(info["r"]) for info in (model.ep_info_buffer or ())], dtype=np.float64)
    if len(rewards) < 2 or np.ptp(rewards) == 0:
        return None
    return float(rewards.mean() / rewards.std(ddof=1))


def parameter_vector(model: RecurrentPPO) -> np.ndarray:
    """Every policy parameter (actor, critic, LSTMs, extractor) as one float64 vector."""
    return np.concatenate([p.detach().cpu().double().numpy().ravel() for p in model.policy.parameters()])


def parameter_drift(previous: np.ndarray, current: np.ndarray) -> float:
    """Relative L2 change ``|current - previous| / |previous|`` (0.15 = the parameters moved 15 %)."""
    if previous.shape != current.shape:
        raise ModelError(f"parameter vectors differ in shape: {previous.shape} vs {current.shape}")
    norm = float(np.linalg.norm(previous))
    return float(np.linalg.norm(current - previous)) / norm if norm else float("inf")


def improvement(value: float | None, best: float | None) -> float | None:
    """Relative gain of ``value`` over the best earlier value, scaled by its magnitude; None when either is
    missing (the first defined value is the baseline)."""
    if value is None or best is None:
        return None
    return (value - best) / max(abs(best), 1e-12)


class StopReason(Enum):
    """Why a cyclic training ended (stored in the run's summary)."""

    COMPLETED = "completed"  # every scheduled cycle ran
    NO_IMPROVEMENT = "no_improvement"  # early stop


class EarlyStop:
    """The early-stopping rule as an explicit state: best value so far and cycles in a row without gain.

    A cycle improves when its selection value is the first defined one (the
    baseline) or beats the best earlier value by at least ``min_improvement``
    relative; an undefined value never improves. Training stops once
    ``stalled >= patience`` at a cycle ``>= min_cycles``.
    """

    def __init__(self, settings: CycleSettings) -> None:
        self.settings = settings
        self.best: float | None = None
        self.best_cycle: int | None = None
        self.stalled = 0
        self.last_cycle = 0
        self.reason: StopReason | None = None

    def observe(self, cycle: int, value: float | None) -> float | None:
        """Take one cycle's selection value; returns its improvement over the best before it."""
        gain = improvement(value, self.best)
        baseline = value is not None and self.best is None
        improved = baseline or (gain is not None and gain >= self.settings.min_improvement)
        if value is not None and (self.best is None or value > self.best):
            self.best, self.best_cycle = value, cycle
        self.stalled = 0 if improved else self.stalled + 1
        self.last_cycle = cycle
        s = self.settings
        if cycle >= s.min_cycles and self.stalled >= s.patience:
            self.reason = StopReason.NO_IMPROVEMENT
        elif cycle >= s.cycles:
            self.reason = StopReason.COMPLETED
        return gain

    @property
    def stopped(self) -> bool:
        return self.reason is not None

    def explain(self) -> str:
        s = self.settings
        if self.reason is StopReason.NO_IMPROVEMENT:
            return (
                f"stopped early after cycle {self.last_cycle}: {self.stalled} cycle(s) in a row without a "
                f"{s.min_improvement:.2%} gain in {s.selection} (patience {s.patience}, minimum {s.min_cycles} cycles)"
            )
        if self.reason is StopReason.COMPLETED:
            return f"completed all {s.cycles} cycles"
        return f"running: {self.last_cycle} of {s.cycles} cycles done"


# ---------------------------------------------------------------------- the caller's side
@dataclass(frozen=True, slots=True)
class CycleEvaluation:
    """A checkpoint's figures on held-out bars (the daemon fills it from ``tradectl validate``'s run)."""

    sharpe: float | None
    max_drawdown_pct: float
    trades_per_day: float | None
    hold_rate: float | None
    return_pct: float
    gates_passed: int
    gates_total: int
    gates_failed: tuple[str, ...]  # required gates that failed


class Ledger(Protocol):
    """Where cycle rows live (``cycle_metrics``)."""

    def done(self) -> list[dict[str, Any]]:
        """The rows recorded so far, first cycle first."""
        ...

    def record(self, row: dict[str, Any]) -> None: ...


Evaluate = Callable[[Path], CycleEvaluation]


def checkpoint_path(run_dir: Path, cycle: int) -> Path:
    return run_dir / f"cycle-{cycle:03d}.zip"


@dataclass
class CycleOutcome:
    rows: list[dict[str, Any]]
    stop: EarlyStop
    resumed_from: int  # cycles already recorded when this process started
    best_checkpoint: Path | None = None
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- the loop
def train_cycles(
    args: argparse.Namespace,
    prepared: Prepared,
    settings: CycleSettings,
    run_dir: Path,
    ledger: Ledger,
    evaluate: Evaluate,
) -> CycleOutcome:
    """Run the cycles not yet recorded in ``ledger`` (all of them for a new run); returns every row."""
    from strategies.model_file import file_sha256, save_model

    rows = ledger.done()
    if [r["cycle"] for r in rows] != list(range(1, len(rows) + 1)):
        raise ModelError(f"{run_dir}: recorded cycles {[r['cycle'] for r in rows]} are not 1..n")
    stop = EarlyStop(settings)
    for row in rows:
        stop.observe(row["cycle"], row["selection_value"])
    outcome = CycleOutcome(rows=list(rows), stop=stop, resumed_from=len(rows))
    if stop.stopped:
        outcome.best_checkpoint = _best(outcome)
        return outcome
    run_dir.mkdir(parents=True, exist_ok=True)
    model = _resume_model(prepared, rows) if rows else _new_model(args, prepared)
    previous = parameter_vector(model)
    bar = None if args.no_progress else _progress_bar(settings, len(rows))
    try:
        for cycle in range(len(rows) + 1, settings.cycles + 1):
            target = settings.hold_targets[cycle - 1]
            for env in prepared.vec_env.envs:
                env.unwrapped.set_hold_rate_target(target)
            callback = None if bar is None else _progress_callback(bar, cycle, settings.cycles)
            model.learn(settings.steps_per_cycle, reset_num_timesteps=False, callback=callback)
            path = checkpoint_path(run_dir, cycle)
            meta = save_model(model, path, _checkpoint_meta(prepared, model, cycle, target))
            current = parameter_vector(model)
            evaluation = evaluate(path)
            value = rolling_sharpe(model) if settings.selection == "rolling-sharpe" else evaluation.sharpe
            gain = stop.observe(cycle, value)
            row = {
                "cycle": cycle, "ts": int(time.time()), "timesteps": int(model.num_timesteps),
                "hold_rate_target": target, "selection_metric": settings.selection, "selection_value": value,
                "improvement": gain, "sharpe": evaluation.sharpe, "max_drawdown_pct": evaluation.max_drawdown_pct,
                "trades_per_day": evaluation.trades_per_day, "hold_rate": evaluation.hold_rate,
                "return_pct": evaluation.return_pct, "parameter_drift": parameter_drift(previous, current),
                "gates_passed": evaluation.gates_passed, "gates_total": evaluation.gates_total,
                "gates_failed": ",".join(evaluation.gates_failed), "model_sha256": meta["sha256"],
                "checkpoint": str(path),
            }  # fmt: skip
            if file_sha256(path) != meta["sha256"]:  # the row vouches for this file: check it landed whole
                raise ModelError(f"checkpoint {path} does not match the SHA-256 just written")
            ledger.record(row)
            outcome.rows.append(row)
            previous = current
            if bar is not None:
                bar.write(_row_line(row), file=sys.stderr)  # stdout gets the whole table at the end
            if stop.stopped:
                break
    finally:
        if bar is not None:
            bar.close()
    outcome.best_checkpoint = _best(outcome)
    return outcome


def _new_model(args: argparse.Namespace, prepared: Prepared) -> RecurrentPPO:
    from strategies.training.command import new_model

    return new_model(args, prepared)


def _resume_model(prepared: Prepared, rows: Sequence[dict[str, Any]]) -> RecurrentPPO:
    """The last recorded cycle's checkpoint, after proving it is the file its row vouches for."""
    from sb3_contrib import RecurrentPPO

    from strategies.model_file import file_sha256

    last = rows[-1]
    path = Path(last["checkpoint"])
    if not path.is_file():
        raise ModelError(f"cannot resume: checkpoint {path} of cycle {last['cycle']} is missing")
    if file_sha256(path) != last["model_sha256"]:
        raise ModelError(
            f"cannot resume: checkpoint {path} does not match the SHA-256 recorded for cycle {last['cycle']}"
        )
    try:
        return RecurrentPPO.load(path, env=prepared.vec_env, device="cpu")
    except Exception as e:  # a torch/zip failure, named, not a traceback
        raise ModelError(f"cannot resume from {path} ({type(e).__name__}: {e})") from e


def _checkpoint_meta(prepared: Prepared, model: RecurrentPPO, cycle: int, target: float) -> dict[str, Any]:
    from strategies.training.command import episode_stats

    metrics = {"timesteps": int(model.num_timesteps), "cycle": cycle, "hold_rate_target": target,
               **episode_stats(model)}
    return {**prepared.base_meta, "training_metrics": metrics}


def _best(outcome: CycleOutcome) -> Path | None:
    """The checkpoint of the cycle with the best selection value (the last cycle when none is defined)."""
    if not outcome.rows:
        return None
    best = outcome.stop.best_cycle or outcome.rows[-1]["cycle"]
    return Path(outcome.rows[best - 1]["checkpoint"])


def _progress_bar(settings: CycleSettings, done: int) -> Any:
    from tqdm import tqdm

    total = settings.cycles * settings.steps_per_cycle
    return tqdm(total=total, initial=done * settings.steps_per_cycle, unit="step", file=sys.stderr, mininterval=0.5)


def _progress_callback(bar: Any, cycle: int, cycles: int) -> Any:
    """Moves the bar with the timesteps of this cycle (sb3 rounds a cycle up to whole rollouts)."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _Progress(BaseCallback):
        def _on_training_start(self) -> None:
            self.start = self.model.num_timesteps
            self.base = bar.n
            bar.set_description(f"cycle {cycle}/{cycles}")

        def _on_step(self) -> bool:
            bar.n = min(bar.total, self.base + self.model.num_timesteps - self.start)
            bar.refresh()
            return True

    return _Progress()


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _row_line(row: dict[str, Any]) -> str:
    gain = row["improvement"]
    return (
        f"cycle {row['cycle']:>3}  steps {row['timesteps']:>8,}  target hold {row['hold_rate_target']:.2f}  "
        f"{row['selection_metric']} {_fmt(row['selection_value'], '+.3f')} "
        f"({'baseline' if gain is None else f'{gain:+.1%}'})  Sharpe {_fmt(row['sharpe'], '+.2f')}  "
        f"max dd {row['max_drawdown_pct']:.2f}%  trades/day {_fmt(row['trades_per_day'], '.2f')}  "
        f"hold {_fmt(row['hold_rate'], '.2f')}  drift {row['parameter_drift']:.3f}  "
        f"gates {row['gates_passed']}/{row['gates_total']}  {row['model_sha256'][:12]}"
    )


def render_rows(rows: Sequence[dict[str, Any]]) -> str:
    """The cycle table as the command prints it."""
    return "\n".join(_row_line(r) for r in rows)
