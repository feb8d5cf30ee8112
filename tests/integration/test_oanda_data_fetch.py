"""`tradectl data fetch --broker oanda` against the wire-level fake OANDA, through the real oandapyV20 client:
v20's from/to and from/count candle paging, resume after a failed chunk, 429 pauses, the in-progress candle left
out, and the quality report judged by the FX week the adapter builds live bars by."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from brokers.errors import BrokerError
from brokers.history import load_bars
from brokers.oanda.rest import OandaRest
from daemon.cli import main
from daemon.data_fetch import FetchPlan, fetch
from daemon.data_quality import assess
from risk.calendar import FxWeek
from tests.brokers.harness import oanda_settings
from tests.fakes.oanda import TOKEN, FakeOanda

HOUR, MINUTE, DAY = 3600, 60, 86_400
# Thursday 2024-01-11 00:00 UTC to Tuesday 2024-01-16 00:00 UTC: the FX weekend (Friday 21:00 to Sunday 21:00) inside
START = int(datetime(2024, 1, 11, tzinfo=UTC).timestamp())
END = int(datetime(2024, 1, 16, tzinfo=UTC).timestamp())
FX = FxWeek()
IN_SESSION = [t for t in range(START, END, HOUR) if FX.seconds_to_close(t) is not None]
MAX_GAP = 259_200


def _mid(i: int) -> Decimal:
    return Decimal("1.1000") + Decimal(i % 17) / Decimal(10_000)


def _publish_hours(fake: FakeOanda, opens: list[int], *, spike: int | None = None) -> None:
    """Three ticks per hour (2-pip spread): open, high (``spike``: 3% above), close; then the clock moves on."""
    for i, t in enumerate(opens):
        mid = _mid(i)
        high = mid * Decimal("1.03") if t == spike else mid + Decimal("0.0004")
        for offset, price in ((5, mid), (1800, high), (3599, mid + Decimal("0.0001"))):
            fake.price("EUR_USD", t + offset, price - Decimal("0.0001"), price + Decimal("0.0001"))
    fake.heartbeat(END)


def _rest(fake: FakeOanda, granularity: str = "H1") -> OandaRest:
    return OandaRest(oanda_settings(fake, granularity=granularity, request_timeout_seconds=10.0))


def _plan(out: Path, *, timeframe: str = "H1", start: int = START, end: int = END, chunk: int = 2 * DAY) -> FetchPlan:
    return FetchPlan("oanda", "EUR_USD", timeframe, "mid", start, end, out, chunk)


async def _fetch(fake: FakeOanda, plan: FetchPlan, step: int, **kwargs: object):  # type: ignore[no-untyped-def]
    rest = _rest(fake, plan.timeframe)
    try:
        return await fetch(plan, rest, bar_seconds=step, **kwargs)  # type: ignore[arg-type]
    finally:
        rest.close()


async def test_hourly_candles_become_a_close_stamped_file_judged_by_the_fx_week(tmp_path: Path) -> None:
    out = tmp_path / "eurusd.parquet"
    async with FakeOanda(start_time=START) as fake:
        _publish_hours(fake, IN_SESSION)
        result = await _fetch(fake, _plan(out), HOUR)
        queries = fake.records.candle_queries
    assert result.bars == len(IN_SESSION) and not result.unreadable and not result.incomplete
    assert len(queries) == 3, "one request per 2-day chunk"
    assert all("to" in q and "count" not in q and q["granularity"] == "H1" and q["price"] == "M" for q in queries)
    bars = load_bars(out, "EURUSD")  # exactly how backtest and train read it
    assert [b.ts for b in bars] == [t + HOUR for t in IN_SESSION], "stamped at the close, every candle once"
    assert [b.open for b in bars] == [float(_mid(i)) for i in range(len(IN_SESSION))]
    assert [b.close for b in bars] == [float(_mid(i) + Decimal("0.0001")) for i in range(len(IN_SESSION))]
    assert {b.volume for b in bars} == {3.0}, "volume is OANDA's tick count"
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["ts", "open", "high", "low", "close", "volume", "trade_count", "vwap"]
    assert frame["trade_count"].isna().all() and frame["vwap"].isna().all()
    report = assess(bars, bar_seconds=HOUR, max_gap_seconds=MAX_GAP, sessions=FX, start=START, end=END)
    weekend = (END - START) // HOUR - len(IN_SESSION)
    assert weekend == 48, "Friday 21:00 to Sunday 21:00 is not expected"
    assert (report.calendar, report.expected_bars, report.missing_bars, report.problems) == (
        "FX24x5", len(IN_SESSION), 0, 0)


async def test_a_span_beyond_5000_candles_pages_with_count_then_from_to(tmp_path: Path) -> None:
    out = tmp_path / "m1.parquet"
    start = int(datetime(2024, 1, 8, tzinfo=UTC).timestamp())  # Monday: four open days of minutes
    end = start + 4 * DAY
    async with FakeOanda(start_time=start) as fake:
        for i, t in enumerate(range(start, end, MINUTE)):
            mid = _mid(i)
            fake.price("EUR_USD", t + 30, mid - Decimal("0.0001"), mid + Decimal("0.0001"))
        fake.heartbeat(end)
        result = await _fetch(fake, _plan(out, timeframe="M1", start=start, end=end, chunk=4 * DAY), MINUTE)
        queries = fake.records.candle_queries
    minutes = 4 * DAY // MINUTE
    assert result.bars == minutes
    first, second = queries
    assert first["count"] == "5000" and "to" not in first
    assert "count" not in second and second["from"].startswith(
        datetime.fromtimestamp(start + 5000 * MINUTE, UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    assert [b.ts for b in load_bars(out, "EURUSD")] == [start + MINUTE * (i + 1) for i in range(minutes)]


async def test_an_interrupted_fetch_resumes_after_the_last_stored_bar(tmp_path: Path) -> None:
    out = tmp_path / "eurusd.csv"
    async with FakeOanda(start_time=START) as fake:
        _publish_hours(fake, IN_SESSION)

        def fail_the_next_chunk(seconds: int, bars: int) -> None:
            fake.fail_next(1, 500, path_prefix="/v3/instruments")

        with pytest.raises(BrokerError, match=r"45 bars kept in .*eurusd.csv.parts: run the same command again"):
            await _fetch(fake, _plan(out), HOUR, progress=fail_the_next_chunk)
        assert not out.exists()
        manifest = tmp_path / "eurusd.csv.parts" / "manifest.json"
        doc = json.loads(manifest.read_text())
        doc["done_until"] = START  # as if killed after the part was written, before the manifest moved on
        manifest.write_text(json.dumps(doc))
        asked = len(fake.records.candle_queries)
        result = await _fetch(fake, _plan(out), HOUR)
        resumed = fake.records.candle_queries[asked:]
    last_stored_close = IN_SESSION[44] + HOUR  # Thursday and Friday to 21:00
    assert result.resumed_from == last_stored_close
    assert resumed[0]["from"].startswith(datetime.fromtimestamp(last_stored_close, UTC).strftime("%Y-%m-%dT%H:%M"))
    assert [b.ts for b in load_bars(out, "EURUSD")] == [t + HOUR for t in IN_SESSION], "every bar once, in order"


async def test_429s_pause_the_fetch_and_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "eurusd.parquet"
    async with FakeOanda(start_time=START) as fake:
        _publish_hours(fake, IN_SESSION)
        fake.rate_limit_next(1, path_prefix="/v3/instruments")  # OANDA sends no reset: a one-second pause
        rest = _rest(fake)
        try:
            result = await fetch(_plan(out), rest, bar_seconds=HOUR)
        finally:
            rest.close()
        asked = [p for m, p in fake.records.requests if p.endswith("/candles")]
    assert len(asked) == 3 + 1, "the refused request was asked again after the pause"
    assert result.bars == len(IN_SESSION) and rest.limiter.throttled >= 1


async def test_the_candle_in_progress_is_left_out_and_counted(tmp_path: Path) -> None:
    out = tmp_path / "eurusd.parquet"
    async with FakeOanda(start_time=START) as fake:
        opens = IN_SESSION[:10]
        for i, t in enumerate(opens):  # the last hour has ticks, but the venue's clock is still inside it
            mid = _mid(i)
            fake.price("EUR_USD", t + 5, mid - Decimal("0.0001"), mid + Decimal("0.0001"))
        result = await _fetch(fake, _plan(out, end=START + DAY), HOUR)
    assert (result.bars, result.incomplete) == (9, 1)
    assert [b.ts for b in load_bars(out, "EURUSD")] == [t + HOUR for t in opens[:9]]


def test_the_fx_report_finds_gaps_weekend_bars_and_outliers() -> None:
    from brokers.base import Bar

    skipped = set(IN_SESSION[30:33])
    weekend_bar = int(datetime(2024, 1, 12, 22, tzinfo=UTC).timestamp())  # Friday 22:00: the FX week is closed
    assert FX.seconds_to_close(weekend_bar) is None
    opens = sorted([t for t in IN_SESSION if t not in skipped] + [weekend_bar])
    bars = [Bar("EURUSD", t + HOUR, 1.1, 1.1004 if t != IN_SESSION[60] else 1.15, 1.0996, 1.1001, 3) for t in opens]
    report = assess(bars, bar_seconds=HOUR, max_gap_seconds=MAX_GAP, sessions=FX, start=START, end=END)
    assert (report.expected_bars, report.missing_bars) == (len(IN_SESSION), 3)
    assert [(g.start, g.bars) for g in report.gaps] == [(IN_SESSION[30] + HOUR, 3)]
    assert report.outside_session == 1
    assert [(o.ts, o.field) for o in report.outliers] == [(IN_SESSION[60] + HOUR, "high")]
    text = report.render("x")
    assert f"calendar FX24x5: {len(IN_SESSION) - 3:,} of {len(IN_SESSION):,}" in text
    four_hours = assess(bars, bar_seconds=4 * HOUR, max_gap_seconds=MAX_GAP, sessions=FX)
    assert four_hours.calendar is None and "divide an hour" in four_hours.calendar_note


async def test_the_command_fetches_and_reports_the_fx_week(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `tradectl data fetch --broker oanda` (the CLI's own code, in a thread beside the fake's loop)."""
    out = tmp_path / "eurusd.parquet"
    async with FakeOanda(start_time=START) as fake:
        _publish_hours(fake, [t for t in IN_SESSION if t not in IN_SESSION[20:25]])
        monkeypatch.setenv("TRADECTL_OANDA__TOKEN", TOKEN)
        monkeypatch.setenv("TRADECTL_BROKER__OANDA__API_URL", fake.base_url)
        code = await asyncio.to_thread(main, [
            "data", "fetch", "--broker", "oanda", "--symbol", "eur_usd", "--start", "2024-01-11",
            "--end", "2024-01-16", "--out", str(out), "--no-progress"])
        queries = fake.records.candle_queries
    captured = capsys.readouterr()
    assert code == 0, captured.err
    present = len(IN_SESSION) - 5
    assert f"wrote {present} bars to {out}" in captured.out
    assert f"calendar FX24x5: {present:,} of {len(IN_SESSION):,} regular-session bars present; 5 missing in 1 gap(s)" \
        in captured.out
    assert {q["granularity"] for q in queries} == {"H1"}, "broker.oanda.granularity is the default timeframe"
    assert len(load_bars(out, "EURUSD")) == present


def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["data", "fetch", "--broker", "oanda", "--start", "2024-01-11", "--end", "2024-01-12",
            "--out", str(tmp_path / "x.parquet")]
    monkeypatch.delenv("TRADECTL_OANDA__TOKEN", raising=False)
    cases = {
        ("--symbol", "EURUSD"): "--symbol 'EURUSD': use OANDA's instrument name, e.g. EUR_USD",
        ("--symbol", "EUR_USD", "--timeframe", "1Min"): "--timeframe '1Min': the oanda adapter reads S5, S10",
        ("--symbol", "EUR_USD", "--feed", "iex"): "--feed is Alpaca's data feed",
        ("--symbol", "EUR_USD"): "set TRADECTL_OANDA__TOKEN",
    }
    for extra, message in cases.items():
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
