"""SMA-cross baseline: the control group and the benchmark workload.

Long while the fast moving average of closes is above the slow one, short (or
flat when shorting is off) while below. Running sums over ring buffers keep it
O(1) per bar with the same rolling sum as the feature processor.
"""

from __future__ import annotations

from collections.abc import Sequence

from brokers.base import Bar
from strategies.base import Action, Decision, PositionView
from strategies.rolling import RollingSum

_ABOVE = (Action.BUY, "fast_above_slow")
_EQUAL = (Action.HOLD, "averages_equal")


class SmaCrossStrategy:
    """Decides from closes alone: no position, no confidence, no extras."""

    name = "sma_cross"
    model_sha256: str | None = None  # rule-based: no model

    def __init__(self, fast: int = 10, slow: int = 30, allow_short: bool = True) -> None:
        if fast >= slow:
            raise ValueError(f"sma_cross: fast window ({fast}) must be shorter than slow window ({slow})")
        self.fast = fast
        self.slow = slow
        self.allow_short = allow_short
        self.warmup_bars = slow
        self._windows: dict[str, tuple[RollingSum, RollingSum]] = {}
        self._below = (Action.SELL if allow_short else Action.CLOSE, "fast_below_slow")

    def reset(self, symbol: str) -> None:
        self._windows.pop(symbol, None)

    def decide(self, bars: Sequence[Bar], positions: Sequence[PositionView]) -> list[Decision]:
        # Runs on every bar, most of which change nothing: two pushes, two means, one comparison.
        decisions = []
        for bar in bars:
            symbol = bar.symbol
            windows = self._windows.get(symbol)
            if windows is None:
                windows = self._windows[symbol] = (RollingSum(self.fast), RollingSum(self.slow))
            fast, slow = windows
            close = bar.close
            fast.push(close)
            slow.push(close)
            if slow.count < slow.window:
                continue  # warming up
            f, s = fast.total / fast.window, slow.total / slow.window  # the windows' means
            action, reason = _ABOVE if f > s else self._below if f < s else _EQUAL
            decisions.append(Decision(symbol, bar.ts, action, None, None, reason))
        return decisions

    def describe(self) -> dict[str, object]:
        return {"name": self.name, "fast": self.fast, "slow": self.slow, "allow_short": self.allow_short}
