"""`tradectl tune --grid grid.yaml`: a hyperparameter grid on Ray Tune, each trial a cyclic training run.

The grid file names ``tradectl train`` options (dashes or underscores)::

    grid:                 # every combination is one trial
      learning-rate: [0.0003, 0.001]
      ent-coef: [0.0, 0.01]
      lstm-size: [16, 32]
      fast-kp: [0.25]     # the hold-bonus controller's gains
      drawdown-coef: [0.0, 0.1]
    train:                # options every trial shares (the budget, the data)
      cycles: 2
      steps-per-cycle: 2048
      data: bars.csv

Each trial is ``tradectl train --cycles`` with its options (``--cycles 2``
when the file names none): the cycle machinery of
``strategies.training.cycles`` trains one model across cycles, checkpoints it
and judges every checkpoint exactly as ``tradectl validate`` does (held-out
bars through ``BacktestRunner`` beside the SMA baseline and buy-and-hold,
then the gates). Trials run in Ray workers and hand their cycle rows back;
the driver alone writes the store — each trial's cycles as a training run's
``cycle_metrics`` rows, then one ``tune_trials`` row per trial under the
search's ``runs`` row (mode ``tune``) — so concurrent trials never race for
SQLite. The best trial's selected checkpoint (most gates passed, then held-out
Sharpe, then return) is registered in the model registry, never promoted.

Ray is an optional extra (``pip install 'tradectl[tune]'``). By default a
local Ray is started for this command (``--num-cpus``, default 2; no
dashboard; workers' output kept out of the terminal; one CPU per trial);
``--address`` joins an existing cluster instead, whose workers need tradectl
installed and the data file at the same path.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from brokers.errors import ConfigError, DataError, TradectlError

if TYPE_CHECKING:
    from daemon.config import TradectlConfig

__all__ = ["INSTALL_HINT", "Grid", "add_arguments", "load_grid", "run", "run_trial"]

INSTALL_HINT = "tradectl tune needs Ray Tune, an optional extra: pip install 'tradectl[tune]'"
DEFAULT_CYCLES = 2
_PATH_OPTIONS = ("data",)  # made absolute: Ray runs each trial in a directory of its own


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``tune`` subcommand's options (the CLI adds ``--config``)."""
    parser.add_argument("--grid", type=Path, required=True, help="YAML: grid (option: [values]) and train (shared)")
    parser.add_argument("--address", default=None, help="an existing Ray cluster (default: start a local Ray)")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the local Ray (one trial per CPU)")
    parser.add_argument("--db", type=Path, default=None, help="store for trials, cycles and the registry (store.path)")
    parser.add_argument("--out-dir", type=Path, default=None, help="trial checkpoints (default var/tune/<grid name>)")
    parser.add_argument("--json", action="store_true", help="print the trials as JSON")


# ---------------------------------------------------------------------- the grid file
class _TrainArgs(argparse.ArgumentParser):
    """``tradectl train``'s own parser: a grid option is checked and typed exactly as on the command line."""

    def error(self, message: str) -> Any:  # argparse would print usage and exit
        raise ConfigError(message)


def _train_parser() -> _TrainArgs:
    from strategies.training.command import add_arguments as train_arguments

    parser = _TrainArgs(prog="tradectl train", add_help=False)
    train_arguments(parser)
    return parser


@dataclass(frozen=True, slots=True)
class Grid:
    """The trials of one search: each one's grid point and its full ``tradectl train`` argument list."""

    path: Path
    points: list[dict[str, Any]]
    argvs: list[list[str]]


def _flag(name: str) -> str:
    return "--" + str(name).replace("_", "-")


def _argv(options: Mapping[str, Any], parser: _TrainArgs) -> list[str]:
    flags = {a.dest: a for a in parser._actions}
    out: list[str] = []
    for name, value in options.items():
        action = flags.get(str(name).replace("-", "_"))
        if action is None or not action.option_strings:
            raise ConfigError(f"{name!r} is not a tradectl train option")
        if action.nargs == 0:  # a switch (--critic-lstm): true adds it, false leaves it out
            if value is True:
                out.append(_flag(name))
            elif value is not False:
                raise ConfigError(f"{name}: {value!r}: this switch takes true or false")
            continue
        if isinstance(value, Path) or (action.dest in _PATH_OPTIONS and value is not None):
            value = Path(value).resolve()
        out += [_flag(name), str(value)]
    return out


def load_grid(path: Path) -> Grid:
    """Read and check the grid: every option must be one ``tradectl train`` takes, every value one it accepts."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the grid: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("grid"), dict) or not doc["grid"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty 'grid:' (option: [values, ...])")
    unknown = sorted(set(doc) - {"grid", "train"})
    if unknown:
        raise ConfigError(f"{path}: unknown section(s) {unknown}: a grid file has 'grid' and 'train'")
    shared = doc.get("train") or {}
    if not isinstance(shared, dict):
        raise ConfigError(f"{path}: 'train:' must map options to values")
    grid: dict[str, list[Any]] = {}
    for name, values in doc["grid"].items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{name}: expected a non-empty list of values")
        grid[str(name)] = values
    overlap = sorted(set(grid) & set(map(str, shared)))
    if overlap:
        raise ConfigError(f"{path}: {overlap} both in grid and train")
    if not any(str(k).replace("-", "_") == "cycles" for k in shared):
        shared = {**shared, "cycles": DEFAULT_CYCLES}
    parser = _train_parser()
    points, argvs = [], []
    for combo in itertools.product(*grid.values()):
        point = dict(zip(grid, combo, strict=True))
        try:
            argv = _argv({**shared, **point}, parser)
            parser.parse_args(argv)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        points.append(point)
        argvs.append(argv)
    return Grid(path, points, argvs)


# ---------------------------------------------------------------------- one trial (in a Ray worker)
class _Rows:
    """An in-memory cycle ledger: the trial hands its rows back and the driver records them."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def done(self) -> list[dict[str, Any]]:
        return list(self.rows)

    def record(self, row: dict[str, Any]) -> None:
        self.rows.append(row)


def run_trial(argv: Sequence[str], config_doc: dict[str, Any], run_dir: str) -> dict[str, Any]:
    """Train in cycles with ``argv`` (``tradectl train`` options) and judge every cycle; the rows and the
    selected checkpoint, or the one-line error that stopped it."""
    from daemon.config import TradectlConfig
    from daemon.cycles import validation_evaluator
    from daemon.logs import configure_logging
    from strategies.training.command import prepare
    from strategies.training.cycles import settings_from_args, train_cycles

    try:
        config = TradectlConfig(**config_doc)
        configure_logging("error", config.logging.json_output)  # each evaluation's risk log stays out
        args = _train_parser().parse_args([*argv, "--no-progress"])
        settings = settings_from_args(args)
        prepared = prepare(args, config)
        ledger = _Rows()
        outcome = train_cycles(args, prepared, settings, Path(run_dir), ledger,
                               validation_evaluator(config, prepared))
    except TradectlError as exc:
        return {"error": str(exc)}
    best = outcome.best_checkpoint
    return {
        "rows": outcome.rows,
        "stop": outcome.stop.explain(),
        "best_checkpoint": None if best is None else str(best),
        "command": prepared.base_meta["command"],
        "error": None,
    }


def _ray_trial(params: dict[str, Any]) -> dict[str, Any]:
    """Ray's entry point: the trial's own ``run_trial``, its result as JSON (Ray keeps metrics flat)."""
    spec = params["spec"]
    trial = params["trial"]
    result = run_trial(spec["argvs"][trial], spec["config"], spec["run_dirs"][trial])
    return {"trial": trial, "payload": json.dumps(result, default=str)}


# ---------------------------------------------------------------------- the driver
def _import_ray() -> Any:
    try:
        import ray
        from ray import tune  # noqa: F401  (the extra installs both)
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return ray


def _search(grid: Grid, config: TradectlConfig, out_dir: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every trial on Ray; their results in trial order (a crashed trial: an error result)."""
    ray = _import_ray()
    from ray import tune

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    started_here = not ray.is_initialized()
    if started_here:
        quiet: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
        if args.address:
            ray.init(address=args.address, **quiet)
        else:
            ray.init(num_cpus=args.num_cpus, include_dashboard=False, **quiet)
    run_dirs = [str((out_dir / f"trial-{i:02d}").resolve()) for i in range(len(grid.argvs))]
    spec = {"argvs": grid.argvs, "config": config.public_dict(), "run_dirs": run_dirs}
    try:
        tuner = tune.Tuner(
            tune.with_resources(_ray_trial, {"cpu": 1}),
            param_space={"trial": tune.grid_search(list(range(len(grid.argvs)))), "spec": spec},
            run_config=tune.RunConfig(storage_path=str((out_dir / "ray").resolve()), name="search", verbose=0),
        )
        results = tuner.fit()
    finally:
        if started_here:
            ray.shutdown()
    out: list[dict[str, Any]] = [{"error": "the trial never reported"} for _ in grid.argvs]
    for result in results:
        trial = int(result.config["trial"])
        if result.error is not None:
            lines = [s for s in str(result.error).splitlines() if s.strip()]
            out[trial] = {"error": f"trial crashed: {lines[-1] if lines else type(result.error).__name__}"}
        else:
            out[trial] = json.loads(result.metrics["payload"])
    return out


def _selected(result: Mapping[str, Any]) -> dict[str, Any] | None:
    best = result.get("best_checkpoint")
    return next((r for r in result.get("rows", ()) if r["checkpoint"] == best), None)


def _rank(row: Mapping[str, Any]) -> tuple[float, float, float]:
    sharpe = row["sharpe"]
    return (row["gates_passed"], -math.inf if sharpe is None else sharpe, row["return_pct"])


def _trial_rows(grid: Grid, results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, (point, result) in enumerate(zip(grid.points, results, strict=True)):
        chosen = _selected(result)
        row: dict[str, Any] = {
            "trial": i, "ts": int(time.time()), "params": json.dumps(point, default=str),
            "status": "ok" if chosen is not None else "error",
            "error": result.get("error") or ("" if chosen is not None else "no cycle finished"),
            "train_run_id": None, "cycles": len(result.get("rows", ())), "timesteps": None, "sharpe": None,
            "return_pct": None, "max_drawdown_pct": None, "trades_per_day": None, "hold_rate": None,
            "gates_passed": None, "gates_total": None, "gates_failed": "", "model_sha256": None, "model_path": None,
            "best": 0,
        }  # fmt: skip
        if chosen is not None:
            row.update({k: chosen[k] for k in (
                "timesteps", "sharpe", "return_pct", "max_drawdown_pct", "trades_per_day", "hold_rate",
                "gates_passed", "gates_total", "gates_failed", "model_sha256")})  # fmt: skip
            row["model_path"] = chosen["checkpoint"]
        rows.append(row)
    ok = [r for r in rows if r["status"] == "ok"]
    if ok:
        max(ok, key=_rank)["best"] = 1
    return rows


async def _record(db: Path, config: TradectlConfig, grid: Grid, results: Sequence[Mapping[str, Any]],
                  rows: list[dict[str, Any]]) -> tuple[int, dict[str, Any] | None]:
    """The search's run, each trial's training run with its cycle rows, the trial rows; the best model
    registered. Returns (the search's run id, the registration or None)."""
    from daemon.models import register_model
    from daemon.store import Store

    store = await Store.open(db)
    try:
        tune_run = await store.begin_run("tune", config.fingerprint(), {"grid": str(grid.path), "trials": grid.points})
        for row, result in zip(rows, results, strict=True):
            if not result.get("rows"):
                continue
            record = {"tune_run_id": tune_run, "trial": row["trial"], "params": grid.points[row["trial"]],
                      "command": result.get("command")}
            row["train_run_id"] = await store.begin_run("train", config.fingerprint(), record)
            for cycle in result["rows"]:
                await store.record_cycle(row["train_run_id"], cycle)
            await store.end_run({"cycles": len(result["rows"]), "stop": result.get("stop"),
                                 "model_sha256": row["model_sha256"]})
        await store.record_tune_trials(tune_run, rows)
        best = next((r for r in rows if r["best"]), None)
        registered = None
        if best is not None:
            registered = await register_model(store, best["model_path"], ts=int(time.time()))
        store.run_id = tune_run
        await store.end_run({"trials": len(rows), "ok": sum(r["status"] == "ok" for r in rows),
                             "best_trial": None if best is None else best["trial"],
                             "registered": None if registered is None else registered["sha256"]})
        return tune_run, registered
    finally:
        await store.close()


def _fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """One line per trial: its grid point, its selected checkpoint's held-out figures and gates."""
    head = ("trial", "params", "cycles", "steps", "Sharpe", "return", "max dd", "trades/day", "hold", "gates",
            "failed", "model", "")
    table = [head]
    for r in rows:
        params = ", ".join(f"{k}={v}" for k, v in json.loads(r["params"]).items())
        if r["status"] != "ok":
            table.append((str(r["trial"]), params, str(r["cycles"]), "", "", "", "", "", "", "", "", "",
                          f"error: {r['error']}"))
            continue
        table.append((
            str(r["trial"]), params, str(r["cycles"]), f"{r['timesteps']:,}", _fmt(r["sharpe"], "+.2f"),
            f"{r['return_pct']:+.2f}%", f"{r['max_drawdown_pct']:.2f}%", _fmt(r["trades_per_day"], ".2f"),
            _fmt(r["hold_rate"], ".2f"), f"{r['gates_passed']}/{r['gates_total']}", r["gates_failed"] or "-",
            r["model_sha256"][:12], "best" if r["best"] else "",
        ))  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    """Run the grid, record it, register the best model, print the table (or JSON)."""
    grid = load_grid(args.grid)
    if args.num_cpus < 1:
        raise ConfigError("--num-cpus must be >= 1")
    _import_ray()  # before any work: say how to install it
    out_dir = (args.out_dir or Path("var/tune") / args.grid.stem).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    db = Path(args.db or config.store.path)
    print(f"tune: {len(grid.argvs)} trials on {'Ray at ' + args.address if args.address else 'a local Ray'}",
          file=sys.stderr)
    results = _search(grid, config, out_dir, args)
    rows = _trial_rows(grid, results)
    tune_run, registered = asyncio.run(_record(db, config, grid, results, rows))
    if args.json:
        print(json.dumps({"run_id": tune_run, "db": str(db), "trials": rows, "registered": registered}, indent=2))
        return 0
    print(render_table(rows))
    print(f"trials   run {tune_run} in {db} (tune_trials; each trial's cycles under its train_run_id)")
    if registered is None:
        raise DataError("no trial finished a cycle: nothing registered (the table says why)")
    print(f"best     trial {next(r['trial'] for r in rows if r['best'])}: {registered['path']} registered "
          f"(sha256 {registered['sha256'][:16]}…), not promoted: tradectl models promote decides that")
    return 0
