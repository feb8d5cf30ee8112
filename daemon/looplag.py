"""Event-loop lag monitor: the proof that nothing blocks the loop.

A task asks to wake every ``interval`` seconds and records how late it woke.
A blocking call anywhere in the daemon shows up here as a late wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque


class LoopLagMonitor:
    def __init__(self, interval: float = 0.05, window_seconds: float = 60.0) -> None:
        self.interval = interval
        self._samples: deque[float] = deque(maxlen=max(1, int(window_seconds / interval)))
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None
        self._due: float | None = None  # loop time of the pending wake-up

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loop-lag")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = self._due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - due)
            self._samples.append(lag)
            if lag > self.worst:
                self.worst = lag

    def recent_max(self, seconds: float) -> float:
        """The worst lag (seconds) among the samples of roughly the last ``seconds``: what health limits.

        ``worst`` never forgets, so it cannot say the loop is healthy again; a
        stall stays in this window for at least ``seconds`` after it ended.
        """
        count = max(1, int(seconds / self.interval))
        return max(itertools.islice(reversed(self._samples), count), default=0.0)

    def overdue(self) -> float:
        """How late the pending wake-up already is (seconds), read on the loop.

        A stall is sampled only once the loop runs again, and whatever runs
        first after it (a watchdog ping) would not see it yet; this does.
        """
        if self._due is None or self._task is None or self._task.done():
            return 0.0
        return max(0.0, asyncio.get_running_loop().time() - self._due)

    def snapshot(self) -> dict[str, float]:
        """Lag percentiles over the recent window, in milliseconds."""
        if not self._samples:
            return {"p50": 0.0, "p99": 0.0, "max": 0.0, "samples": 0}
        ordered = sorted(self._samples)
        n = len(ordered)
        return {
            "p50": round(ordered[n // 2] * 1000, 3),
            "p99": round(ordered[min(n - 1, int(n * 0.99))] * 1000, 3),
            "max": round(self.worst * 1000, 3),
            "samples": n,
        }
