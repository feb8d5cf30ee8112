"""A small real daemon for the crash test: file-backed sim broker, SQLite store, SMA strategy, fast replay.

Run as ``python -m tests.integration.fakes.crash_runner --db D --broker-state S``.
Every start does what a restarted daemon must: rebuild its books from the
store, recover the orders the last process left open, reconcile with the
broker before any order. It then prints one JSON line
``{"event": "recovered", ...}`` and waits for a line on stdin: ``go`` trades
(until killed or the bars run out), ``exit`` stops.

``TRADECTL_KILL_AT=point:n`` makes the process SIGKILL itself the n-th time it
reaches ``point``, so the test can kill it at the instants that matter:

* ``after_journal`` — the order is committed in the store, the broker has not seen it;
* ``after_send`` — the broker has accepted (and saved) it, the daemon has not recorded that;
* ``before_record_fill`` — the broker has filled it, the daemon has not booked the fill;
* ``after_record_fill`` — the fill is stored, its order's new state is not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from decimal import Decimal
from pathlib import Path

import structlog

from brokers.base import Fill, OrderRequest, OrderUpdate
from brokers.history import load_bundled
from brokers.sim import SimBroker
from daemon.orders import ManagedOrder, start_safely
from tests.integration.fakes.rig import FillHandler, build_rig, sim_broker


class _KillSwitch:
    """SIGKILLs this process at the n-th arrival at one named point (no cleanup can run: that is the point)."""

    def __init__(self, spec: str) -> None:
        point, _, n = spec.partition(":")
        self.point = point
        self.left = int(n or 1) if point else 0

    def reached(self, point: str) -> None:
        if point != self.point or self.left <= 0:
            return
        self.left -= 1
        if self.left == 0:
            os.kill(os.getpid(), signal.SIGKILL)


KILL = _KillSwitch(os.environ.get("TRADECTL_KILL_AT", ""))


class KillableSim(SimBroker):
    async def submit(self, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        KILL.reached("after_journal")
        ack = await super().submit(client_order_id, request)
        KILL.reached("after_send")
        return ack


def _wrap_fill(on_fill: FillHandler) -> FillHandler:
    async def killable(fill: Fill, order: ManagedOrder) -> None:
        KILL.reached("before_record_fill")
        await on_fill(fill, order)
        KILL.reached("after_record_fill")

    return killable


async def _wait_for_command() -> str:
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    return line.strip()


async def main(args: argparse.Namespace) -> int:
    bars = load_bundled()
    broker = sim_broker(
        bars, state_file=Path(args.broker_state), pace=args.pace, max_fill_quantity=Decimal(args.max_fill),
        cls=KillableSim, state_fsync=False,
    )
    rig = await build_rig(Path(args.db), broker, policy="halt", fresh_account=False, wrap_fill=_wrap_fill,
                          confirm_delay=None, synchronous="normal")
    outcome = await start_safely(rig.orders, rig.reconciler, broker.state.clock_ts, attempts=1, retry_delay=0)
    await rig.store.flush()
    portfolio = rig.portfolio
    print(json.dumps({
        "event": "recovered",
        "outcome": outcome.as_dict(),
        "positions": {p.symbol: str(p.quantity) for p in portfolio.positions()},
        "cash": str(portfolio.cash),
        "realized": str(portfolio.realized),
        "fees": str(portfolio.fees),
        "state": rig.governor.state.value,
        "feed_position": broker.feed.position,
    }), flush=True)
    if await _wait_for_command() != "go":
        await rig.close()
        return 0
    n = 0
    async for bar in broker.bars():
        await rig.pipeline.on_bar(bar)
        await rig.reconciler.after_fills(bar.ts)
        n += 1
        if n % 16 == 0:
            await rig.orders.check_timeouts(bar.ts)
    await rig.settle()
    await rig.close()
    print(json.dumps({"event": "done", "bars": n}), flush=True)
    return 0


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--db", required=True)
    parser.add_argument("--broker-state", required=True)
    parser.add_argument("--pace", type=float, default=400.0, help="bars per second")
    parser.add_argument("--max-fill", default="6000", help="largest fill per bar: bigger orders fill in parts")
    return parser.parse_args(argv)


if __name__ == "__main__":
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    sys.exit(asyncio.run(main(_parse())))
