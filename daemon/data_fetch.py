"""`tradectl data fetch`: a broker's historical bars into a file that backtest and train read as it is.

    tradectl data fetch --broker alpaca --symbol SPY --timeframe 1Min \\
        --start 2026-10-01 --end 2026-11-01 --out spy.parquet
    tradectl data fetch --broker oanda --symbol EUR_USD --timeframe H1 \\
        --start 2024-01-01 --end 2024-07-01 --out eurusd.parquet
    tradectl data fetch --broker ib --symbol SPY --timeframe "1 min" \\
        --start 2026-10-01 --end 2026-11-01 --out spy.parquet

One path for every venue: chunks, resume, progress and the quality report are this module's; what differs
(bar lengths, the REST client, reading one chunk, the session rule of the report) is a ``VenueFetch``
(``_venue``): Alpaca's is below, OANDA's in ``daemon.fetch_oanda``, Interactive Brokers' in ``daemon.fetch_ib``.

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
import inspect
import json
import os
import shutil
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import structlog

from brokers.errors import BrokerError, ConfigError, DataError
from daemon.config import TradectlConfig

if TYPE_CHECKING:  # pandas is imported where it is used: every `tradectl` command builds this parser
    import pandas as pd

    from risk.calendar import Sessions

__all__ = ["Chunk", "FetchPlan", "FetchResult", "VenueFetch", "add_arguments", "fetch", "plain_symbol", "run"]

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
    symbol: str  # the venue's name for it (SPY, EUR_USD)
    timeframe: str  # the venue's spelling (1Min, H1)
    feed: str  # the venue's price source: Alpaca's feed (iex, sip), OANDA's price component (mid, bid, ask)
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
    incomplete: int = 0  # bars the venue still had in progress (the range reached now): logged, not written


class Chunk(NamedTuple):
    """One request window's bars as file rows (venue order), and what was left out of it (each logged)."""

    rows: list[dict[str, Any]]
    unreadable: int = 0
    incomplete: int = 0


# (plan, the venue's REST client, bar seconds, lo, hi) -> the bars opening in [lo, hi)
ChunkReader = Callable[[FetchPlan, Any, int, int, int], Awaitable[Chunk]]


@dataclass(frozen=True, slots=True)
class VenueFetch:
    """What one venue contributes to a fetch; everything else is the same for every venue."""

    timeframes: Mapping[str, int]  # the venue's spelling -> bar seconds
    default_timeframe: Callable[[TradectlConfig], str]
    feed: Callable[[argparse.Namespace, TradectlConfig], str]  # the price source, checked (one line)
    symbol: Callable[[str], str]  # as typed -> the venue's name, checked (one line)
    open_rest: Callable[[TradectlConfig, FetchPlan], Any]  # the adapter's own client (``close()``, may be async)
    read_chunk: ChunkReader
    # (config, --calendar as typed or None, the plan's symbol) -> (exchange calendar code, or the venue's own
    # session rule)
    sessions: Callable[[TradectlConfig, str | None, str], tuple[str | None, Sessions | None]]


async def fetch(
    plan: FetchPlan, rest: Any, *, bar_seconds: int,
    progress: Callable[[int, int], None] | None = None,
) -> FetchResult:
    """Fetch ``plan`` chunk by chunk (resuming an interrupted one) and write ``plan.out``.

    ``rest`` is the venue's own REST client (``plan.broker`` names the venue). ``progress(seconds, bars)`` is
    called after each stored chunk with the span it covered. A failure leaves the stored chunks for the next
    run and says so in its one-line message.
    """
    _check_out(plan)
    read_chunk = _venue(plan.broker).read_chunk
    parts = _Parts(plan)
    position = await asyncio.to_thread(parts.open)
    resumed = position if position > plan.start else None
    if progress is not None and resumed is not None:
        progress(position - plan.start, 0)
    unreadable = incomplete = 0
    try:
        while position < plan.end:
            chunk_end = min(position + plan.chunk_seconds, plan.end)
            rows, bad, forming = await read_chunk(plan, rest, bar_seconds, position, chunk_end)
            unreadable += bad
            incomplete += forming
            await asyncio.to_thread(parts.store, rows, chunk_end)
            if progress is not None:
                progress(chunk_end - position, len(rows))
            position = chunk_end
    except BrokerError as exc:
        raise BrokerError(f"{exc}; {parts.stored_bars:,} bars kept in {plan.parts}: run the same command "
                          "again to resume") from exc
    total = await asyncio.to_thread(parts.finish)
    return FetchResult(plan.out, total, resumed, unreadable, incomplete)


def _check_out(plan: FetchPlan) -> None:
    if not plan.out.name.lower().endswith(_SUFFIXES):
        raise ConfigError(f"--out {plan.out}: use a .parquet, .pq, .csv or .csv.gz file name")
    if plan.out.exists() and not plan.parts.exists():
        raise ConfigError(f"--out {plan.out} already exists; delete it or choose another file")
    if not plan.out.parent.is_dir():
        raise ConfigError(f"--out {plan.out}: folder {plan.out.parent} does not exist")


async def _alpaca_chunk(plan: FetchPlan, rest: Any, bar_seconds: int, lo: int, hi: int) -> Chunk:
    """Alpaca's historical bars opening in ``[lo, hi)`` (``AlpacaRest.bars`` follows the pages)."""
    raw = await rest.bars(plan.symbol, _rfc3339(lo), _rfc3339(hi - 1))
    return Chunk(*_rows(plan.symbol, raw, bar_seconds, lo, hi))


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
            raise DataError(f"{p.symbol}: {p.broker} has no {p.timeframe} bars from {_rfc3339(p.start)} to "
                            f"{_rfc3339(p.end)} ({p.feed}); nothing written")
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


# ---------------------------------------------------------------------- the venues
def _venue(broker: str) -> VenueFetch:
    """The venue dispatch: imported on use (each venue's client library costs start-up time)."""
    if broker == "alpaca":
        return _alpaca()
    if broker == "oanda":
        from daemon.fetch_oanda import OANDA

        return OANDA
    if broker == "ib":
        from daemon.fetch_ib import IB

        return IB
    raise ConfigError(f"--broker {broker!r}: data fetch knows {', '.join(BROKERS)}")


def _alpaca_feed(args: argparse.Namespace, config: TradectlConfig) -> str:
    if args.price is not None:
        raise ConfigError("--price is OANDA's price component; Alpaca's bars come from --feed iex|sip")
    return str(args.feed or config.broker.alpaca.feed)


def plain_symbol(text: str) -> str:
    """A ticker as typed, stripped and upper-cased (Alpaca, IB); one line when it is empty."""
    symbol = text.strip().upper()
    if not symbol:
        raise ConfigError("--symbol is empty")
    return symbol


def _alpaca_rest(config: TradectlConfig, plan: FetchPlan) -> Any:
    from brokers.alpaca.rest import AlpacaRest
    from daemon.venues import alpaca_settings

    return AlpacaRest(dataclasses.replace(alpaca_settings(config), symbols=(plan.symbol,), feed=plan.feed,
                                          timeframe=plan.timeframe))


def _alpaca_sessions(config: TradectlConfig, calendar: str | None, symbol: str) -> tuple[str | None, Sessions | None]:
    name = calendar or "XNYS"
    return (None if name.lower() == "none" else name), None


def _alpaca() -> VenueFetch:
    from brokers.alpaca import TIMEFRAMES

    return VenueFetch(timeframes=TIMEFRAMES, default_timeframe=lambda config: "1Min", feed=_alpaca_feed,
                      symbol=plain_symbol, open_rest=_alpaca_rest, read_chunk=_alpaca_chunk,
                      sessions=_alpaca_sessions)


BROKERS = ("alpaca", "oanda", "ib")


# ---------------------------------------------------------------------- the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--broker", required=True, choices=list(BROKERS), help="the venue to fetch from")
    parser.add_argument("--symbol", required=True, help="the venue's name: SPY (alpaca), EUR_USD (oanda); on ib "
                        "one of broker.ib.contracts (SPY, EURUSD) or else a US stock")
    parser.add_argument("--timeframe", default=None, help="bar length in the venue's spelling (default: 1Min on "
                        "alpaca, broker.oanda.granularity on oanda, e.g. M1 or H1; IB's bar size on ib, e.g. "
                        "'1 min', default broker.ib.bar_seconds)")
    parser.add_argument("--start", required=True, help="first bar opens at or after this (YYYY-MM-DD = UTC midnight,"
                        " or an ISO time)")
    parser.add_argument("--end", required=True, help="last bar opens before this (exclusive)")
    parser.add_argument("--out", required=True, type=Path, help="the file to write (.parquet, .pq, .csv, .csv.gz)")
    parser.add_argument("--feed", choices=["iex", "sip"], default=None, help="alpaca: default broker.alpaca.feed")
    parser.add_argument("--price", choices=["mid", "bid", "ask"], default=None,
                        help="oanda: the candles' price component (default broker.oanda.price); ib: MIDPOINT, BID "
                        "or ASK bars (default the contract's own: TRADES, MIDPOINT for FX)")
    parser.add_argument("--chunk-days", type=float, default=7.0, help="days per request window and stored part")
    parser.add_argument("--calendar", default=None, help="the gap check's sessions: an exchange calendar code "
                        "(default XNYS on alpaca and for IB stocks, CMES for IB futures), on oanda and for IB FX "
                        "pairs by default the FX week of risk.window; 'none': skip")
    parser.add_argument("--outlier-z", type=float, default=10.0, help="outlier threshold in robust sd")
    parser.add_argument("--json", action="store_true", help="print the result and the quality report as JSON")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def plan_from_args(args: argparse.Namespace, config: TradectlConfig) -> FetchPlan:
    """The request as typed, checked against the venue: one line naming a bad value."""
    venue = _venue(args.broker)
    timeframe = args.timeframe or venue.default_timeframe(config)
    if timeframe not in venue.timeframes:
        raise ConfigError(f"--timeframe {timeframe!r}: the {args.broker} adapter reads "
                          f"{', '.join(venue.timeframes)} bars")
    start, end = _when(args.start, "--start"), _when(args.end, "--end")
    if end <= start:
        raise ConfigError(f"--end {args.end} is not after --start {args.start}")
    if not args.chunk_days > 0:
        raise ConfigError(f"--chunk-days must be positive, not {args.chunk_days:g}")
    symbol = venue.symbol(args.symbol)
    return FetchPlan(args.broker, symbol, timeframe, venue.feed(args, config), start, end, Path(args.out),
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
    from brokers.history import load_bars
    from daemon.data_quality import assess

    venue = _venue(args.broker)
    plan = plan_from_args(args, config)
    calendar, sessions = venue.sessions(config, args.calendar, plan.symbol)
    bar_seconds = venue.timeframes[plan.timeframe]
    rest = venue.open_rest(config, plan)
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
        try:
            return await fetch(plan, rest, bar_seconds=bar_seconds, progress=progress)
        finally:
            closing = rest.close()
            if inspect.isawaitable(closing):  # IB's adapter closes its socket in the loop
                await closing

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
    report = assess(bars, bar_seconds=bar_seconds, max_gap_seconds=config.guard.max_gap_seconds, calendar=calendar,
                    sessions=sessions, start=plan.start, end=plan.end, outlier_z=args.outlier_z)
    if args.json:
        print(json.dumps({"file": str(result.path), "bars": result.bars, "unreadable": result.unreadable,
                          "incomplete": result.incomplete,
                          "resumed_from": None if result.resumed_from is None else _rfc3339(result.resumed_from),
                          "quality": report.as_dict()}, indent=2))
    else:
        resumed = f" (resumed from {_rfc3339(result.resumed_from)})" if result.resumed_from is not None else ""
        unreadable = f"; {result.unreadable} unreadable bar(s) left out (logged)" if result.unreadable else ""
        incomplete = (f"; {result.incomplete} bar(s) still in progress at the venue left out" if result.incomplete
                      else "")
        print(f"wrote {result.bars:,} bars to {result.path}{resumed}{unreadable}{incomplete}")
        print(report.render(str(result.path)))
    return 0
