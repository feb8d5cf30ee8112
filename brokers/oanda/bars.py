"""Bars built from the pricing stream's ticks, stamped at their close, in the venue's time.

A bar's interval is ``[open, open + bar_seconds)``; a tick belongs to the
interval its venue time falls in. The bar is complete, and handed on, when
the venue's clock passes its close: a tick of a later interval or a
heartbeat stamped at or after the close (OANDA sends one every ~5 s), never
the local clock, so a replayed or delayed stream builds the same bars.
An interval without a tick makes no bar (FX: nothing traded, nothing to say),
and neither does a tick outside the FX session (the weekend): those are counted.

After a reconnect the adapter backfills complete candles and then ``seed``s
the interval in progress with its incomplete candle (OHLC so far), so the bar
the live ticks finish is whole, not the part after the reconnect.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from brokers.base import Bar

__all__ = ["BarBuilder"]


@dataclass(slots=True)
class _Forming:
    start: int
    open: float
    high: float
    low: float
    close: float
    volume: float


class BarBuilder:
    """One instrument's bars from ticks. ``emit`` receives each complete bar once, in time order."""

    def __init__(self, symbol: str, bar_seconds: int, emit: Callable[[Bar], None],
                 session_open: Callable[[int], bool] | None = None) -> None:
        self.symbol = symbol
        self.step = bar_seconds
        self._emit = emit
        self._session_open = session_open
        self._forming: _Forming | None = None
        self.floor = 0  # close of the last bar handed on: nothing at or before it is built again
        self.late_ticks = 0
        self.closed_ticks = 0  # ticks outside the session

    def tick(self, ts: int, price: float) -> None:
        self.advance(ts)
        if self._session_open is not None and not self._session_open(ts):
            self.closed_ticks += 1
            return
        start = ts - ts % self.step
        if start + self.step <= self.floor:
            self.late_ticks += 1
            return
        bar = self._forming
        if bar is None:
            self._forming = _Forming(start, price, price, price, price, 1.0)
        else:
            bar.high = max(bar.high, price)
            bar.low = min(bar.low, price)
            bar.close = price
            bar.volume += 1

    def advance(self, ts: int) -> None:
        """The venue's clock reached ``ts``: the forming bar is complete if it closed by then."""
        bar = self._forming
        if bar is not None and ts >= bar.start + self.step:
            self._forming = None
            self._hand_on(Bar(self.symbol, bar.start + self.step, bar.open, bar.high, bar.low, bar.close,
                              bar.volume))

    def delivered(self, close_ts: int) -> None:
        """A bar closing at ``close_ts`` was handed on by another path (a backfill): build nothing up to it."""
        self.floor = max(self.floor, close_ts)
        if self._forming is not None and self._forming.start + self.step <= self.floor:
            self._forming = None

    def discard(self) -> None:
        """The connection was lost: the interval in progress is incomplete (a backfill will bring it)."""
        self._forming = None

    def seed(self, open_ts: int, o: float, h: float, low: float, c: float, volume: float) -> None:
        """Start the interval in progress from the venue's incomplete candle (the ticks before a reconnect)."""
        if open_ts + self.step <= self.floor:
            return
        self._forming = _Forming(open_ts, o, h, low, c, volume)

    def _hand_on(self, bar: Bar) -> None:
        if bar.ts <= self.floor:
            return
        self.floor = bar.ts
        self._emit(bar)
