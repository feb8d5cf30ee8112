"""The quality report of a bar file: what a backtest or a training run on it would stumble over.

A fetched (or any) file is judged as the daemon will read it (``brokers.history.load_bars``: close-stamped
UTC bars in file order), and nothing is dropped or repaired here: the report says what is wrong, the bar
guard rejects it at replay time. It lists

* gaps against the exchange calendar (``exchange_calendars``, e.g. XNYS): regular-session minutes with no
  bar, grouped into runs, for minute bars only (a calendar knows minutes, not a vendor's hourly grid);
  bars outside the regular session (pre/post-market) are counted, not flagged; or, for a venue with its own
  session rule (``risk.calendar.Sessions``: OANDA's FX week), every slot of the bar-length grid that opens in
  session (bars that divide an hour: S5 to H1);
* duplicate timestamps and out-of-order rows, in file order;
* the bars the daemon's own ``BarGuard`` would reject, by its reason codes (the same checks, not a copy);
* outliers: a bar whose open, high, low or close lies further from the median close of its neighbours
  than ``outlier_z`` robust standard deviations (median absolute deviation) of that distance: a bad
  print shows up as one bar, not as the two returns around it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from brokers.base import Bar
from brokers.errors import DataError
from daemon.bar_guard import BarGuard

if TYPE_CHECKING:
    from risk.calendar import Sessions

__all__ = ["Gap", "Outlier", "QualityReport", "assess"]

_EXAMPLES = 5  # gaps, duplicates, ... shown by name; the counts are always complete
_NEIGHBOURS = 11  # bars in the centred window whose median close is an outlier's reference
_MIN_MOVE = 1e-3  # a distance below 0.1% is never an outlier, however calm the series (a constant price)
_MAD_TO_SD = 1.4826
_HOUR = 3600


@dataclass(frozen=True, slots=True)
class Gap:
    """Regular-session bars missing in a row: ``start`` is the first missing bar's close (UTC epoch s)."""

    start: int
    bars: int


@dataclass(frozen=True, slots=True)
class Outlier:
    ts: int
    field: str
    price: float
    reference: float  # the median close of the neighbouring bars
    z: float


@dataclass
class QualityReport:
    rows: int
    bar_seconds: int
    first_ts: int | None = None
    last_ts: int | None = None
    calendar: str | None = None
    calendar_note: str = ""  # why the calendar check did not run, when it did not
    expected_bars: int = 0  # regular-session bars the calendar expects in the range
    missing_bars: int = 0
    gaps: list[Gap] = field(default_factory=list)  # every run of missing bars, largest first
    outside_session: int = 0
    duplicates: list[int] = field(default_factory=list)  # timestamps of the rows that repeat an earlier one
    out_of_order: list[int] = field(default_factory=list)  # timestamps of rows earlier than one before them
    guard_rejections: dict[str, int] = field(default_factory=dict)
    outliers: list[Outlier] = field(default_factory=list)
    outlier_z: float = 10.0

    @property
    def problems(self) -> int:
        """Rows and missing bars a user should look at (outside-session bars are not a problem)."""
        return (self.missing_bars + len(self.duplicates) + len(self.out_of_order) + len(self.outliers)
                + sum(self.guard_rejections.values()))

    def as_dict(self) -> dict[str, object]:
        doc = asdict(self)
        doc["first"] = _iso(self.first_ts)
        doc["last"] = _iso(self.last_ts)
        doc["problems"] = self.problems
        return doc

    def render(self, name: str) -> str:
        lines = [f"quality of {name}: {self.rows:,} bars"
                 + (f", {_iso(self.first_ts)} .. {_iso(self.last_ts)} (bar close, UTC)" if self.rows else "")]
        if self.calendar is None:
            lines.append(f"  calendar gaps: not checked ({self.calendar_note})")
        else:
            present = self.expected_bars - self.missing_bars
            lines.append(f"  calendar {self.calendar}: {present:,} of {self.expected_bars:,} regular-session bars "
                         f"present; {self.missing_bars:,} missing in {len(self.gaps):,} gap(s)")
            for gap in self.gaps[:_EXAMPLES]:
                lines.append(f"    from {_iso(gap.start)}: {gap.bars:,} bar(s) missing")
            lines.append(f"  outside the regular session: {self.outside_session:,} bar(s) (extended hours, "
                         "not gaps)")
        lines.append(f"  duplicate timestamps: {len(self.duplicates):,}{_examples(self.duplicates)}")
        lines.append(f"  out-of-order rows: {len(self.out_of_order):,}{_examples(self.out_of_order)}")
        rejected = sum(self.guard_rejections.values())
        reasons = ", ".join(f"{k} {v:,}" for k, v in sorted(self.guard_rejections.items()))
        lines.append(f"  bar guard would reject: {rejected:,}{f' ({reasons})' if reasons else ''}")
        lines.append(f"  outliers (> {self.outlier_z:g} robust sd from the neighbours' median): {len(self.outliers):,}")
        for o in self.outliers[:_EXAMPLES]:
            lines.append(f"    {_iso(o.ts)} {o.field} {o.price:g} vs median close {o.reference:g} ({o.z:.0f} sd)")
        return "\n".join(lines)


def assess(
    bars: Sequence[Bar],
    *,
    bar_seconds: int,
    max_gap_seconds: int,
    calendar: str | None = "XNYS",
    sessions: Sessions | None = None,
    start: int | None = None,
    end: int | None = None,
    outlier_z: float = 10.0,
) -> QualityReport:
    """Judge ``bars`` (file order, close-stamped). Calendar gaps are counted over bars *opening* in
    ``[start, end)`` (UTC epoch seconds; default: from the file's first bar to its last).

    ``sessions`` (a venue's own session rule, e.g. the FX week the OANDA adapter builds bars by) replaces the
    exchange ``calendar``: every bar slot on the bar-length grid that opens in session is expected.
    """
    report = QualityReport(rows=len(bars), bar_seconds=bar_seconds, outlier_z=outlier_z)
    stamps = np.array([b.ts for b in bars], dtype=np.int64)
    if len(stamps):
        report.first_ts, report.last_ts = int(stamps.min()), int(stamps.max())
    report.duplicates, report.out_of_order = _sequence(stamps)
    guard = BarGuard(max_gap_seconds)
    for bar in bars:
        guard.check(bar)
    report.guard_rejections = dict(guard.rejected)
    report.outliers = _outliers(bars, outlier_z)
    if sessions is not None:
        if _HOUR % bar_seconds:
            report.calendar_note = f"{bar_seconds} s bars; the session grid check needs bars that divide an hour"
        elif start is None and not len(stamps):
            report.calendar_note = "no bars"
        else:
            _session_gaps(report, stamps - bar_seconds, sessions, start, end)
    elif calendar is None:
        report.calendar_note = "no calendar given"
    elif bar_seconds != 60:
        report.calendar_note = f"{bar_seconds} s bars; the calendar check needs minute bars"
    elif start is None and not len(stamps):
        report.calendar_note = "no bars"
    else:
        _calendar_gaps(report, stamps - bar_seconds, calendar, start, end)
    return report


def _sequence(stamps: np.ndarray) -> tuple[list[int], list[int]]:
    """Rows repeating an earlier timestamp, and rows earlier than the latest timestamp before them."""
    duplicates: list[int] = []
    out_of_order: list[int] = []
    seen: set[int] = set()
    latest: int | None = None
    for ts in stamps.tolist():
        if ts in seen:
            duplicates.append(ts)
        elif latest is not None and ts < latest:
            out_of_order.append(ts)
        seen.add(ts)
        latest = ts if latest is None else max(latest, ts)
    return duplicates, out_of_order


def _outliers(bars: Sequence[Bar], z: float) -> list[Outlier]:
    frame = pd.DataFrame([(b.ts, b.open, b.high, b.low, b.close) for b in bars],
                         columns=["ts", "open", "high", "low", "close"])
    frame = frame.drop_duplicates("ts").sort_values("ts")
    prices = frame[["open", "high", "low", "close"]]
    frame = frame[(np.isfinite(prices) & (prices > 0)).all(axis=1)].reset_index(drop=True)
    if len(frame) < 3:
        return []
    reference = frame["close"].rolling(_NEIGHBOURS, center=True, min_periods=3).median()
    base = np.log(frame["close"] / reference)
    scale = _MAD_TO_SD * float(np.nanmedian(np.abs(base - np.nanmedian(base))))
    limit = max(z * scale, _MIN_MOVE)
    found: list[Outlier] = []
    for name in ("open", "high", "low", "close"):
        distance = np.abs(np.log(frame[name] / reference))
        for i in np.flatnonzero((distance > limit).to_numpy()):
            sd = float(distance.iloc[i]) / scale if scale > 0 else math.inf
            found.append(Outlier(int(frame["ts"].iloc[i]), name, float(frame[name].iloc[i]),
                                 float(reference.iloc[i]), sd))
    found.sort(key=lambda o: (o.ts, o.field))
    return found


def _calendar_gaps(report: QualityReport, opens: np.ndarray, name: str, start: int | None, end: int | None) -> None:
    import exchange_calendars

    present = np.unique(opens)
    lo = int(present[0]) if start is None else start
    hi = int(present[-1]) + 60 if end is None else end
    span_lo = min(lo, int(present[0])) if len(present) else lo
    span_hi = max(hi, int(present[-1]) + 60) if len(present) else hi
    first_day = datetime.fromtimestamp(span_lo, UTC).date()
    last_day = datetime.fromtimestamp(span_hi, UTC).date()
    try:
        cal = exchange_calendars.get_calendar(name, start=first_day - timedelta(days=7),
                                              end=last_day + timedelta(days=7))
    except exchange_calendars.errors.InvalidCalendarName as exc:
        raise DataError(f"unknown exchange calendar {name!r} (e.g. XNYS, XNAS, XLON)") from exc
    minutes = cal.minutes_in_range(pd.Timestamp(span_lo, unit="s", tz=UTC), pd.Timestamp(span_hi, unit="s", tz=UTC))
    _gaps(report, name, present, np.asarray(minutes.asi8 // 1_000_000_000, dtype=np.int64), lo, hi)


def _session_gaps(report: QualityReport, opens: np.ndarray, sessions: Sessions, start: int | None,
                  end: int | None) -> None:
    """The bar-length grid over the range and the file, each slot expected when it opens in ``sessions``."""
    from risk.calendar import CalendarRangeError

    step = report.bar_seconds
    present = np.unique(opens)
    lo = int(present[0]) if start is None else start
    hi = int(present[-1]) + step if end is None else end
    span_lo = min(lo, int(present[0])) if len(present) else lo
    span_hi = max(hi, int(present[-1]) + step) if len(present) else hi
    grid = range(span_lo - span_lo % step, span_hi, step)
    try:
        session = np.array([t for t in grid if sessions.seconds_to_close(t) is not None], dtype=np.int64)
    except CalendarRangeError as exc:
        raise DataError(f"the {sessions.name} sessions do not cover the file ({exc})") from None
    _gaps(report, sessions.name, present, session, lo, hi)


def _gaps(report: QualityReport, name: str, present: np.ndarray, session: np.ndarray, lo: int, hi: int) -> None:
    """Expected bar opens (``session``, inside ``[lo, hi)``) against the file's: missing runs and outsiders."""
    expected = session[(session >= lo) & (session < hi)]
    missing = np.setdiff1d(expected, present, assume_unique=True)
    report.calendar = name
    report.expected_bars = len(expected)
    report.missing_bars = len(missing)
    report.outside_session = int(np.count_nonzero(~np.isin(present, session)))
    if len(missing):
        runs = np.split(missing, np.flatnonzero(np.diff(missing) != report.bar_seconds) + 1)
        gaps = [Gap(int(run[0]) + report.bar_seconds, len(run)) for run in runs]
        report.gaps = sorted(gaps, key=lambda g: (-g.bars, g.start))


def _iso(ts: int | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%MZ")


def _examples(stamps: list[int]) -> str:
    return f" (first at {', '.join(_iso(t) for t in stamps[:_EXAMPLES])})" if stamps else ""
