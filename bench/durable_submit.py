"""The durable order path: bar -> ``broker.submit`` with ``store.synchronous: full``, against the disk's own fsync.

Not a test: prints percentiles and the margin to the target. In one process,
on the same directory:

1. the bare fsync of a small write, sampled before and after the run so both
   sides see the same disk weather: 512 bytes appended (the file grows, as a
   WAL does until SQLite starts it over after a checkpoint: the fsync also
   commits the file's new size) and 4 KiB rewritten in place (a reused WAL);
2. the real daemon (``LiveRunner``: the live writer on its thread, the
   simulated broker, the replay at full speed, so flushes of buffered rows and
   WAL growth happen far more often than in a live minute-bar run), timing
   each bar that sends an order to the broker adapter's ``submit``, and each
   order's journal commit on its own.

"bar -> broker.submit" starts once the fills delivered before the bar are
booked: in a paced live run they stream in between bars and are booked then
(``LiveRunner._book_updates``); at full replay speed they arrive with the next
bar and ``on_bar`` books them first. That booking (one commit per broker
report) is shown on its own, and "on_bar entry -> submit" includes it.

Target: bar -> submit p99 <= bare fsync p99 + 1 ms (the margin is printed against both fsyncs).

    .venv/bin/python bench/durable_submit.py                       # recurrent policy, bundled year
    .venv/bin/python bench/durable_submit.py --strategy sma_cross
    .venv/bin/python bench/durable_submit.py --pace 200 --bars 3000  # bars spaced as a fast live feed
    .venv/bin/python bench/durable_submit.py --dir /var/lib/tradectl  # the disk the daemon will use
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import gc  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MARGIN_MS = 1.0
# bare fsync variants: (append?, idle seconds before each)
_FSYNCS = {
    "512 B appended": (True, 0.0),
    "4 KiB in place": (False, 0.0),
    "4 KiB in place, 20 ms apart": (False, 0.02),
}
_BLOCK = b"\x5a" * 4096


def bare_fsync_ms(directory: Path, samples: int, *, append: bool, gap: float = 0.0) -> np.ndarray:
    """fsync latency of a small write to a file in ``directory``: appended, or rewritten in place; ``gap``
    seconds of idle before each (on a VM an fsync after idle costs more than one of a back-to-back series)."""
    path = directory / "fsync-probe"
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | (os.O_APPEND if append else 0), 0o600)
    try:
        out = np.empty(samples)
        for i in range(samples):
            if gap:
                time.sleep(gap)
            t0 = time.perf_counter_ns()
            if append:
                os.write(fd, _BLOCK[:512])
            else:
                os.pwrite(fd, _BLOCK, (i % 16) * 4096)
            os.fsync(fd)
            out[i] = (time.perf_counter_ns() - t0) / 1e6
        return out
    finally:
        os.close(fd)
        path.unlink()


async def durable_path_ms(directory: Path, strategy: str, repeat: int, pace: float,
                          bars_limit: int | None) -> dict[str, np.ndarray]:
    """Run the live daemon over the replay; the order path's stages in ms from ``on_bar`` entry."""
    from brokers.history import load_bundled, repeat_bars
    from daemon.config import TradectlConfig
    from daemon.logs import configure_logging
    from daemon.runners import LiveRunner

    configure_logging("error", False)  # no log line per order: its I/O is not the order path
    year = load_bundled()
    bars = repeat_bars(year, len(year) * max(1, repeat))[:bars_limit]
    config = TradectlConfig(
        strategy={"kind": strategy}, api={"enabled": False}, store={"synchronous": "full"},
    )
    runner = await LiveRunner.open(config, db_path=directory / "durable.db", pace=pace, bars=bars)
    daemon = runner.daemon
    clock = time.perf_counter_ns
    marks: dict[str, int] = {}
    to_submit: list[int] = []
    from_entry: list[int] = []
    booking: list[int] = []
    journal: list[int] = []

    inner_apply = daemon.pipeline.apply_updates

    async def apply_updates() -> int:
        t0 = clock()
        count = await inner_apply()
        if "booked" not in marks:
            marks["booked"] = clock()
            if count:
                booking.append(marks["booked"] - t0)
        return count

    inner_submit = daemon.broker.submit

    async def submit(*args: Any, **kwargs: Any) -> Any:
        marks.setdefault("submit", clock())
        return await inner_submit(*args, **kwargs)

    inner_journal = daemon.store.journal_order

    async def journal_order(*args: Any, **kwargs: Any) -> None:
        t0 = clock()
        await inner_journal(*args, **kwargs)
        journal.append(clock() - t0)

    inner_on_bar = daemon.pipeline.on_bar

    async def on_bar(bar: Any) -> None:
        marks.clear()
        t0 = clock()
        await inner_on_bar(bar)
        if "submit" in marks:
            to_submit.append(marks["submit"] - marks.get("booked", t0))
            from_entry.append(marks["submit"] - t0)

    daemon.broker.submit = submit  # type: ignore[method-assign]
    daemon.store.journal_order = journal_order  # type: ignore[method-assign]
    daemon.pipeline.on_bar = on_bar  # type: ignore[method-assign]
    daemon.pipeline.apply_updates = apply_updates  # type: ignore[method-assign]
    gc.collect()
    await runner.run(install_signals=False)
    return {
        "bar -> broker.submit": np.array(to_submit) / 1e6,
        "order journal commit": np.array(journal) / 1e6,
        "fills booked at the bar's start": np.array(booking) / 1e6,
        "on_bar entry -> submit": np.array(from_entry) / 1e6,
    }


def _row(name: str, values: np.ndarray) -> str:
    p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
    return f"{name:40s} {p50:8.3f} {p99:8.3f} {values.max():8.3f} {len(values):7d}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--strategy", default="recurrent", choices=("recurrent", "sma_cross"))
    parser.add_argument("--repeat", type=int, default=1, help="replay the bundled year this many times")
    parser.add_argument("--pace", type=float, default=0.0, help="bars per second (0: as fast as possible, the "
                        "worst case for the store: a second's buffered rows per few bars)")
    parser.add_argument("--bars", type=int, default=None, help="only the first N bars")
    parser.add_argument("--fsync-samples", type=int, default=2000, help="bare fsyncs before and after the run")
    parser.add_argument("--dir", type=Path, default=None, help="directory on the disk to measure (default: a "
                        "temporary directory under the repository)")
    args = parser.parse_args()
    base = args.dir if args.dir is not None else ROOT
    stages: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(dir=base, prefix=".durable-submit-") as tmp:
        directory = Path(tmp)
        fsyncs: dict[str, list[np.ndarray]] = {kind: [] for kind in _FSYNCS}
        for _ in range(2):  # before and after the run
            for kind, (append, gap) in _FSYNCS.items():
                count = args.fsync_samples if not gap else args.fsync_samples // 8
                fsyncs[kind].append(bare_fsync_ms(directory, count, append=append, gap=gap))
            if not stages:
                stages = asyncio.run(durable_path_ms(directory, args.strategy, args.repeat, args.pace, args.bars))
    pace = f"{args.pace:g} bars/s" if args.pace else "full speed"
    print(f"durable order path, store.synchronous=full, {args.strategy}, replay at {pace}, directory {base}")
    print(f"{'ms':40s} {'p50':>8s} {'p99':>8s} {'max':>8s} {'n':>7s}")
    bare = {kind: np.concatenate(samples) for kind, samples in fsyncs.items()}
    for kind, values in bare.items():
        print(_row(f"bare fsync, {kind}", values))
    for name, values in stages.items():
        if len(values):
            print(_row(name, values))
    order = stages["bar -> broker.submit"]
    if not len(order):
        print("no order was sent: nothing to compare")
        return
    order_p99 = float(np.percentile(order, 99))
    for kind, values in bare.items():
        fsync_p99 = float(np.percentile(values, 99))
        target = fsync_p99 + MARGIN_MS
        verdict = "met" if order_p99 <= target else "MISSED"
        print(
            f"bar -> submit p99 <= fsync ({kind}) p99 + {MARGIN_MS:.0f} ms = {target:.3f}: {verdict} "
            f"({order_p99:.3f} ms; margin {target - order_p99:+.3f} ms)"
        )


if __name__ == "__main__":
    main()
