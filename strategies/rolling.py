"""A rolling sum over a fixed window, shared by the feature processor and the SMA baseline.

O(1) per value; the total is recomputed exactly (``math.fsum``) each time the
ring buffer wraps, so float error cannot accumulate over a long replay and the
value depends only on the window's contents, not on where processing began.
"""

from __future__ import annotations

import math


class RollingSum:
    """Sum over the last ``window`` values; exact recompute on every wrap bounds drift."""

    __slots__ = ("_buf", "_idx", "count", "total", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self._buf = [0.0] * window
        self._idx = 0
        self.count = 0
        self.total = 0.0

    def push(self, x: float) -> None:
        i = self._idx
        buf = self._buf
        self.total += x - buf[i]
        buf[i] = x
        i += 1
        if i == self.window:
            i = 0
            self.total = math.fsum(buf)
        self._idx = i
        if self.count < self.window:
            self.count += 1

    @property
    def full(self) -> bool:
        return self.count == self.window

    @property
    def mean(self) -> float:
        return self.total / self.window
