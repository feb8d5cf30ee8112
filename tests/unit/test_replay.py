"""Bar loading (CSV/Parquet, columns, timezones, errors) and the replay feed."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import math
import time
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from brokers.base import Bar
from brokers.errors import DataError
from brokers.history import (
    BUNDLED_SYMBOL,
    bundled_dataset_path,
    load_bars,
    load_bundled,
    repeat_bars,
)
from brokers.sim.replay import ReplayFeed

JAN2_08Z = 1483344000  # 2017-01-02T08:00:00Z
JUL3_07Z = 1499065200  # 2017-07-03T07:00:00Z

_HEADER = "ts,open,high,low,close,volume\n"
_ROWS = [
    "2017-01-02T08:00:00Z,1.1,1.2,1.0,1.15,10\n",
    "2017-01-02T09:00:00Z,1.15,1.25,1.1,1.2,11\n",
    "2017-01-02T10:00:00Z,1.2,1.3,1.15,1.25,12\n",
]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _bars(n: int, start: int = JAN2_08Z, step: int = 3600) -> list[Bar]:
    return [Bar("X", start + i * step, 1.0, 1.0, 1.0, 1.0) for i in range(n)]


# --- bundled data ------------------------------------------------------------------------------


def test_bundled_file_loads_fast_with_expected_shape() -> None:
    started = time.perf_counter()
    bars = load_bundled()
    elapsed = time.perf_counter() - started
    assert len(bars) == 6225
    assert all(a.ts < b.ts for a, b in itertools.pairwise(bars))
    assert bars[0].ts == int(datetime(2017, 1, 1, 23, tzinfo=UTC).timestamp())
    assert bars[0] == Bar(BUNDLED_SYMBOL, 1483311600, 1.05236, 1.05253, 1.05221, 1.05227, 143539993.3)
    assert isinstance(bars[0].ts, int)
    assert elapsed < 1.0
    assert bundled_dataset_path().name == "eurusd_1h_2017.csv"


# --- columns, timezones, stamps ------------------------------------------------------------------


def test_column_mapping_and_naive_local_timezone(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "berlin.csv",
        "When,O,H,L,C\n2017-01-02 09:00:00,1.1,1.2,1.0,1.15\n2017-07-03 09:00:00,1.2,1.3,1.1,1.25\n",
    )
    bars = load_bars(
        path,
        "EURUSD",
        columns={"ts": "When", "open": "O", "high": "H", "low": "L", "close": "C"},
        timezone="Europe/Berlin",
    )
    # Berlin is UTC+1 in January and UTC+2 (summer time) in July.
    assert [b.ts for b in bars] == [JAN2_08Z, JUL3_07Z]
    assert bars[0] == Bar("EURUSD", JAN2_08Z, 1.1, 1.2, 1.0, 1.15, 0.0)


def test_column_names_match_case_insensitively(tmp_path: Path) -> None:
    path = _write(tmp_path, "caps.csv", "Time,Open,High,Low,Close,Volume\n2017-01-02T08:00:00Z,1,2,0.5,1.5,7\n")
    with pytest.raises(DataError, match=r"missing column\(s\) ts; available columns: Time, Open"):
        load_bars(path, "X")
    bars = load_bars(path, "X", columns={"ts": "Time"})
    assert bars == [Bar("X", JAN2_08Z, 1.0, 2.0, 0.5, 1.5, 7.0)]


def test_aware_timestamps_ignore_the_timezone_setting(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "offsets.csv",
        _HEADER + "2017-01-02T09:00:00+01:00,1,1,1,1,0\n2017-07-03T09:00:00+02:00,1,1,1,1,0\n",
    )
    bars = load_bars(path, "X", timezone="America/New_York")
    assert [b.ts for b in bars] == [JAN2_08Z, JUL3_07Z]


def test_stamp_open_shifts_to_close(tmp_path: Path) -> None:
    path = _write(tmp_path, "open.csv", _HEADER + "".join(_ROWS))
    bars = load_bars(path, "X", stamp="open", bar_seconds=3600)
    assert [b.ts for b in bars] == [JAN2_08Z + 3600, JAN2_08Z + 7200, JAN2_08Z + 10800]
    with pytest.raises(DataError, match="bar_seconds"):
        load_bars(path, "X", stamp="open")


def test_bar_seconds_is_ignored_for_close_stamped_files(tmp_path: Path) -> None:
    path = _write(tmp_path, "close.csv", _HEADER + "".join(_ROWS))
    assert load_bars(path, "X", bar_seconds=3600)[0].ts == JAN2_08Z


def test_epoch_seconds_and_milliseconds(tmp_path: Path) -> None:
    seconds = _write(tmp_path, "s.csv", f"ts,open,high,low,close\n{JAN2_08Z},1,1,1,1\n{JAN2_08Z + 3600},1,1,1,1\n")
    millis = _write(
        tmp_path, "ms.csv", f"ts,open,high,low,close\n{JAN2_08Z}000,1,1,1,1\n{JAN2_08Z + 3600}000,1,1,1,1\n"
    )
    expected = [JAN2_08Z, JAN2_08Z + 3600]
    assert [b.ts for b in load_bars(seconds, "X")] == expected
    assert [b.ts for b in load_bars(millis, "X", timezone="Asia/Tokyo")] == expected


def test_parquet_roundtrip_matches_csv(tmp_path: Path) -> None:
    csv_path = _write(tmp_path, "bars.csv", _HEADER + "".join(_ROWS))
    from_csv = load_bars(csv_path, "X")
    frame = pd.read_csv(csv_path)
    frame.to_parquet(tmp_path / "bars.parquet")
    frame.to_parquet(tmp_path / "bars.pq")
    assert load_bars(tmp_path / "bars.parquet", "X") == from_csv
    assert load_bars(tmp_path / "bars.pq", "X") == from_csv


def test_parquet_native_datetime_column(tmp_path: Path) -> None:
    frame = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2017-01-02 09:00", "2017-07-03 09:00"]),  # naive, Berlin wall clock
            "open": [1.0, 2.0],
            "high": [1.0, 2.0],
            "low": [1.0, 2.0],
            "close": [1.0, 2.0],
        }
    )
    frame.to_parquet(tmp_path / "naive.parquet")
    bars = load_bars(tmp_path / "naive.parquet", "X", timezone="Europe/Berlin")
    assert [b.ts for b in bars] == [JAN2_08Z, JUL3_07Z]
    frame["ts"] = frame["ts"].dt.tz_localize("Europe/Berlin")
    frame.to_parquet(tmp_path / "aware.parquet")
    assert [b.ts for b in load_bars(tmp_path / "aware.parquet", "X")] == [JAN2_08Z, JUL3_07Z]


def test_gzipped_csv(tmp_path: Path) -> None:
    path = tmp_path / "bars.csv.gz"
    with gzip.open(path, "wt") as fh:
        fh.write(_HEADER + "".join(_ROWS))
    assert len(load_bars(path, "X")) == 3


# --- what is kept, what is refused ----------------------------------------------------------------


def test_unparseable_price_becomes_nan_and_row_is_kept(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bad_price.csv",
        _HEADER + _ROWS[0] + "2017-01-02T09:00:00Z,1.15,oops,1.1,1.2,11\n" + "2017-01-02T10:00:00Z,1.2,1.3,1.15,,12\n",
    )
    bars = load_bars(path, "X")
    assert len(bars) == 3
    assert math.isnan(bars[1].high) and bars[1].open == 1.15
    assert math.isnan(bars[2].close)
    assert bars[0].high == 1.2


def test_row_order_is_preserved(tmp_path: Path) -> None:
    path = _write(tmp_path, "unordered.csv", _HEADER + _ROWS[1] + _ROWS[0] + _ROWS[2])
    assert [b.ts for b in load_bars(path, "X")] == [JAN2_08Z + 3600, JAN2_08Z, JAN2_08Z + 7200]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"nope\.csv: bar file not found"):
        load_bars(tmp_path / "nope.csv", "X")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = _write(tmp_path, "bars.txt", _HEADER)
    with pytest.raises(DataError, match=r"bars\.txt: unsupported file type"):
        load_bars(path, "X")


def test_missing_columns_are_named_with_available_ones(tmp_path: Path) -> None:
    path = _write(tmp_path, "cols.csv", "ts,open,close\n2017-01-02T08:00:00Z,1,1\n")
    with pytest.raises(DataError) as info:
        load_bars(path, "X")
    message = str(info.value)
    assert "cols.csv" in message
    assert "missing column(s) high, low" in message
    assert "available columns: ts, open, close" in message


def test_missing_mapped_column_names_both_sides(tmp_path: Path) -> None:
    path = _write(tmp_path, "mapped.csv", _HEADER + _ROWS[0])
    with pytest.raises(DataError, match=r"missing column\(s\) Vol \(for volume\)"):
        load_bars(path, "X", columns={"volume": "Vol"})
    with pytest.raises(DataError, match="unknown key"):
        load_bars(path, "X", columns={"price": "close"})


def test_unparseable_timestamp_names_row_and_value(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad_ts.csv", _HEADER + _ROWS[0] + _ROWS[1] + "not-a-time,1,1,1,1,1\n")
    with pytest.raises(DataError, match=r"bad_ts\.csv: unparseable timestamp 'not-a-time' at data row 3 \(line 4"):
        load_bars(path, "X")


def test_empty_timestamp_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty_ts.csv", _HEADER + _ROWS[0] + ",1,1,1,1,1\n")
    with pytest.raises(DataError, match=r"unparseable timestamp .* at data row 2"):
        load_bars(path, "X")


def test_unparseable_epoch_timestamp(tmp_path: Path) -> None:
    path = _write(tmp_path, "bad_epoch.csv", f"ts,open,high,low,close\n{JAN2_08Z},1,1,1,1\nsoon,1,1,1,1\n")
    with pytest.raises(DataError, match="unparseable timestamp 'soon' at data row 2"):
        load_bars(path, "X")


def test_unknown_timezone(tmp_path: Path) -> None:
    path = _write(tmp_path, "tz.csv", _HEADER + _ROWS[0])
    with pytest.raises(DataError, match="unknown timezone 'Mars/Olympus'"):
        load_bars(path, "X", timezone="Mars/Olympus")


def test_empty_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "empty.csv", "")
    with pytest.raises(DataError, match="empty"):
        load_bars(path, "X")


def test_nonexistent_local_time_is_refused(tmp_path: Path) -> None:
    # 02:30 on 2017-03-26 does not exist in Berlin (clocks jump from 02:00 to 03:00).
    path = _write(tmp_path, "dst.csv", "ts,open,high,low,close\n2017-03-26 02:30:00,1,1,1,1\n")
    with pytest.raises(DataError, match="Europe/Berlin"):
        load_bars(path, "X", timezone="Europe/Berlin")


# --- repeat_bars --------------------------------------------------------------------------------


def test_repeat_bars_keeps_order_weekday_and_hour() -> None:
    bars = load_bundled()
    repeated = repeat_bars(bars, 100_000)
    assert len(repeated) == 100_000
    assert all(a.ts < b.ts for a, b in itertools.pairwise(repeated))
    for i in (0, 6224, 6225, 50_000, 99_999):
        original, copy = bars[i % len(bars)], repeated[i]
        assert (copy.ts - original.ts) % (7 * 86400) == 0
        assert (copy.open, copy.close) == (original.open, original.close)
        a, b = original.time, copy.time
        assert (a.weekday(), a.hour) == (b.weekday(), b.hour)


def test_repeat_bars_short_and_edge_cases() -> None:
    bars = _bars(3)
    assert repeat_bars(bars, 2) == bars[:2]
    assert [b.ts - bars[0].ts for b in repeat_bars(bars, 5)] == [0, 3600, 7200, 604800, 608400]
    with pytest.raises(ValueError):
        repeat_bars([], 1)


# --- ReplayFeed ---------------------------------------------------------------------------------


async def test_unpaced_feed_yields_everything_and_tracks_position() -> None:
    bars = _bars(1000)
    feed = ReplayFeed(bars)
    assert (feed.position, feed.total, feed.done, feed.last_bar) == (0, 1000, False, None)
    seen = [bar async for bar in feed]
    assert seen == bars
    assert (feed.position, feed.done, feed.last_bar, feed.lag_seconds) == (1000, True, bars[-1], 0.0)


async def test_unpaced_feed_lets_other_tasks_run() -> None:
    ticks = 0
    stop = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    async for _ in ReplayFeed(_bars(2560)):
        pass
    stop.set()
    await task
    assert ticks - before >= 9


async def test_start_index_skips_and_counts() -> None:
    bars = _bars(10)
    feed = ReplayFeed(bars, start_index=7)
    assert feed.position == 7
    assert [b async for b in feed] == bars[7:]
    assert feed.position == 10
    with pytest.raises(ValueError):
        ReplayFeed(bars, start_index=11)


async def test_paced_feed_follows_schedule() -> None:
    feed = ReplayFeed(_bars(41), pace=200.0)
    started = time.perf_counter()
    count = 0
    async for _ in feed:
        count += 1
    elapsed = time.perf_counter() - started
    assert count == 41
    assert 0.15 <= elapsed < 1.5  # 40 intervals of 5 ms = 0.2 s
    assert feed.lag_seconds < 0.5


async def test_paced_feed_reports_lag_of_a_slow_consumer() -> None:
    feed = ReplayFeed(_bars(3), pace=100.0)
    async for _ in feed:
        await asyncio.sleep(0.05)  # a consumer slower than one 10 ms interval
    assert feed.lag_seconds >= 0.05


async def test_stop_ends_a_sleeping_feed_promptly() -> None:
    feed = ReplayFeed(_bars(100), pace=0.5)  # one bar every two seconds
    got: list[Bar] = []

    async def consume() -> None:
        async for bar in feed:
            got.append(bar)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.05)
    started = time.perf_counter()
    feed.stop()
    await asyncio.wait_for(task, timeout=1.0)
    assert time.perf_counter() - started < 0.5
    assert len(got) == 1 and feed.done and feed.position == 1


async def test_stop_before_iteration_yields_nothing() -> None:
    feed = ReplayFeed(_bars(5))
    feed.stop()
    assert [b async for b in feed] == []


def test_invalid_pace() -> None:
    with pytest.raises(ValueError):
        ReplayFeed([], pace=-1.0)
