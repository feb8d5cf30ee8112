"""Event-loop lag monitor: the proof that nothing blocks the loop.

A task asks to wake every ``interval`` seconds and records how late it woke.
A blocking call anywhere in the daemon shows up here as a late wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque


class LoopLagMonitor:
    def __init__(self, interval: float = 0.05, window: int = 1200) -> None:
        self.interval = interval
        self._samples: deque[float] = deque(maxlen=window)
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

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
            due = loop.time() + self.interval
            await asyncio.sleep(self.interval)
            lag = max(0.0, loop.time() - due)
            self._samples.append(lag)
            if lag > self.worst:
                self.worst = lag

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
