"""`tradectl data fetch`: a broker's historical bars into a file that backtest and train read as it is.

    tradectl data fetch --broker alpaca --symbol SPY --timeframe 1Min \\
        --start 2026-10-01 --end 2026-11-01 --out spy.parquet

The range is bars *opening* in ``[start, end)`` (dates are UTC midnight). It is fetched in chunks of
``--chunk-days`` through the adapter's own REST client (``brokers.alpaca.rest.AlpacaRest.bars``: its
pagination, the venue's rate limiter and 429 pauses, worker threads), never a second client. Each chunk is
written at once to ``<out>.parts/`` (a numbered Parquet part, then the manifest's ``done_until``), so an
interrupted fetch (Ctrl-C, a network failure, a killed process) loses at most one chunk: the same command
again continues after the last stored bar (or the last finished chunk, whichever is later). When every
chunk is in, the parts become ``--out`` (Parquet, or CSV by extension) in one rename, and the quality report
(``daemon.data_quality``) is printed for the file as ``tradectl backtest`` will load it.

The file has our loader's columns: ``ts`` (UTC, the bar's CLOSE: Alpaca stamps bars at the open, so the
timeframe is added, as the live stream does), ``open``, ``high``, ``low``, ``close``, ``volume``, plus
``trade_count`` and ``vwap``. Rows are written in the venue's order and none is dropped or repaired
(duplicates, disorder and bad values are the report's and the bar guard's business); only a bar that cannot
be read at all is left out, logged and counted.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from brokers.errors import BrokerError, ConfigError, DataError
from daemon.config import TradectlConfig

if TYPE_CHECKING:  # pandas is imported where it is used: every `tradectl` command builds this parser
    import pandas as pd

    from brokers.alpaca.rest import AlpacaRest

__all__ = ["FetchPlan", "FetchResult", "add_arguments", "fetch", "run"]

log = structlog.get_logger(__name__)

_DAY = 86_400
_COLUMNS = ["ts", "open", "high", "low", "close", "volume", "trade_count", "vwap"]
_MANIFEST = "manifest.json"
_SUFFIXES = (".parquet", ".pq", ".csv", ".csv.gz")
EXIT_INTERRUPTED = 130  # 128 + SIGINT


@dataclass(frozen=True, slots=True)
class FetchPlan:
    """What to fetch: bars of ``symbol`` opening in ``[start, end)`` (UTC epoch seconds) into ``out``."""

    broker: str
    symbol: str
    timeframe: str
    feed: str
    start: int
    end: int
    out: Path
    chunk_seconds: int = 7 * _DAY

    @property
    def parts(self) -> Path:
        return self.out.with_name(self.out.name + ".parts")

    def identity(self) -> dict[str, Any]:
        """What a resumed fetch must agree on with the interrupted one."""
        return {"broker": self.broker, "symbol": self.symbol, "timeframe": self.timeframe, "feed": self.feed,
                "start": self.start, "end": self.end}


@dataclass(frozen=True, slots=True)
class FetchResult:
    path: Path
    bars: int
    resumed_from: int | None  # the bar open time an interrupted fetch was continued from
    unreadable: int  # venue bars that could not be read (logged, not written)


async def fetch(
    plan: FetchPlan, rest: AlpacaRest, *, bar_seconds: int,
    progress: Callable[[int, int], None] | None = None,
) -> FetchResult:
    """Fetch ``plan`` chunk by chunk (resuming an interrupted one) and write ``plan.out``.

    ``progress(seconds, bars)`` is called after each stored chunk with the span it covered. A failure
    leaves the stored chunks for the next run and says so in its one-line message.
    """
    _check_out(plan)
    parts = _Parts(plan)
    position = await asyncio.to_thread(parts.open)
    resumed = position if position > plan.start else None
    if progress is not None and resumed is not None:
        progress(position - plan.start, 0)
    unreadable = 0
    try:
        while position < plan.end:
            chunk_end = min(position + plan.chunk_seconds, plan.end)
            raw = await rest.bars(plan.symbol, _rfc3339(position), _rfc3339(chunk_end - 1))
            rows, bad = _rows(plan.symbol, raw, bar_seconds, position, chunk_end)
            unreadable += bad
            await asyncio.to_thread(parts.store, rows, chunk_end)
            if progress is not None:
                progress(chunk_end - position, len(rows))
            position = chunk_end
    except BrokerError as exc:
        raise BrokerError(f"{exc}; {parts.stored_bars:,} bars kept in {plan.parts}: run the same command "
                          "again to resume") from exc
    total = await asyncio.to_thread(parts.finish)
    return FetchResult(plan.out, total, resumed, unreadable)


def _check_out(plan: FetchPlan) -> None:
    if not plan.out.name.lower().endswith(_SUFFIXES):
        raise ConfigError(f"--out {plan.out}: use a .parquet, .pq, .csv or .csv.gz file name")
    if plan.out.exists() and not plan.parts.exists():
        raise ConfigError(f"--out {plan.out} already exists; delete it or choose another file")
    if not plan.out.parent.is_dir():
        raise ConfigError(f"--out {plan.out}: folder {plan.out.parent} does not exist")


def _rows(symbol: str, raw: list[dict[str, Any]], bar_seconds: int, lo: int, hi: int) -> tuple[list[dict], int]:
    """Venue bars opening in ``[lo, hi)`` as close-stamped rows, in the venue's order; unreadable ones counted."""
    from brokers.alpaca import convert

    rows: list[dict[str, Any]] = []
    bad = 0
    for item in raw:
        try:
            bar = convert.rest_bar(symbol, item, bar_seconds)
        except convert.WireError as exc:
            bad += 1
            log.warning("historical bar unreadable; not written", symbol=symbol, error=str(exc), bar=str(item)[:200])
            continue
        if not lo <= bar.ts - bar_seconds < hi:
            continue
        rows.append({"ts": bar.ts, "open": bar.open, "high": bar.high, "low": bar.low, "close": bar.close,
                     "volume": bar.volume, "trade_count": item.get("n"), "vwap": item.get("vw")})
    return rows, bad


class _Parts:
    """``<out>.parts/``: the manifest (the plan and ``done_until``) and one Parquet file per stored chunk.

    Writes are a temporary file and a rename, the part before the manifest: a process killed anywhere
    leaves either the old state or the new one, and a part newer than ``done_until`` still counts (resume
    goes on after the last stored bar).
    """

    def __init__(self, plan: FetchPlan) -> None:
        self.plan = plan
        self.dir = plan.parts
        self.stored_bars = 0
        self._next = 1
        self._done_until = plan.start

    def open(self) -> int:
        """Create or reopen the folder; the bar open time to fetch from."""
        manifest = self.dir / _MANIFEST
        if not manifest.exists():
            self.dir.mkdir(exist_ok=True)
            self._write_manifest()
            return self.plan.start
        try:
            saved = json.loads(manifest.read_text(encoding="utf-8"))
            self._done_until = int(saved["done_until"])
            identity = saved["plan"]
        except (ValueError, KeyError, TypeError) as exc:
            raise DataError(f"{manifest}: unreadable ({exc}); delete {self.dir} to start over") from exc
        if identity != self.plan.identity():
            differs = ", ".join(f"{k} {identity.get(k)!r}" for k, v in self.plan.identity().items()
                                if identity.get(k) != v)
            raise ConfigError(f"{self.dir} holds an interrupted fetch of another request ({differs}); run that "
                              "command again, or delete the folder to start over")
        import pandas as pd

        files = self._files()
        self._next = len(files) + 1
        last = self.plan.start
        for part in files:
            stamps = pd.read_parquet(part, columns=["ts"])["ts"]
            self.stored_bars += len(stamps)
            if len(stamps):  # the bar after the last stored one opens at that bar's close
                last = max(last, int(stamps.max().timestamp()))
        return max(self._done_until, last)

    def store(self, rows: list[dict[str, Any]], done_until: int) -> None:
        if rows:
            part = self.dir / f"part-{self._next:06d}.parquet"
            _frame(rows).to_parquet(_tmp(part), index=False)
            os.replace(_tmp(part), part)
            self._next += 1
            self.stored_bars += len(rows)
        self._done_until = done_until
        self._write_manifest()

    def finish(self) -> int:
        """Every part, in order, into ``out`` (one rename); the folder removed. The number of bars."""
        import pandas as pd

        files = self._files()
        frame = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True) if files else _frame([])
        if frame.empty:
            shutil.rmtree(self.dir)
            p = self.plan
            raise DataError(f"{p.symbol}: the venue has no {p.timeframe} bars from {_rfc3339(p.start)} to "
                            f"{_rfc3339(p.end)} (feed {p.feed}); nothing written")
        out = self.plan.out
        if out.name.lower().endswith((".csv", ".csv.gz")):
            frame.to_csv(_tmp(out), index=False, date_format="%Y-%m-%dT%H:%M:%SZ",
                         compression="gzip" if out.name.lower().endswith(".gz") else None)
        else:
            self._write_parquet(frame, _tmp(out))
        os.replace(_tmp(out), out)
        shutil.rmtree(self.dir)
        return len(frame)

    def _write_parquet(self, frame: pd.DataFrame, path: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(frame, preserve_index=False)
        about = {**self.plan.identity(), "stamp": "close"}  # provenance; the loader needs none of it
        table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"tradectl": json.dumps(about)})
        pq.write_table(table, path)

    def _files(self) -> list[Path]:
        return sorted(self.dir.glob("part-*.parquet"))

    def _write_manifest(self) -> None:
        manifest = self.dir / _MANIFEST
        doc = {"plan": self.plan.identity(), "done_until": self._done_until}
        _tmp(manifest).write_text(json.dumps(doc), encoding="utf-8")
        os.replace(_tmp(manifest), manifest)


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(rows, columns=_COLUMNS)
    frame["ts"] = pd.to_datetime(frame["ts"].astype("int64"), unit="s", utc=True)
    for name in ("open", "high", "low", "close", "volume", "vwap"):
        frame[name] = frame[name].astype("float64")
    frame["trade_count"] = frame["trade_count"].astype("Int64")
    return frame


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, choices=["alpaca"], help="the venue to fetch from")
    parser.add_argument("--symbol", required=True, help="e.g. SPY")
    parser.add_argument("--timeframe", default="1Min", help="bar length in the venue's spelling (default 1Min)")
    parser.add_argument("--start", required=True, help="first bar opens at or after this (YYYY-MM-DD = UTC midnight,"
                        " or an ISO time)")
    parser.add_argument("--end", required=True, help="last bar opens before this (exclusive)")
    parser.add_argument("--out", required=True, type=Path, help="the file to write (.parquet, .pq, .csv, .csv.gz)")
    parser.add_argument("--feed", choices=["iex", "sip"], default=None, help="default: broker.alpaca.feed")
    parser.add_argument("--chunk-days", type=float, default=7.0, help="days per request window and stored part")
    parser.add_argument("--calendar", default="XNYS", help="exchange calendar for the gap check ('none': skip)")
    parser.add_argument("--outlier-z", type=float, default=10.0, help="outlier threshold in robust sd")
    parser.add_argument("--json", action="store_true", help="print the result and the quality report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def plan_from_args(args: argparse.Namespace, feed: str) -> FetchPlan:
    """The request as typed, checked: one line naming a bad value."""
    from brokers.alpaca import TIMEFRAMES

    if args.timeframe not in TIMEFRAMES:
        raise ConfigError(f"--timeframe {args.timeframe!r}: the alpaca adapter reads {', '.join(TIMEFRAMES)} bars")
    start, end = _when(args.start, "--start"), _when(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end {args.end} is not after --start {args.start}")
    if not args.chunk_days > 0:
        raise ConfigError(f"--chunk-days must be positive, not {args.chunk_days:g}")
    symbol = args.symbol.strip().upper()
    if not symbol:
        raise ConfigError("--symbol is empty")
    return FetchPlan(args.broker, symbol, args.timeframe, feed, start, end, Path(args.out),
                     max(60, int(args.chunk_days * _DAY)))


def _when(text: str, flag: str) -> int:
    import pandas as pd

    try:
        stamp = pd.Timestamp(text)
    except ValueError as exc:
        raise ConfigError(f"{flag} {text!r}: not a date or time (e.g. 2026-10-01 or 2026-10-01T13:30:00Z)") from exc
    if stamp is pd.NaT:
        raise ConfigError(f"{flag} {text!r}: not a date or time")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.timestamp())


def run(args: argparse.Namespace, config: TradectlConfig) -> int:
    from brokers.alpaca import TIMEFRAMES
    from brokers.alpaca.rest import AlpacaRest
    from brokers.history import load_bars
    from daemon.data_quality import assess
    from daemon.venues import alpaca_settings

    plan = plan_from_args(args, args.feed or config.broker.alpaca.feed)
    settings = dataclasses.replace(alpaca_settings(config), symbols=(plan.symbol,), feed=plan.feed,
                                   timeframe=plan.timeframe)
    bar_seconds = TIMEFRAMES[plan.timeframe]
    bar = None
    if not args.no_progress and not args.json:
        from tqdm import tqdm

        bar = tqdm(total=round((plan.end - plan.start) / _DAY, 2), unit="day", file=sys.stderr, mininterval=0.5,
                   desc=f"{plan.symbol} {plan.timeframe}", bar_format="{l_bar}{bar}| {n:.1f}/{total:.1f} days "
                   "[{elapsed}<{remaining}{postfix}]")
    fetched = [0]

    def progress(seconds: int, bars: int) -> None:
        fetched[0] += bars
        if bar is not None:
            bar.update(seconds / _DAY)
            bar.set_postfix(bars=f"{fetched[0]:,}", refresh=False)

    async def _main() -> FetchResult:
        rest = AlpacaRest(settings)
        try:
            return await fetch(plan, rest, bar_seconds=bar_seconds, progress=progress)
        finally:
            rest.close()

    try:
        result = asyncio.run(_main())
    except KeyboardInterrupt:
        print(f"tradectl data fetch: interrupted; the bars stored so far are in {plan.parts}: run the same command "
              "again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if bar is not None:
            bar.close()
    bars = load_bars(result.path, plan.symbol)  # as `tradectl backtest --data` reads it
    calendar = None if args.calendar.lower() == "none" else args.calendar
    report = assess(bars, bar_seconds=bar_seconds, max_gap_seconds=config.guard.max_gap_seconds, calendar=calendar,
                    start=plan.start, end=plan.end, outlier_z=args.outlier_z)
    if args.json:
        print(json.dumps({"file": str(result.path), "bars": result.bars, "unreadable": result.unreadable,
                          "resumed_from": None if result.resumed_from is None else _rfc3339(result.resumed_from),
                          "quality": report.as_dict()}, indent=2))
    else:
        resumed = f" (resumed from {_rfc3339(result.resumed_from)})" if result.resumed_from is not None else ""
        unreadable = f"; {result.unreadable} unreadable bar(s) left out (logged)" if result.unreadable else ""
        print(f"wrote {result.bars:,} bars to {result.path}{resumed}{unreadable}")
        print(report.render(str(result.path)))
    return 0
