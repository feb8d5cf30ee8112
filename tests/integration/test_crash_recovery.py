"""Fault injection: a real daemon process killed with SIGKILL at random moments, restarted every time.

The daemon (``fakes/crash_runner.py``: real store, file-backed sim broker,
pipeline, order manager, reconciler) trades the bundled EUR/USD bars with a
2/5 SMA cross so it orders every few bars, with fills split in parts. Each
trial starts it against the same database and broker state file; it recovers
and reconciles, reports, and is told to trade; then it is killed — by a timer
at a random instant, or by itself at a chosen point (after journaling before
sending, after the broker accepted before the daemon recorded it, after a fill
before it is stored, after storing a fill before its order moved).

After every restart, the files are checked independently of the daemon:

* no client order id reached the broker twice (the broker logs every submit),
  and every order the broker has was journaled first;
* every broker fill is in the store and the store has no fill the broker lacks;
* the store's positions (sum of stored fills) equal the broker's;
* P&L equals the sum over fills: the broker's cash is the starting cash less
  the fills' cash flows and fees, and the realized P&L stored with each fill
  adds up to the FIFO P&L of the fill sequence — which is also what the
  restarted daemon's books report;
* recovery left no order in limbo and the start-up reconciliation found
  nothing to correct.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import pytest

from brokers.base import Fill, Side
from daemon.portfolio import Portfolio

ROOT = Path(__file__).resolve().parents[2]
TRIALS = 24
SEED = int(os.environ.get("TRADECTL_CRASH_SEED", "20240604"))
STARTING_CASH = Decimal(100_000)
HOOKS = ("after_journal", "after_send", "before_record_fill", "after_record_fill")
D = Decimal


def _plan(rng: random.Random) -> list[tuple[str, float | str]]:
    """Half the trials die at a named point (each point several times), half at a random instant."""
    plan: list[tuple[str, float | str]] = []
    for i in range(TRIALS):
        if i % 2 == 0:
            plan.append(("hook", f"{HOOKS[(i // 2) % len(HOOKS)]}:{rng.randint(1, 3)}"))
        else:
            plan.append(("timer", round(rng.uniform(0.05, 0.6), 3)))
    return plan


class _Runner:
    """One daemon process: started, read until it reports recovery, then driven over stdin."""

    def __init__(self, work: Path, kill_at: str = "") -> None:
        env = {**os.environ, "TRADECTL_KILL_AT": kill_at, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.fakes.crash_runner", "--db", str(work / "daemon.db"),
             "--broker-state", str(work / "broker.json"), "--pace", "400"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )

    def recovered(self, *, may_die: bool = False) -> dict[str, Any] | None:
        """The recovery report; None when ``may_die`` and the kill point was reached during recovery itself."""
        line = _readline(self.proc.stdout, 60)
        if not line and may_die and self.proc.wait(timeout=10) == -signal.SIGKILL:
            return None
        if not line:
            self.kill()
            assert self.proc.stderr is not None
            err = self.proc.stderr.read()
            raise AssertionError(f"daemon died before reporting recovery (rc {self.proc.returncode}):\n{err[-3000:]}")
        report = json.loads(line)
        assert report["event"] == "recovered"
        return report

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def close(self) -> str:
        self.kill()
        stderr = self.proc.stderr
        err = stderr.read() if stderr is not None and not stderr.closed else ""
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return err


def _readline(stream: IO[str] | None, timeout: float) -> str:
    import selectors

    assert stream is not None
    with selectors.DefaultSelector() as sel:
        sel.register(stream, selectors.EVENT_READ)
        if not sel.select(timeout):
            return ""
    return stream.readline()


# ---------------------------------------------------------------------------- the invariants


def _broker_state(work: Path) -> dict[str, Any]:
    """The broker's own record: its snapshot with its journal replayed (what a restarted broker loads)."""
    from brokers.sim.state import StateFile

    state = StateFile(work / "broker.json").load()
    return {
        "submits": list(state.submits),
        "orders": {cid: o.status.value for cid, o in state.orders.items()},
        "fills": {f.fill_id: f for f in state.fills},
        "positions": {s: p.quantity for s, p in state.positions.items() if p.quantity},
        "cash": state.cash,
    }


def _check(work: Path, report: dict[str, Any]) -> dict[str, int]:
    broker = _broker_state(work)
    with sqlite3.connect(work / "daemon.db") as db:
        orders = dict(db.execute("SELECT client_order_id, status FROM orders").fetchall())
        rows = db.execute(
            "SELECT fill_id, client_order_id, symbol, side, quantity, price, fee, ts, realized_pnl FROM fills"
            " ORDER BY rowid"
        ).fetchall()
        startup = db.execute(
            "SELECT status, action, differences FROM reconciliation_runs WHERE reason = 'startup' ORDER BY id DESC"
        ).fetchone()
    fills = [Fill(r[0], r[1], r[2], Side(r[3]), D(r[4]), D(r[5]), D(r[6]), int(r[7])) for r in rows]

    submits = Counter(broker["submits"])
    twice = {cid: n for cid, n in submits.items() if n > 1}
    assert not twice, f"client order ids sent to the broker more than once: {twice}"
    unjournaled = set(broker["orders"]) - set(orders)
    assert not unjournaled, f"orders at the broker that were never journaled: {sorted(unjournaled)[:5]}"

    stored_ids = [f.fill_id for f in fills]
    assert len(stored_ids) == len(set(stored_ids)), "a fill is stored twice"
    missing = set(broker["fills"]) - set(stored_ids)
    assert not missing, f"broker fills missing from the store: {sorted(missing)[:5]}"
    phantom = set(stored_ids) - set(broker["fills"])
    assert not phantom, f"stored fills the broker never made: {sorted(phantom)[:5]}"
    for fill in fills:
        assert fill == broker["fills"][fill.fill_id], f"stored fill differs from the broker's: {fill}"

    positions: dict[str, Decimal] = {}
    for fill in fills:
        positions[fill.symbol] = positions.get(fill.symbol, D(0)) + fill.signed_quantity
    positions = {s: q for s, q in positions.items() if q}
    assert positions == broker["positions"], f"store positions {positions} != broker positions {broker['positions']}"

    flows = sum((-f.signed_quantity * f.price - f.fee for f in fills), D(0))
    assert STARTING_CASH + flows == broker["cash"], "broker cash is not the starting cash plus the fills' cash flows"
    books = Portfolio(STARTING_CASH)
    for fill in fills:
        books.apply_fill(fill)
    stored_realized = sum((D(r[8]) for r in rows), D(0))
    assert books.realized == stored_realized, f"FIFO P&L {books.realized} != stored per-fill P&L {stored_realized}"
    assert D(report["realized"]) == books.realized and D(report["cash"]) == books.cash == broker["cash"]
    assert {s: D(q) for s, q in report["positions"].items()} == positions

    outcome = report["outcome"]
    assert outcome["may_trade"], f"restart could not vouch for its books: {outcome}"
    assert outcome["recovery"]["unresolved"] == []
    limbo = {cid: s for cid, s in orders.items() if s in ("new", "submitted", "unknown")}
    assert not limbo, f"orders left in limbo after recovery: {limbo}"
    for cid, status in orders.items():
        if status in ("accepted", "partially_filled", "cancel_pending"):
            assert broker["orders"].get(cid) in ("accepted", "partially_filled"), f"{cid}: {status} vs broker"
    assert startup is not None and startup[:2] == ("ok", "none"), f"startup reconciliation: {startup}"
    return {"orders": len(orders), "fills": len(fills)}


# ---------------------------------------------------------------------------- the test


@pytest.mark.slow
def test_sigkill_at_random_moments_loses_nothing_and_duplicates_nothing(tmp_path: Path, capsys: Any) -> None:
    rng = random.Random(SEED)
    plan = _plan(rng)
    started = time.monotonic()
    kills: Counter[str] = Counter()
    recovered = Counter[str]()
    totals: dict[str, int] = {}
    for number, (kind, arg) in enumerate(plan, start=1):
        runner = _Runner(tmp_path, kill_at=str(arg) if kind == "hook" else "")
        try:
            report = runner.recovered(may_die=kind == "hook")
            if report is None:  # killed while recovering (e.g. before storing a recovered fill): restart again
                kills[f"{str(arg).split(':')[0]} (in recovery)"] += 1
                continue
            if number > 1:
                totals = _check(tmp_path, report)
                recovery = report["outcome"]["recovery"]
                recovered["never_sent"] += len(recovery["never_sent"])
                recovered["found_at_broker"] += len(recovery["found_at_broker"])
                recovered["fills_booked"] += recovery["fills_booked"]
            runner.send("go")
            if kind == "timer":
                time.sleep(float(arg))
                runner.kill()
                kills["timer"] += 1
            else:
                rc = runner.wait(30)
                assert rc == -signal.SIGKILL, f"trial {number}: expected a kill at {arg}, exit code {rc}"
                kills[str(arg).split(":")[0]] += 1
        finally:
            err = runner.close()
        assert "Traceback" not in err, f"trial {number} ({kind} {arg}) crashed on its own:\n{err[-3000:]}"

    final = _Runner(tmp_path)
    try:
        report = final.recovered()
        assert report is not None
        totals = _check(tmp_path, report)
        final.send("exit")
        assert final.wait(30) == 0
    finally:
        final.close()

    elapsed = time.monotonic() - started
    with capsys.disabled():
        print(
            f"\ncrash recovery: {len(plan)} trials, {sum(kills.values())} SIGKILLs ({dict(sorted(kills.items()))}); "
            f"recovery rejected {recovered['never_sent']} never-sent orders, found {recovered['found_at_broker']} "
            f"sent ones, booked {recovered['fills_booked']} missing fills; {totals.get('orders')} orders, "
            f"{totals.get('fills')} fills; every invariant held after every restart ({elapsed:.1f} s)"
        )
    assert sum(kills.values()) == TRIALS
    # the dangerous instants really were hit, and recovery really had work to do
    assert all(kills[h] + kills[f"{h} (in recovery)"] >= 2 for h in HOOKS)
    assert recovered["never_sent"] >= 1 and recovered["found_at_broker"] >= 1 and recovered["fills_booked"] >= 1
