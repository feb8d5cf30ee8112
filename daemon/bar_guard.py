"""The bar guard: no decision is ever made on a bar that fails these checks.

Each check is a small function returning a reason code (or None); the guard
runs them in order and keeps per-symbol sequencing state. A gap beyond the
limit rejects the bar *and* restarts the symbol: the next bar is accepted as
an episode start, so recurrent strategies reset their memory there.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from brokers.base import Bar


@dataclass(frozen=True, slots=True)
class GuardResult:
    accepted: bool
    reason: str = ""
    detail: str = ""
    episode_start: bool = False


_ACCEPT = GuardResult(True)
_ACCEPT_START = GuardResult(True, episode_start=True)

BarCheck = Callable[[Bar], tuple[str, str] | None]


def _timestamp(bar: Bar) -> tuple[str, str] | None:
    if not isinstance(bar.ts, int):
        return "not_finite", f"ts={bar.ts!r}"
    return None


def _finite(bar: Bar) -> tuple[str, str] | None:
    for name in ("open", "high", "low", "close", "volume"):
        value = getattr(bar, name)
        if not isinstance(value, float | int) or not math.isfinite(value):
            return "not_finite", f"{name}={value!r}"
    return None


def _positive_prices(bar: Bar) -> tuple[str, str] | None:
    if bar.open <= 0 or bar.high <= 0 or bar.low <= 0 or bar.close <= 0:
        return "non_positive_price", f"o={bar.open} h={bar.high} l={bar.low} c={bar.close}"
    return None


def _high_low(bar: Bar) -> tuple[str, str] | None:
    if bar.high < bar.low:
        return "high_below_low", f"high={bar.high} < low={bar.low}"
    return None


def _inside_range(bar: Bar) -> tuple[str, str] | None:
    if not bar.low <= bar.open <= bar.high:
        return "open_outside_range", f"open={bar.open} not in [{bar.low}, {bar.high}]"
    if not bar.low <= bar.close <= bar.high:
        return "close_outside_range", f"close={bar.close} not in [{bar.low}, {bar.high}]"
    return None


def _volume(bar: Bar) -> tuple[str, str] | None:
    if bar.volume < 0:
        return "negative_volume", f"volume={bar.volume}"
    return None


VALUE_CHECKS: tuple[BarCheck, ...] = (_timestamp, _finite, _positive_prices, _high_low, _inside_range, _volume)

REJECTION_REASONS: tuple[str, ...] = (
    "not_finite",
    "non_positive_price",
    "high_below_low",
    "open_outside_range",
    "close_outside_range",
    "negative_volume",
    "out_of_order",
    "duplicate",
    "gap",
    "stale",
)


class BarGuard:
    """Validates bars one at a time and counts every rejection by reason."""

    def __init__(self, max_gap_seconds: int, max_age_seconds: int | None = None) -> None:
        self.max_gap_seconds = max_gap_seconds
        self.max_age_seconds = max_age_seconds
        self._last_ts: dict[str, int] = {}
        self.accepted = 0
        self.rejected: Counter[str] = Counter()

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    def check(self, bar: Bar, now: float | None = None) -> GuardResult:
        """``now`` (epoch seconds) enables the staleness check in live trading."""
        for check in VALUE_CHECKS:
            problem = check(bar)
            if problem is not None:
                return self._reject(*problem)
        last = self._last_ts.get(bar.symbol)
        if last is not None:
            if bar.ts == last:
                return self._reject("duplicate", f"ts={bar.ts} already seen")
            if bar.ts < last:
                return self._reject("out_of_order", f"ts={bar.ts} before last {last}")
            if bar.ts - last > self.max_gap_seconds:
                # forget the symbol: the next bar starts a new episode
                del self._last_ts[bar.symbol]
                return self._reject("gap", f"{bar.ts - last}s since last bar > {self.max_gap_seconds}s")
        if now is not None and self.max_age_seconds is not None and now - bar.ts > self.max_age_seconds:
            return self._reject("stale", f"bar closed {now - bar.ts:.0f}s ago")
        self._last_ts[bar.symbol] = bar.ts
        self.accepted += 1
        return _ACCEPT_START if last is None else _ACCEPT

    def _reject(self, reason: str, detail: str) -> GuardResult:
        self.rejected[reason] += 1
        return GuardResult(False, reason, detail)
