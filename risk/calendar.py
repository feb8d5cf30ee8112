"""When may new positions be opened: exchange sessions or the 24x5 FX week.

Both answer one question for a UTC epoch second: how many seconds until the
current session closes, or None when the market is closed. The exchange
calendar's schedule is flattened once into sorted integer lists so a lookup is
a bisect, not a pandas call: the trading-window layer runs on every order and
the whole bar-to-order path has a budget of a few hundred microseconds.
"""

from __future__ import annotations

import warnings
from bisect import bisect_right
from datetime import date
from typing import Protocol

DAY = 86_400
WEEK = 7 * DAY
_MONDAY = 4 * DAY  # 1970-01-05, the first Monday after the epoch (a Thursday)


class CalendarRangeError(LookupError):
    """The time lies outside the span the exchange calendar was built for."""


class Sessions(Protocol):
    name: str

    def seconds_to_close(self, ts: int) -> int | None: ...


class FxWeek:
    """The 24x5 FX week: closed from Friday ``close_hour`` to Sunday ``open_hour`` UTC.

    FX has no exchange calendar; the real weekend boundary is 17:00 New York
    time and moves with US daylight saving by an hour. A fixed UTC hour keeps
    backtests reproducible and is at worst an hour conservative or generous at
    the Friday close, which the entry cut-off covers. Holidays are ignored.
    """

    name = "FX24x5"

    def __init__(self, close_hour: int = 21, open_hour: int = 21) -> None:
        self._close = 4 * DAY + close_hour * 3600  # Friday, seconds since Monday 00:00
        self._open = 6 * DAY + open_hour * 3600  # Sunday

    def seconds_to_close(self, ts: int) -> int | None:
        since_monday = (ts - _MONDAY) % WEEK
        if self._close <= since_monday < self._open:
            return None
        return (self._close - since_monday) % WEEK


class ExchangeSessions:
    """An exchange's sessions (holidays, early closes, lunch breaks) from exchange_calendars."""

    def __init__(self, code: str, start: date | None = None) -> None:
        import exchange_calendars as xc  # imported here: ~0.7 s, and FX setups never need it

        with warnings.catch_warnings():
            # exchange_calendars trips newer pandas' deprecations internally; nothing for us to act on.
            warnings.simplefilter("ignore", DeprecationWarning)
            schedule = xc.get_calendar(code, start=start).schedule
        self.name = code
        self._opens = [_epoch(t) for t in schedule["open"]]
        self._closes = [_epoch(t) for t in schedule["close"]]
        self._break_starts = [_epoch_or_none(t) for t in schedule["break_start"]]
        self._break_ends = [_epoch_or_none(t) for t in schedule["break_end"]]

    @property
    def span(self) -> tuple[int, int]:
        return self._opens[0], self._closes[-1]

    def seconds_to_close(self, ts: int) -> int | None:
        i = bisect_right(self._closes, ts)  # the first session closing after ts
        if i == len(self._closes) or (i == 0 and ts < self._opens[0]):
            raise CalendarRangeError(f"{self.name} calendar does not cover ts={ts}")
        if ts < self._opens[i]:
            return None
        break_start, break_end = self._break_starts[i], self._break_ends[i]
        if break_start is not None and break_end is not None and break_start <= ts < break_end:
            return None
        return self._closes[i] - ts


def sessions_for(code: str | None, *, start: date | None = None, close_hour: int = 21,
                 open_hour: int = 21) -> Sessions:
    """The sessions for a calendar code; None means the FX week."""
    if code is None:
        return FxWeek(close_hour, open_hour)
    return ExchangeSessions(code, start)


def calendar_names() -> set[str]:
    """Every code exchange_calendars accepts, aliases included (for config validation)."""
    import exchange_calendars as xc

    return set(xc.get_calendar_names(include_aliases=True))


def _epoch(t: object) -> int:
    return int(t.timestamp())  # type: ignore[attr-defined]


def _epoch_or_none(t: object) -> int | None:
    import pandas as pd

    return None if pd.isna(t) else _epoch(t)
