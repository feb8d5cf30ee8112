"""IB's bars in our vocabulary: 5-second real-time bars aggregated to the configured length, stamped at the close.

IB stamps every bar at its OPEN; ``Bar.ts`` is the CLOSE. ``Aggregator`` sums
the 5-second bars of one bucket (aligned to the epoch: a 60 s bar covers
[hh:mm:00, hh:mm+1:00)) and hands the bucket on when its last 5-second bar
arrives, or when a bar of a later bucket shows that the rest will not come.
A bucket it did not see from its first 5-second bar (the stream started or
resumed mid-bucket) is returned marked ``partial``: its open would be wrong,
so the adapter takes that bar from the historical API instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from brokers.base import Bar

__all__ = ["Aggregator", "Finished", "history_bar"]

STEP = 5  # IB's real-time bar length


@dataclass(frozen=True, slots=True)
class Finished:
    bar: Bar
    partial: bool  # the bucket's first 5-second bar(s) were not seen


class Aggregator:
    def __init__(self, symbol: str, seconds: int) -> None:
        if seconds % STEP:
            raise ValueError(f"bar length {seconds} s is not a multiple of IB's 5-second real-time bars")
        self.symbol = symbol
        self.seconds = seconds
        self._bucket: int | None = None
        self._o = self._h = self._l = self._c = self._v = 0.0
        self._partial = False

    def reset(self) -> None:
        """Forget the bucket in progress (the stream was interrupted: its missing part comes from history)."""
        self._bucket = None

    def add(self, ts_open: int, o: float, h: float, low: float, c: float, volume: float) -> list[Finished]:
        """One 5-second bar (stamped at its open); the buckets it finishes, oldest first."""
        bucket = ts_open - ts_open % self.seconds
        out: list[Finished] = []
        if self._bucket is not None and bucket != self._bucket:
            if bucket < self._bucket:
                return out  # a late 5-second bar of a bucket already handed on
            out.append(self._finish())
        if self._bucket is None:
            self._bucket = bucket
            self._o, self._h, self._l, self._v = o, h, low, 0.0
            self._partial = ts_open != bucket
        else:
            self._h, self._l = max(self._h, h), min(self._l, low)
        self._c = c
        self._v += volume if math.isfinite(volume) and volume > 0 else 0.0
        if ts_open + STEP >= bucket + self.seconds:
            out.append(self._finish())
        return out

    def _finish(self) -> Finished:
        assert self._bucket is not None
        bar = Bar(self.symbol, self._bucket + self.seconds, self._o, self._h, self._l, self._c, self._v)
        finished = Finished(bar, self._partial)
        self._bucket = None
        return finished


def history_bar(symbol: str, item: Any, seconds: int) -> Bar:
    """An ib_async ``BarData`` (``formatDate=2``: ``date`` is an aware UTC datetime of the open) as a Bar."""
    date = item.date
    if not isinstance(date, datetime):
        raise ValueError(f"historical bar without an intraday time: {date!r}")
    ts_open = int(date.timestamp())
    return Bar(symbol, ts_open + seconds, float(item.open), float(item.high), float(item.low), float(item.close),
               max(0.0, float(item.volume)))
