"""Behaviour held fixed: the journals of `tradectl backtest` compared with a recorded reference.

Runs the real command line (`tradectl backtest --json`) for both strategies on
the bundled year and on the 100,000-bar set (the bundled year repeated, shifted
by whole weeks), dumps the ``orders``, ``fills``, ``trades``, ``risk_events``
and ``equity_snapshots`` tables and the run summary (without its timings), and
compares each dump's SHA-256 with ``bench/journal_reference.json``.

The reference was recorded before the "One seam to the market" renovation
touched any code, so a refactor that changes what is traded, at what price, or
what is booked shows up here as a named table that differs.

    .venv/bin/python bench/journal_identity.py            # compare (exit 1 on any difference)
    .venv/bin/python bench/journal_identity.py --record   # write the reference (only before a change)
    .venv/bin/python bench/journal_identity.py --keep DIR # also keep the text dumps for diffing

Not a test (the 100,000-bar recurrent run takes tens of seconds); the bundled
year is also checked by ``tests/integration/test_journal_identity.py``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REFERENCE = Path(__file__).with_name("journal_reference.json")
TABLES = {
    "orders": "SELECT * FROM orders ORDER BY created_ts, client_order_id",
    "fills": "SELECT * FROM fills ORDER BY ts, fill_id",
    "trades": "SELECT * FROM trades ORDER BY id",
    "risk_events": "SELECT ts, symbol, layer, kind, reason, message FROM risk_events ORDER BY id",
    "equity_snapshots": "SELECT * FROM equity_snapshots ORDER BY ts",
}
# timings differ from run to run; everything else in the summary is an outcome
_VOLATILE_SUMMARY = {"elapsed_seconds", "bars_per_second"}
STRATEGIES = ("sma_cross", "recurrent")
SETS = {"bundled": None, "100k": 100_000}


def write_bars_csv(path: Path, total: int) -> None:
    """The 100,000-bar set as a CSV the command line reads (epoch seconds, repr floats: exact round trip)."""
    from brokers.history import load_bundled, repeat_bars

    rows = ["ts,open,high,low,close,volume"]
    bars = repeat_bars(load_bundled(), total)
    rows += [f"{b.ts},{b.open!r},{b.high!r},{b.low!r},{b.close!r},{b.volume!r}" for b in bars]
    path.write_text("\n".join(rows) + "\n")


def dump_tables(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return {
            name: "\n".join("|".join("" if v is None else str(v) for v in row) for row in conn.execute(sql))
            for name, sql in TABLES.items()
        }


def run_backtest(strategy: str, data: Path | None, db: Path) -> dict[str, str]:
    """One `tradectl backtest` through the command line; returns each table's dump and the summary."""
    env = {**os.environ, "TRADECTL_STRATEGY__KIND": strategy}
    cmd = [sys.executable, "-m", "daemon.cli", "backtest", "--json", "--no-progress", "--db", str(db)]
    if data is not None:
        cmd += ["--data", str(data)]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"backtest {strategy} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    summary = {k: v for k, v in json.loads(done.stdout).items() if k not in _VOLATILE_SUMMARY}
    dumps = dump_tables(db)
    dumps["summary"] = json.dumps(summary, sort_keys=True)
    return dumps


def digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def measure(sets: list[str], strategies: list[str], keep: Path | None) -> dict[str, dict[str, object]]:
    out: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for set_name in sets:
            total = SETS[set_name]
            data = None
            if total is not None:
                data = work / f"bars_{total}.csv"
                write_bars_csv(data, total)
            for strategy in strategies:
                key = f"{strategy}/{set_name}"
                dumps = run_backtest(strategy, data, work / f"{strategy}_{set_name}.db")
                out[key] = {name: {"sha256": digest(text), "rows": text.count("\n") + bool(text)}
                            for name, text in dumps.items()}
                if keep is not None:
                    keep.mkdir(parents=True, exist_ok=True)
                    for name, text in dumps.items():
                        (keep / f"{strategy}_{set_name}_{name}.txt").write_text(text)
                print(f"{key}: " + ", ".join(f"{n} {v['rows']}" for n, v in out[key].items()), file=sys.stderr)
    return out


def compare(reference: dict[str, dict[str, object]], measured: dict[str, dict[str, object]]) -> list[str]:
    """Names of the dumps that differ from the reference (empty: identical)."""
    return [
        f"{key}/{table}"
        for key, tables in measured.items()
        for table, value in tables.items()
        if reference.get(key, {}).get(table) != value
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--record", action="store_true", help="write the reference instead of comparing")
    parser.add_argument("--set", choices=sorted(SETS), action="append", help="only this bar set (repeatable)")
    parser.add_argument("--strategy", choices=STRATEGIES, action="append", help="only this strategy (repeatable)")
    parser.add_argument("--keep", type=Path, default=None, help="write the text dumps to this folder")
    args = parser.parse_args()
    measured = measure(args.set or list(SETS), args.strategy or list(STRATEGIES), args.keep)
    if args.record:
        REFERENCE.write_text(json.dumps(measured, indent=2, sort_keys=True) + "\n")
        print(f"reference written to {REFERENCE}")
        return 0
    differ = compare(json.loads(REFERENCE.read_text()), measured)
    for name in differ:
        print(f"DIFFERS: {name}")
    print("identical" if not differ else f"{len(differ)} dump(s) differ from the reference")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
