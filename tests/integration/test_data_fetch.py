"""`tradectl data fetch` against the wire-level fake Alpaca: pages, the rate limiter, resume, the quality report,
and a file that `tradectl backtest --data` replays without extra flags."""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import exchange_calendars
import pandas as pd
import pytest

from brokers.alpaca import AlpacaSettings
from brokers.alpaca.rest import AlpacaRest
from brokers.base import Bar
from brokers.errors import BrokerError
from brokers.history import load_bars
from daemon.cli import main
from daemon.data_fetch import FetchPlan, fetch
from daemon.data_quality import assess
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca
from tests.fakes.alpaca import Bar as FakeBar

START = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp())
END = int(datetime(2026, 10, 3, tzinfo=UTC).timestamp())  # Thursday and Friday: two NYSE sessions
SESSIONS = 2 * 390
ROOT = Path(__file__).resolve().parents[2]


def _session_minutes() -> list[datetime]:
    cal = exchange_calendars.get_calendar("XNYS", start="2026-09-20", end="2026-10-10")
    minutes = cal.minutes_in_range(pd.Timestamp(START, unit="s", tz=UTC), pd.Timestamp(END, unit="s", tz=UTC))
    return [m.to_pydatetime() for m in minutes]


def _history(skip: range = range(0), spike: int | None = None, premarket: int = 0) -> list[FakeBar]:
    """Regular-session minute bars of both days (a smooth deterministic series), less the ``skip`` indices,
    the ``spike`` index with a high 5% above the rest, and ``premarket`` bars before the first open."""
    opens = _session_minutes()
    first = opens[0]
    extra = [first - timedelta(minutes=premarket - i) for i in range(premarket)]
    bars = []
    for i, when in enumerate([*extra, *opens]):
        k = i - premarket
        if k in skip:
            continue
        price = 450 + 2 * math.sin(i / 40)
        high = price * 1.05 if k == spike else price + 0.05
        bars.append(FakeBar.make("SPY", when, price, high, price - 0.05, price + 0.01, 1000 + i, trade_count=10 + i))
    return bars


def _rest(fake: FakeAlpaca) -> AlpacaRest:
    return AlpacaRest(AlpacaSettings(key_id=KEY_ID, secret_key=SECRET_KEY, symbols=("SPY",),
                                     trading_url=fake.base_url, data_url=fake.base_url))


def _plan(out: Path, *, chunk_days: float = 1.0) -> FetchPlan:
    return FetchPlan("alpaca", "SPY", "1Min", "iex", START, END, out, int(chunk_days * 86_400))


def _bar_requests(fake: FakeAlpaca) -> list[dict[str, str]]:
    return [r.query for r in fake.records.requests if r.path == "/v2/stocks/bars"]


async def test_pages_are_joined_once_in_order_and_the_file_is_close_stamped(tmp_path: Path) -> None:
    out = tmp_path / "spy.parquet"
    history = _history()
    async with FakeAlpaca(bars_page_size=100) as fake:
        fake.add_history(history)
        rest = _rest(fake)
        try:
            result = await fetch(_plan(out), rest, bar_seconds=60)
        finally:
            rest.close()
        queries = _bar_requests(fake)
    assert result.bars == SESSIONS and not result.unreadable and result.resumed_from is None
    assert sum("page_token" in q for q in queries) >= SESSIONS // 100 - 2, "the venue's pages were followed"
    assert not (tmp_path / "spy.parquet.parts").exists()
    bars = load_bars(out, "SPY")  # exactly how backtest and train read it
    assert [b.ts for b in bars] == [int(b.ts_open.timestamp()) + 60 for b in history]
    assert [b.close for b in bars] == [float(b.close) for b in history]
    frame = pd.read_parquet(out)
    assert list(frame.columns[:6]) == ["ts", "open", "high", "low", "close", "volume"]
    assert frame["trade_count"].tolist() == [b.trade_count for b in history]
    report = assess(bars, bar_seconds=60, max_gap_seconds=259_200, start=START, end=END)
    assert (report.expected_bars, report.missing_bars, report.problems) == (SESSIONS, 0, 0)


async def test_an_interrupted_fetch_resumes_after_the_last_stored_bar(tmp_path: Path) -> None:
    out = tmp_path / "spy.parquet"
    history = _history()
    async with FakeAlpaca() as fake:
        fake.add_history(history)
        rest = _rest(fake)

        def fail_after_first_chunk(seconds: int, bars: int) -> None:
            fake.fail_next(1, 500, path_prefix="/v2/stocks/bars")  # the next chunk's request fails

        try:
            with pytest.raises(BrokerError, match=r"390 bars kept in .*spy.parquet.parts: run the same command"):
                await fetch(_plan(out), rest, bar_seconds=60, progress=fail_after_first_chunk)
            assert not out.exists()
            # as if killed after the part was written but before the manifest moved on
            manifest = tmp_path / "spy.parquet.parts" / "manifest.json"
            doc = json.loads(manifest.read_text())
            doc["done_until"] = START
            manifest.write_text(json.dumps(doc))
            first_run = len(_bar_requests(fake))
            result = await fetch(_plan(out), rest, bar_seconds=60)
        finally:
            rest.close()
        resumed = _bar_requests(fake)[first_run:]
    last_stored_close = int(history[389].ts_open.timestamp()) + 60
    assert result.resumed_from == last_stored_close
    assert resumed[0]["start"] == datetime.fromtimestamp(last_stored_close, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    bars = load_bars(out, "SPY")
    assert [b.ts for b in bars] == [int(b.ts_open.timestamp()) + 60 for b in history], "every bar once, in order"


async def test_a_resume_with_other_arguments_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "spy.parquet"
    (tmp_path / "spy.parquet.parts").mkdir()
    (tmp_path / "spy.parquet.parts" / "manifest.json").write_text(json.dumps(
        {"plan": {**_plan(out).identity(), "symbol": "QQQ"}, "done_until": START}))
    async with FakeAlpaca() as fake:
        rest = _rest(fake)
        try:
            with pytest.raises(Exception, match=r"interrupted fetch of another request \(symbol 'QQQ'\)"):
                await fetch(_plan(out), rest, bar_seconds=60)
        finally:
            rest.close()


async def test_429s_pause_the_fetch_until_the_reset_and_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "spy.parquet"
    async with FakeAlpaca() as fake:
        fake.add_history(_history())
        fake.rate_limit_next(2, reset_in_seconds=0.2, path_prefix="/v2/stocks/bars")
        rest = _rest(fake)
        try:
            result = await fetch(_plan(out), rest, bar_seconds=60)
        finally:
            rest.close()
        statuses = [s for m, p, s in fake.records.responses if p == "/v2/stocks/bars"]
    assert statuses[:2] == [429, 429] and statuses[2:] == [200, 200]
    assert result.bars == SESSIONS
    assert rest.limiter.throttled >= 1


async def test_the_quality_report_finds_the_gap_the_outlier_and_extended_hours(tmp_path: Path) -> None:
    out = tmp_path / "spy.parquet"
    history = _history(skip=range(100, 130), spike=500, premarket=15)
    async with FakeAlpaca() as fake:
        fake.add_history(history)
        rest = _rest(fake)
        try:
            await fetch(_plan(out, chunk_days=2), rest, bar_seconds=60)
        finally:
            rest.close()
    bars = load_bars(out, "SPY")
    report = assess(bars, bar_seconds=60, max_gap_seconds=259_200, start=START, end=END)
    minutes = _session_minutes()
    assert (report.expected_bars, report.missing_bars) == (SESSIONS, 30)
    assert [(g.start, g.bars) for g in report.gaps] == [(int(minutes[100].timestamp()) + 60, 30)]
    assert report.outside_session == 15
    assert [(o.ts, o.field) for o in report.outliers] == [(int(minutes[500].timestamp()) + 60, "high")]
    assert not report.duplicates and not report.out_of_order and not report.guard_rejections
    text = report.render(str(out))
    assert "390 of" not in text and f"{SESSIONS - 30:,} of {SESSIONS:,} regular-session bars" in text


def test_duplicates_disorder_and_guard_rejections_are_named() -> None:
    t = int(datetime(2026, 10, 1, 13, 31, tzinfo=UTC).timestamp())
    ok = [Bar("SPY", t + 60 * i, 450.0, 450.1, 449.9, 450.0, 100) for i in range(40)]
    bars = [*ok[:10], ok[9], ok[12], ok[10], ok[11], Bar("SPY", ok[13].ts, 450.0, 449.0, 451.0, 450.0, 1), *ok[14:]]
    report = assess(bars, bar_seconds=60, max_gap_seconds=259_200, calendar=None)
    assert report.duplicates == [ok[9].ts]
    assert report.out_of_order == [ok[10].ts, ok[11].ts]
    assert report.guard_rejections == {"duplicate": 1, "out_of_order": 2, "high_below_low": 1}
    assert report.calendar is None and "not checked (no calendar given)" in report.render("x")


def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["data", "fetch", "--broker", "alpaca", "--symbol", "SPY", "--out", str(tmp_path / "x.parquet")]
    monkeypatch.delenv("TRADECTL_ALPACA__KEY_ID", raising=False)
    cases = {
        ("--start", "2026-10-02", "--end", "2026-10-01"): "--end 2026-10-01 is not after --start 2026-10-02",
        ("--start", "2026-10-01", "--end", "2026-10-02", "--timeframe", "5Min"): "--timeframe '5Min'",
        ("--start", "yesterday-ish", "--end", "2026-10-02"): "--start 'yesterday-ish': not a date",
        ("--start", "2026-10-01", "--end", "2026-10-02"): "set TRADECTL_ALPACA__KEY_ID",
    }
    for extra, message in cases.items():
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.slow
async def test_the_command_writes_a_file_backtest_replays_without_flags(tmp_path: Path) -> None:
    """The real `tradectl data fetch` (progress bar, report) and then `tradectl backtest --data` on its file."""
    out = tmp_path / "spy.parquet"
    async with FakeAlpaca(bars_page_size=500) as fake:
        fake.add_history(_history(skip=range(200, 205)))
        env = {**os.environ, "TRADECTL_ALPACA__KEY_ID": KEY_ID, "TRADECTL_ALPACA__SECRET_KEY": SECRET_KEY,
               "TRADECTL_BROKER__ALPACA__DATA_URL": fake.base_url}
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "daemon.cli", "data", "fetch", "--broker", "alpaca", "--symbol", "SPY",
            "--timeframe", "1Min", "--start", "2026-10-01", "--end", "2026-10-03", "--out", str(out),
            env=env, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        stdout, stderr = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    text = stdout.decode()
    assert f"wrote {SESSIONS - 5} bars to {out}" in text
    assert f"{SESSIONS - 5:,} of {SESSIONS:,} regular-session bars present; 5 missing in 1 gap(s)" in text
    assert "days" in stderr.decode(), "a progress bar on stderr"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "daemon.cli", "backtest", "--data", str(out), "--json", "--db",
        str(tmp_path / "bt.db"), cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    stdout, stderr = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    summary = json.loads(stdout)
    assert summary["bars"] == SESSIONS - 5, summary
