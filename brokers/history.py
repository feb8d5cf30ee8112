"""Bar files: the bundled dataset, users' CSV/Parquet history, and the long replay set.

Loading is deliberately permissive about *values* and strict about *shape*:
a price cell that cannot be parsed becomes NaN and the row is kept, because
the daemon's bar guard is the one place that rejects bad bars (with a reason
and a counter). Silently dropping or re-sorting rows here would hide data
problems from it. What cannot become a ``Bar`` at all (no such file, missing
columns, a timestamp that is not a time) is a ``DataError`` naming the file.
"""

from __future__ import annotations

import importlib.resources
import math
import pathlib
import zoneinfo
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pandas as pd

from brokers.base import Bar
from brokers.errors import DataError

BUNDLED_SYMBOL = "EURUSD"
_BUNDLED_FILE = "data/eurusd_1h_2017.csv"

_REQUIRED = ("ts", "open", "high", "low", "close")
_OPTIONAL = ("volume",)
_WEEK = 7 * 24 * 3600
# Epoch numbers at or above this magnitude are milliseconds: 1e11 s is the year 5138, 1e11 ms is 1973.
_MS_THRESHOLD = 1e11
_EPOCH = pd.Timestamp(0, tz="UTC")


def bundled_dataset_path() -> pathlib.Path:
    """Path of the bundled EUR/USD 2017 hourly bars (works from a wheel as well as a checkout)."""
    resource = importlib.resources.files("brokers").joinpath(_BUNDLED_FILE)
    return pathlib.Path(str(resource))


def load_bundled() -> list[Bar]:
    return load_bars(bundled_dataset_path(), BUNDLED_SYMBOL)


def load_bars(
    path: str | pathlib.Path,
    symbol: str,
    *,
    columns: Mapping[str, str] | None = None,
    timezone: str = "UTC",
    stamp: Literal["close", "open"] = "close",
    bar_seconds: int | None = None,
) -> list[Bar]:
    """Read a CSV or Parquet file of OHLCV bars into close-stamped UTC ``Bar``s, in file order.

    ``columns`` maps our names (ts, open, high, low, close, volume) to the
    file's; unmapped names are looked up as-is, then case-insensitively.
    Naive timestamps are wall-clock times in ``timezone``; epoch numbers
    (seconds or milliseconds) are UTC by definition. ``stamp="open"`` files
    are shifted by ``bar_seconds`` so every bar is stamped at its close.
    """
    path = pathlib.Path(path)
    zone = _zone(timezone, path)
    if stamp not in ("close", "open"):
        raise DataError(f"{path}: stamp must be 'close' or 'open', not {stamp!r}")
    if stamp == "open" and (bar_seconds is None or bar_seconds <= 0):
        raise DataError(f"{path}: stamp='open' needs a positive bar_seconds to shift timestamps to the bar close")
    frame = _read_frame(path)
    mapping = _resolve_columns(path, frame, columns or {})

    ts = _parse_timestamps(path, frame[mapping["ts"]], zone)
    if stamp == "open":
        assert bar_seconds is not None
        ts = ts + bar_seconds
    prices = {name: _numeric(frame[mapping[name]]) for name in ("open", "high", "low", "close")}
    volume = _numeric(frame[mapping["volume"]]) if "volume" in mapping else [0.0] * len(frame)
    return [
        Bar(symbol, t, o, h, lo, c, v)
        for t, o, h, lo, c, v in zip(
            ts.tolist(),
            prices["open"],
            prices["high"],
            prices["low"],
            prices["close"],
            volume,
            strict=True,
        )
    ]


def repeat_bars(bars: Sequence[Bar], total: int) -> list[Bar]:
    """``bars`` repeated up to ``total`` bars, each copy shifted by whole weeks.

    Whole weeks keep the weekday/hour pattern (weekend gaps stay weekends), and
    the shift is the smallest that keeps timestamps increasing across copies.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    if total <= len(bars):
        return list(bars[:total])
    if not bars:
        raise ValueError("cannot repeat an empty bar sequence")
    span = bars[-1].ts - bars[0].ts
    shift = (span // _WEEK + 1) * _WEEK
    out = list(bars)
    copy = 1
    while len(out) < total:
        offset = copy * shift
        for bar in bars[: total - len(out)]:
            out.append(Bar(bar.symbol, bar.ts + offset, bar.open, bar.high, bar.low, bar.close, bar.volume))
        copy += 1
    return out


def _zone(timezone: str, path: pathlib.Path) -> zoneinfo.ZoneInfo:
    try:
        return zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as exc:
        raise DataError(f"{path}: unknown timezone {timezone!r} (use an IANA name such as 'Europe/London')") from exc


def _read_frame(path: pathlib.Path) -> pd.DataFrame:
    name = path.name.lower()
    if name.endswith((".csv", ".csv.gz")):
        kind = "csv"
    elif name.endswith((".parquet", ".pq")):
        kind = "parquet"
    else:
        raise DataError(f"{path}: unsupported file type; expected .csv, .csv.gz, .parquet or .pq")
    if not path.is_file():
        raise DataError(f"{path}: bar file not found")
    try:
        if kind == "csv":
            return pd.read_csv(path)
        return pd.read_parquet(path)
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: file is empty (no header row)") from exc
    except Exception as exc:  # pandas/pyarrow raise many unrelated types for a malformed file
        raise DataError(f"{path}: cannot read {kind} file: {exc}") from exc


def _resolve_columns(path: pathlib.Path, frame: pd.DataFrame, columns: Mapping[str, str]) -> dict[str, str]:
    """Our column name -> the file's, for every required column and any volume column present."""
    unknown = sorted(set(columns) - set(_REQUIRED) - set(_OPTIONAL))
    if unknown:
        raise DataError(
            f"{path}: column mapping has unknown key(s) {unknown}; valid keys are {[*_REQUIRED, *_OPTIONAL]}"
        )
    available = [str(c) for c in frame.columns]
    by_lower: dict[str, list[str]] = {}
    for col in available:
        by_lower.setdefault(col.lower(), []).append(col)

    resolved: dict[str, str] = {}
    missing: list[str] = []
    for ours in (*_REQUIRED, *_OPTIONAL):
        wanted = columns.get(ours, ours)
        if wanted in available:
            resolved[ours] = wanted
        elif ours not in columns and len(by_lower.get(wanted.lower(), [])) == 1:
            resolved[ours] = by_lower[wanted.lower()][0]
        elif ours in _REQUIRED or ours in columns:
            missing.append(wanted if wanted == ours else f"{wanted} (for {ours})")
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; available columns: {', '.join(available)}")
    return resolved


def _numeric(series: pd.Series) -> list[float]:
    """Floats, with unparseable cells as NaN so the bar guard sees (and counts) them."""
    if not pd.api.types.is_float_dtype(series.dtype):
        series = pd.to_numeric(series, errors="coerce")
    return series.astype("float64").tolist()


def _parse_timestamps(path: pathlib.Path, raw: pd.Series, zone: zoneinfo.ZoneInfo) -> pd.Series:
    """UTC epoch seconds (int64) for every row, or a DataError naming the first bad row."""
    raw = raw.reset_index(drop=True)
    if pd.api.types.is_bool_dtype(raw.dtype):
        raise DataError(f"{path}: timestamp column holds booleans, not times")
    if pd.api.types.is_numeric_dtype(raw.dtype):
        return _from_epoch(path, raw, raw.astype("float64"))
    if pd.api.types.is_datetime64_any_dtype(raw.dtype):
        parsed = raw
    else:
        text = raw.astype("string").str.strip()
        first = text.dropna()
        first = first[first != ""]
        numbers = pd.Series(pd.to_numeric(text, errors="coerce").to_numpy(dtype="float64", na_value=np.nan))
        if len(first) and not math.isnan(numbers.iloc[first.index[0]]):
            return _from_epoch(path, raw, numbers)
        parsed = _parse_strings(text)
    _reject_missing(path, raw, parsed.isna())
    if parsed.dt.tz is None:
        parsed = _localize(path, parsed, zone)
    return (parsed.dt.tz_convert("UTC") - _EPOCH) // pd.Timedelta(seconds=1)


def _parse_strings(text: pd.Series) -> pd.Series:
    """Vectorised parse with one inferred format; per-element fallback only if that leaves gaps."""
    try:
        parsed = pd.to_datetime(text, errors="coerce")
    except ValueError:  # mixed UTC offsets, e.g. "+01:00" in winter and "+02:00" in summer
        parsed = pd.to_datetime(text, errors="coerce", utc=True)
    if parsed.isna().sum() > text.isna().sum():
        try:
            parsed = pd.to_datetime(text, errors="coerce", format="mixed")
        except ValueError:
            parsed = pd.to_datetime(text, errors="coerce", format="mixed", utc=True)
    return parsed


def _from_epoch(path: pathlib.Path, raw: pd.Series, numbers: pd.Series) -> pd.Series:
    _reject_missing(path, raw, pd.Series(~np.isfinite(numbers.to_numpy(dtype="float64"))))
    if numbers.abs().median() >= _MS_THRESHOLD:
        numbers = numbers / 1000.0
    return numbers.floordiv(1).astype("int64")


def _localize(path: pathlib.Path, naive: pd.Series, zone: zoneinfo.ZoneInfo) -> pd.Series:
    try:
        return naive.dt.tz_localize(zone, ambiguous="infer", nonexistent="raise")
    except Exception as exc:  # pytz-style AmbiguousTimeError / NonExistentTimeError, or ValueError
        raise DataError(
            f"{path}: naive timestamps cannot be placed in timezone {zone.key!r} "
            f"(a daylight-saving transition makes a time missing or ambiguous): {exc}"
        ) from exc


def _reject_missing(path: pathlib.Path, raw: pd.Series, bad: pd.Series) -> None:
    if bool(bad.any()):
        row = int(bad.to_numpy().nonzero()[0][0])
        value = raw.iloc[row]
        where = f"data row {row + 1}"
        if path.name.lower().endswith((".csv", ".csv.gz")):
            where += f" (line {row + 2} counting the header)"
        raise DataError(f"{path}: unparseable timestamp {value!r} at {where}")
