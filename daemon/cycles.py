"""`tradectl train --cycles N`: the daemon's side of cyclic training — the store and the evaluation.

``strategies.training.cycles`` owns the loop and its rules; it cannot reach
the store or the backtest pipeline (strategies never import the daemon), so
this module hands it both:

* the ledger: one ``cycle_metrics`` row per finished cycle in the store
  (``--db``, default ``store.path``), under a ``runs`` row of mode ``train``;
* the evaluation: each checkpoint judged exactly as ``tradectl validate``
  judges a model (``daemon.validate.validate``: the held-out bars through
  ``BacktestRunner`` beside the SMA baseline and buy-and-hold, then the
  gates), so "gates passed" in a cycle row means what it means there.

The run directory (``--run-dir``, default ``var/runs/<out stem>``) holds the
checkpoints and ``run.json`` (the run id, its database and the settings). A
directory with ``run.json`` is resumed automatically from its last recorded
cycle; ``--resume`` insists on one. A run directory is never resumed under
different settings: the weights would come from a different recipe than the
record says.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from brokers.errors import ConfigError, ModelError
from daemon.store import Store

if TYPE_CHECKING:
    from daemon.config import TradectlConfig
    from strategies.training.command import Prepared
    from strategies.training.cycles import CycleEvaluation, CycleOutcome, CycleSettings

__all__ = ["RUN_FILE", "StoreLedger", "run", "validation_evaluator"]

RUN_FILE = "run.json"
_T = TypeVar("_T")


class StoreLedger:
    """``cycle_metrics`` rows of one training run, through the store (each call opens and closes it)."""

    def __init__(self, db: Path, run_id: int) -> None:
        self.db = db
        self.run_id = run_id

    def _call(self, work: Callable[[Store], Awaitable[_T]]) -> _T:
        async def go() -> _T:
            store = await Store.open(self.db)
            try:
                return await work(store)
            finally:
                await store.close()

        return asyncio.run(go())

    def done(self) -> list[dict[str, Any]]:
        return self._call(lambda store: store.cycles(self.run_id))

    def record(self, row: dict[str, Any]) -> None:
        self._call(lambda store: store.record_cycle(self.run_id, row))

    def finish(self, summary: dict[str, Any]) -> None:
        async def end(store: Store) -> None:
            store.run_id = self.run_id
            await store.end_run(summary)

        self._call(end)

    @classmethod
    def begin(cls, db: Path, config: TradectlConfig, record: dict[str, Any]) -> StoreLedger:
        async def begin(store: Store) -> int:
            return await store.begin_run("train", config.fingerprint(), record)

        return cls(db, cls(db, 0)._call(begin))


def validation_evaluator(config: TradectlConfig, prepared: Prepared) -> Callable[[Path], CycleEvaluation]:
    """Judge a checkpoint like ``tradectl validate`` does, on the run's own bars after its training span."""
    from daemon.validate import validate
    from strategies.training.cycles import CycleEvaluation

    def evaluate(checkpoint: Path) -> CycleEvaluation:
        result = validate(config, checkpoint, bars=prepared.bars)
        curve, evidence = result.model_run.curve, result.evidence
        failed = tuple(g.name for g in result.gates if g.required and not g.passed)
        return CycleEvaluation(
            sharpe=curve.sharpe, max_drawdown_pct=curve.max_drawdown_pct, trades_per_day=evidence.trades_per_day,
            hold_rate=evidence.hold_rate, return_pct=curve.total_return_pct,
            gates_passed=sum(g.passed for g in result.gates), gates_total=len(result.gates), gates_failed=failed,
        )  # fmt: skip

    return evaluate


def _recipe(args: argparse.Namespace, prepared: Prepared, settings: CycleSettings) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    return {"command": prepared.base_meta["command"], "cycles": settings.as_dict(),
            "data_file_sha256": prepared.base_meta["data_file_sha256"]}


def _open_ledger(
    args: argparse.Namespace, config: TradectlConfig, run_dir: Path, recipe: dict[str, Any]
) -> tuple[StoreLedger, bool]:
    """The run's ledger: the one ``run.json`` names (resuming), or a new run. Returns (ledger, resumed)."""
    record_path = run_dir / RUN_FILE
    if record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            db, run_id, recorded = Path(record["db"]), int(record["run_id"]), record["recipe"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{record_path} is unreadable ({e}); remove the run directory to start afresh") from None
        if recorded != recipe:
            differ = sorted(k for k in recipe if recorded.get(k) != recipe[k])
            raise ConfigError(
                f"{run_dir} holds a training run with other settings ({', '.join(differ)} differ); resume it with "
                "the same options or choose another --run-dir"
            )
        if args.db is not None and Path(args.db).resolve() != db.resolve():
            raise ConfigError(f"{run_dir} records its cycles in {db}, not in {args.db}")
        return StoreLedger(db, run_id), True
    if args.resume:
        raise ConfigError(f"--resume: {run_dir} holds no training run ({RUN_FILE} missing)")
    db = Path(args.db or config.store.path)
    ledger = StoreLedger.begin(db, config, {"run_dir": str(run_dir), **recipe})
    run_dir.mkdir(parents=True, exist_ok=True)
    tmp = record_path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"run_id": ledger.run_id, "db": str(db), "recipe": recipe}, indent=2) + "\n")
    os.replace(tmp, record_path)
    return ledger, False


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    """Train in cycles (resuming a recorded run), print the cycle table, save the best cycle's model to --out."""
    from strategies.training.command import prepare
    from strategies.training.cycles import settings_from_args, train_cycles

    settings = settings_from_args(args)
    prepared = prepare(args, config)
    run_dir = args.run_dir or Path("var/runs") / args.out.stem
    ledger, resumed = _open_ledger(args, config, run_dir, _recipe(args, prepared, settings))
    if resumed:
        print(f"resuming training run {ledger.run_id} in {run_dir}", file=sys.stderr)
    if args.base_bonus == 0:
        print("note: --base-bonus is 0, so the hold-rate schedule does not change the reward", file=sys.stderr)
    outcome = train_cycles(args, prepared, settings, run_dir, ledger, validation_evaluator(config, prepared))
    meta = _save_best(args, outcome)
    ledger.finish(_summary(outcome, meta))
    _print(outcome, ledger, run_dir, args.out, meta)
    return 0


def _save_best(args: argparse.Namespace, outcome: CycleOutcome) -> dict[str, Any] | None:
    """The best cycle's checkpoint, re-saved as ``--out`` with the cycle table in its metadata."""
    from sb3_contrib import RecurrentPPO

    from strategies.model_file import read_metadata, save_model

    best = outcome.best_checkpoint
    if best is None:
        return None
    meta = read_metadata(best)
    model = RecurrentPPO.load(best, device="cpu")
    cycle = next(r for r in outcome.rows if r["checkpoint"] == str(best))
    metrics = {**meta["training_metrics"], "selected_cycle": cycle["cycle"], "selected_checkpoint_sha256":
               cycle["model_sha256"], "cycles": outcome.rows, "stop": outcome.stop.explain()}
    keep = {k: v for k, v in meta.items() if k not in ("sha256", "model_file", "model_bytes", "created_at")}
    return save_model(model, args.out, {**keep, "training_metrics": metrics})


def _summary(outcome: CycleOutcome, meta: dict[str, Any] | None) -> dict[str, Any]:
    stop = outcome.stop
    return {
        "cycles": len(outcome.rows), "stop_reason": None if stop.reason is None else stop.reason.value,
        "stop": stop.explain(), "best_cycle": stop.best_cycle, "resumed_from": outcome.resumed_from,
        "model_sha256": None if meta is None else meta["sha256"],
    }  # fmt: skip


def _print(
    outcome: CycleOutcome, ledger: StoreLedger, run_dir: Path, out: Path, meta: dict[str, Any] | None
) -> None:
    from strategies.training.cycles import render_rows

    print(render_rows(outcome.rows))
    print(outcome.stop.explain())
    print(f"cycles   run {ledger.run_id} in {ledger.db} (cycle_metrics), checkpoints in {run_dir}")
    if meta is not None:
        selected = meta["training_metrics"]["selected_cycle"]
        print(f"model    {out}  (cycle {selected}, sha256 {meta['sha256'][:16]}…)")
