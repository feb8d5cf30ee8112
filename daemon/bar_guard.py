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


def _plainly_valid(bar: Bar) -> bool:
    """Every value check at once, for the bar that passes them all (nearly every bar).

    One chained comparison instead of five calls: NaN fails every comparison,
    infinity fails ``< inf``. A False here only means "look closer": the
    individual checks then find and name the problem.
    """
    try:
        return (
            type(bar.ts) is int
            and 0 < bar.low <= bar.open <= bar.high < _INF
            and bar.low <= bar.close <= bar.high
            and 0 <= bar.volume < _INF
            and type(bar.open) in _NUMBER and type(bar.high) in _NUMBER and type(bar.low) in _NUMBER
            and type(bar.close) in _NUMBER and type(bar.volume) in _NUMBER
        )
    except TypeError:
        return False


_INF = math.inf
_NUMBER = frozenset((float, int))

VALUE_CHECKS: tuple[BarCheck, ...] = (_finite, _positive_prices, _high_low, _inside_range, _volume)

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
        if not _plainly_valid(bar):
            # Something is off: the individual checks name the first problem, in their documented order.
            if not isinstance(bar.ts, int):
                return self._reject("not_finite", f"ts={bar.ts!r}")
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

    def accept_plain(self, bar: Bar) -> bool:
        """Accept ``bar`` if it is a plain continuation of its symbol, else change nothing and return False.

        Plain: every value check passes and it follows the symbol's last bar
        within the gap limit (so it is never an episode start). The verdict is
        the one ``check`` gives such a bar without a staleness clock (a
        replay); False only means "use ``check``", which names any problem.
        """
        last = self._last_ts.get(bar.symbol)
        if last is None or not _plainly_valid(bar) or not last < bar.ts <= last + self.max_gap_seconds:
            return False
        self._last_ts[bar.symbol] = bar.ts
        self.accepted += 1
        return True

    def _reject(self, reason: str, detail: str) -> GuardResult:
        self.rejected[reason] += 1
        return GuardResult(False, reason, detail)
