"""`tradectl` command line.

Every command catches tradectl's own errors and prints them as one clear
message with a non-zero exit code; a traceback means a bug.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from brokers.errors import TradectlError
from daemon.config import TradectlConfig, load_config
from daemon.health import EXIT_UNHEALTHY  # 4: `tradectl run` stopped after staying unhealthy (config health)
from daemon.logs import configure_logging

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a tool killed by a closed pipe


def _config_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", type=Path, default=None, help="YAML config (default: embedded defaults)")


def _api_args(parser: argparse.ArgumentParser) -> None:
    _config_arg(parser)
    parser.add_argument("--host", default=None, help="daemon API host (default from config)")
    parser.add_argument("--port", type=int, default=None, help="daemon API port (default from config)")


# Commands whose module has ``add_arguments(parser)`` and ``run(args, config)``: the module (imported on use:
# numpy, pandas and the venues' clients cost start-up time) and the log level of its run (its table or report,
# not each replay's risk warnings or the connection's chatter).
_MODULE_COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("daemon.validate", "error"),
    "report": ("daemon.reporting.command", "error"),
    "shadow": ("daemon.shadow", "error"),
    "walkforward": ("daemon.walkforward", "error"),
    "tune": ("daemon.tune", "error"),
    "broker": ("daemon.broker_check", "error"),
    "data": ("daemon.data_fetch", "warning"),
}


def _module_parser(sub: Any, name: str, text: str, command: str) -> None:
    """The subcommand ``name`` of one of ``_MODULE_COMMANDS``: --config and the module's own options."""
    parser = sub.add_parser(name, help=text)
    _config_arg(parser)
    importlib.import_module(_MODULE_COMMANDS[command][0]).add_arguments(parser)


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tradectl", description="Event-driven trading daemon")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the daemon (default: sim broker replaying the bundled data)")
    _config_arg(run)
    run.add_argument("--data", type=Path, default=None, help="replay this CSV/Parquet instead of the configured data")
    run.add_argument("--pace", type=float, default=None, help="bars per second (0 = as fast as possible)")
    run.add_argument("--db", type=Path, default=None, help="SQLite database (default from config)")

    backtest = sub.add_parser("backtest", help="replay data through the same pipeline as fast as possible")
    _config_arg(backtest)
    backtest.add_argument("--data", type=Path, default=None, help="CSV/Parquet bars (default: bundled dataset)")
    backtest.add_argument("--db", type=Path, default=Path("var/backtest.db"), help="fresh database for this run")
    backtest.add_argument("--json", action="store_true", help="print the summary as JSON")
    backtest.add_argument("--no-progress", action="store_true", help="no progress bar")

    status = sub.add_parser("status", help="show the running daemon's state")
    _api_args(status)
    status.add_argument("--json", action="store_true", help="print the raw JSON document")

    for name, text in (
        ("pause", "stop opening orders until resumed"),
        ("resume", "lift a pause or halt"),
        ("flatten", "cancel open orders and close every position through the risk governor"),
    ):
        cmd = sub.add_parser(name, help=text)
        _api_args(cmd)
        cmd.add_argument("--json", action="store_true")

    train = sub.add_parser("train", help="train a RecurrentPPO policy on bars (writes model + metadata)")
    _config_arg(train)
    from strategies.training.command import add_arguments as _train_arguments

    _train_arguments(train)

    for name, text in (
        ("validate", "judge a model by the validation gates on data it did not train on"),
        ("report", "a run, a model's latest run or the week as one HTML file with charts"),
        ("shadow", "replay a candidate model beside the production model over recent days"),
        ("walkforward", "train per fold, trade each next window unseen, stitch them"),
        ("tune", "a hyperparameter grid of cyclic trainings on Ray Tune (the tune extra)"),
    ):
        _module_parser(sub, name, text, name)

    models = sub.add_parser("models", help="the model registry (gold model for drawdown rollbacks)")
    models_sub = models.add_subparsers(dest="models_command", required=True, metavar="SUBCOMMAND")
    listing = models_sub.add_parser("list", help="registered models")
    register = models_sub.add_parser("register", help="register a model file (verified against its SHA-256)")
    register.add_argument("path", type=Path)
    register.add_argument("--gold", action="store_true", help="make it the gold model the drawdown halt rolls back to")
    for cmd in (listing, register):
        _config_arg(cmd)
        cmd.add_argument("--db", type=Path, default=None, help="SQLite database (default from config)")
        cmd.add_argument("--json", action="store_true")
    promote = models_sub.add_parser("promote", help="make a model production (needs passed gates and shadow replay)")
    rollback = models_sub.add_parser("rollback", help="make the previous (or the gold) model production again")
    from daemon.models import add_change_arguments

    add_change_arguments(promote, rollback)
    for cmd in (promote, rollback):
        _api_args(cmd)
        cmd.add_argument("--db", type=Path, default=None, help="registry database (default from config)")
        cmd.add_argument("--json", action="store_true")

    broker = sub.add_parser("broker", help="the configured broker")
    broker_sub = broker.add_subparsers(dest="broker_command", required=True, metavar="SUBCOMMAND")
    _module_parser(
        broker_sub, "check", "connect; print account, buying power, positions, open orders, clock and data feed; exit",
        "broker",
    )

    data = sub.add_parser("data", help="bar data from a broker")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND")
    _module_parser(
        data_sub, "fetch", "fetch historical bars into a file backtest/train read (resumable), with a quality report",
        "data",
    )

    risk = sub.add_parser("risk", help="trading state and each risk layer's figures against its limit")
    _api_args(risk)
    risk.add_argument("--json", action="store_true")

    config = sub.add_parser("config", help="configuration tools")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="SUBCOMMAND")
    check = config_sub.add_parser("check", help="validate a config file (and the environment overrides)")
    check.add_argument("file", type=Path, nargs="?", default=None)
    check.add_argument("--show", action="store_true", help="print the effective configuration")
    config_sub.add_parser("defaults", help="print every setting with its default and meaning (config/default.yaml)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": _cmd_run,
        "backtest": _cmd_backtest,
        "status": _cmd_status,
        "pause": _cmd_action,
        "resume": _cmd_action,
        "flatten": _cmd_action,
        "risk": _cmd_risk,
        "models": _cmd_models,
        "config": _cmd_config,
        "train": _cmd_train,
        **dict.fromkeys(_MODULE_COMMANDS, _cmd_module),
    }
    try:
        code = handlers[args.command](args)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except TradectlError as exc:
        print(f"tradectl {args.command}: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return EXIT_OK
    except BrokenPipeError:
        return _closed_pipe()


def _closed_pipe() -> int:
    """The reader went away (``tradectl status | head -3``): end quietly, as Unix tools do.

    Python would otherwise report the broken pipe again when it flushes
    stdout at exit; pointing stdout at /dev/null first keeps that quiet.
    """
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


# ---------------------------------------------------------------------- run / backtest
def _cmd_run(args: argparse.Namespace) -> int:
    from daemon.app import print_summary
    from daemon.runners import LiveRunner

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.json_output)

    async def _main() -> int:
        runner = await LiveRunner.open(config, data=args.data, db_path=args.db, pace=args.pace)
        summary = await runner.run()
        print_summary("tradectl run summary", summary)
        if runner.unhealthy_exit is not None:
            print(f"tradectl run: stopped after staying unhealthy: {runner.unhealthy_exit}", file=sys.stderr)
            return EXIT_UNHEALTHY
        return EXIT_OK

    return asyncio.run(_main())


def _cmd_backtest(args: argparse.Namespace) -> int:
    from daemon.app import print_summary
    from daemon.runners import BacktestRunner

    config = load_config(args.config)
    configure_logging("warning", config.logging.json_output)
    db = Path(args.db)
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)

    async def _main() -> int:
        runner = await BacktestRunner.open(config, data=args.data, db_path=db)
        progress = None
        bar = None
        if not args.no_progress and not args.json:
            from tqdm import tqdm

            bar = tqdm(total=runner.total_bars, unit="bar", file=sys.stderr, mininterval=0.5)
            progress = bar.update
        try:
            summary = await runner.run(progress=progress)
        finally:
            if bar is not None:
                bar.close()
        if args.json:
            print(json.dumps(summary.as_dict(), indent=2))
        else:
            print_summary(f"backtest ({runner.daemon.strategy.name}) — journal in {db}", summary)
        return EXIT_OK

    return asyncio.run(_main())


# ---------------------------------------------------------------------- talking to a daemon
def _endpoint(args: argparse.Namespace) -> tuple[str, int, str | None]:
    config: TradectlConfig = load_config(args.config)
    host = args.host or config.api.host
    port = args.port if args.port is not None else config.api.port
    token = config.api.token.get_secret_value() if config.api.token else None
    return host, port, token


def _request(args: argparse.Namespace, path: str, method: str = "GET") -> dict[str, Any]:
    from daemon.api import fetch_json

    host, port, token = _endpoint(args)
    return asyncio.run(fetch_json(host, port, path, method=method, token=token))


def _failure_code(exc: TradectlError) -> int:
    """3 when no daemon answers (scripts can wait and retry), 1 when one answered with a refusal."""
    return EXIT_UNREACHABLE if "no tradectl daemon answering" in str(exc) else EXIT_ERROR


def _cmd_status(args: argparse.Namespace) -> int:
    from daemon.statusview import render_status

    return _show(args, "/status", render_status)


def _cmd_risk(args: argparse.Namespace) -> int:
    from daemon.statusview import render_risk

    return _show(args, "/risk", render_risk)


def _show(args: argparse.Namespace, path: str, render: Callable[[dict[str, Any]], str]) -> int:
    """Fetch a read-only document from the daemon and print it as a table or, with --json, as JSON."""
    try:
        doc = _request(args, path)
    except TradectlError as exc:
        print(f"tradectl {args.command}: {exc}", file=sys.stderr)
        return _failure_code(exc)
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return EXIT_OK


def _cmd_action(args: argparse.Namespace) -> int:
    try:
        doc = _request(args, f"/{args.command}", method="POST")
    except TradectlError as exc:
        print(f"tradectl {args.command}: {exc}", file=sys.stderr)
        return _failure_code(exc)
    print(json.dumps(doc, indent=2) if args.json else f"{args.command}: state is now {doc.get('state', '?')}")
    return EXIT_OK


# ---------------------------------------------------------------------- models
def _cmd_models(args: argparse.Namespace) -> int:
    from daemon.models import list_models, register_model, run_change
    from daemon.store import Store

    config = load_config(args.config)
    if args.models_command in ("promote", "rollback"):
        return run_change(args, config, lambda: _request(args, "/models/promote", method="POST"))

    async def _main() -> object:
        store = await Store.open(args.db or config.store.path)
        try:
            if args.models_command == "register":
                return await register_model(store, args.path, gold=args.gold, ts=int(time.time()))
            return await list_models(store)
        finally:
            await store.close()

    result = asyncio.run(_main())
    if args.json:
        print(json.dumps(result, indent=2))
    elif isinstance(result, dict):
        print(f"registered {result['path']} (sha256 {result['sha256'][:16]}…){' as gold' if result['gold'] else ''}")
    else:
        rows = result if isinstance(result, list) else []
        if not rows:
            print("no models registered")
        for row in rows:
            role = "gold " if row["gold"] else "     "
            print(f"{role}{'prod ' if row['production'] else '     '} {row['sha256'][:16]}  {row['path']}")
    return EXIT_OK


# ---------------------------------------------------------------------- train
def _cmd_train(args: argparse.Namespace) -> int:
    from strategies.training.command import run as run_training

    config = load_config(args.config)
    configure_logging(config.logging.level, config.logging.json_output)
    if args.cycles is not None:
        from daemon.cycles import run as run_cycles

        configure_logging("error", config.logging.json_output)  # the cycle table, not each evaluation's risk log
        return run_cycles(args, config)
    return run_training(args, config)


def _cmd_module(args: argparse.Namespace) -> int:
    """validate, report, shadow, walkforward, tune, broker check, data fetch: the module's ``run``."""
    module, level = _MODULE_COMMANDS[args.command]
    run = importlib.import_module(module).run
    config = load_config(args.config)
    configure_logging(level, config.logging.json_output)
    return run(args, config)


# ---------------------------------------------------------------------- config
def _cmd_config(args: argparse.Namespace) -> int:
    if args.config_command == "defaults":
        from daemon.config import render_defaults

        sys.stdout.write(render_defaults())
        return EXIT_OK
    config = load_config(args.file)
    source = str(args.file) if args.file else "embedded defaults"
    if args.show:
        print(json.dumps(config.public_dict(), indent=2, default=str))
    print(f"{source}: OK (fingerprint {config.fingerprint()})")
    return EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
