"""The replay feed: historical bars handed out one at a time, paced or as fast as possible.

It drives the simulated broker (``brokers.sim.SimBroker``), which is the only
thing that reads it: the daemon sees bars through the broker's market-data side.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Sequence

from brokers.base import Bar

_YIELD_EVERY = 256


class ReplayFeed:
    """Async iterator over a list of bars, optionally paced in bars per second.

    Pacing follows a fixed schedule (bar ``i`` is due at ``start + i / pace``)
    rather than sleeping ``1 / pace`` after each bar, so time spent by the
    consumer does not accumulate as drift; ``lag_seconds`` reports how far
    behind that schedule the consumer has fallen.
    """

    def __init__(self, bars: Sequence[Bar], pace: float | None = None, start_index: int = 0) -> None:
        if pace is not None and (math.isnan(pace) or pace < 0):
            raise ValueError(f"pace must be >= 0 bars per second, got {pace}")
        self.bars: list[Bar] = list(bars)
        if not 0 <= start_index <= len(self.bars):
            raise ValueError(f"start_index {start_index} outside 0..{len(self.bars)}")
        self.pace = pace or None
        self._next = start_index
        self._stopped = False
        self._stop_event = asyncio.Event()
        self._schedule_start: float | None = None
        self._scheduled = 0
        self._lag = 0.0
        self._last_bar: Bar | None = None

    @property
    def position(self) -> int:
        """Index in ``bars`` of the next bar: bars consumed so far, counting those skipped by ``start_index``."""
        return self._next

    @property
    def total(self) -> int:
        return len(self.bars)

    @property
    def done(self) -> bool:
        return self._stopped or self._next >= len(self.bars)

    @property
    def last_bar(self) -> Bar | None:
        return self._last_bar

    @property
    def lag_seconds(self) -> float:
        return self._lag

    def stop(self) -> None:
        """End iteration promptly, waking a consumer that is waiting for a paced bar."""
        self._stopped = True
        self._stop_event.set()

    def _take(self) -> Bar | None:
        """Consume the next bar (None at the end or after ``stop``)."""
        index = self._next
        if self._stopped or index >= len(self.bars):
            return None
        bar = self.bars[index]
        self._next = index + 1
        self._last_bar = bar
        return bar

    def seek(self, index: int) -> None:
        """Continue from ``index`` (used when a simulated broker restores saved state); restarts the pace schedule."""
        if not 0 <= index <= len(self.bars):
            raise ValueError(f"index {index} outside 0..{len(self.bars)}")
        self._next = index
        self._schedule_start = None
        self._scheduled = 0

    def __aiter__(self) -> AsyncIterator[Bar]:
        return self

    async def __anext__(self) -> Bar:
        if self.done:
            raise StopAsyncIteration
        if self.pace is None:
            if self._next % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)
        else:
            await self._wait_for_schedule()
        bar = self._take()  # the feed may have been stopped or moved (seek) while we waited
        if bar is None:
            raise StopAsyncIteration
        return bar

    async def _wait_for_schedule(self) -> None:
        assert self.pace is not None
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._schedule_start is None:
            self._schedule_start = now
        due = self._schedule_start + self._scheduled / self.pace
        self._scheduled += 1
        if due > now:
            try:
                async with asyncio.timeout_at(due):
                    await self._stop_event.wait()
            except TimeoutError:
                pass
            now = loop.time()
        self._lag = max(0.0, now - due)
