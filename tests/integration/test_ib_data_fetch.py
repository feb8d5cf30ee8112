"""`tradectl data fetch --broker ib` against the fake TWS, through the real ib_async client and the adapter's own
historical path: chunked requests within the pacing limiter, close stamps, resume after a dropped connection,
the quality report against the exchange calendar, and one-line errors."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pytest

from brokers.errors import BrokerError
from brokers.history import load_bars
from daemon.cli import main
from daemon.config import TradectlConfig
from daemon.data_fetch import FetchPlan, fetch
from daemon.fetch_ib import IB, _IbHistory
from tests.brokers.harness import ib_settings
from tests.fakes.tws import FakeTws

MINUTE, DAY = 60, 86_400
# Tuesday 2024-01-09 and Wednesday 2024-01-10, NYSE's regular session 14:30-21:00 UTC (390 minutes a day)
DAYS = [int(datetime(2024, 1, d, tzinfo=UTC).timestamp()) for d in (9, 10)]
SESSION = [d + 14 * 3600 + 30 * MINUTE + i * MINUTE for d in DAYS for i in range(390)]
START, END = DAYS[0], DAYS[1] + DAY


def _price(i: int) -> float:
    return round(470 + (i % 23) * 0.05, 2)


def _history(fake: FakeTws, opens: list[int], *, spike: int | None = None) -> None:
    """One bar per minute into the fake's history (it sums history into the requested bar size)."""
    rows = []
    for i, t in enumerate(opens):
        p = _price(i)
        rows.append((t, p, p * 1.2 if t == spike else p + 0.1, p - 0.1, p + 0.02, 1000 + i))
    fake.add_history("SPY", rows)


def _paced(fake: FakeTws, **overrides: object) -> _IbHistory:
    """The adapter for history only, with a smaller request size and a pace a test can wait for (2 requests a
    second after a burst of 5: IB's 60 per 10 minutes, 20 times faster)."""
    values: dict[str, object] = dict(bar_seconds=60, max_bars_per_request=360, historical_per_10_minutes=1200,
                                     allow_read_only=True, realtime_bars=False)
    values.update(overrides)
    return _IbHistory(dataclasses.replace(ib_settings(fake), **values))  # type: ignore[arg-type]


def _plan(out: Path, *, chunk: int = DAY) -> FetchPlan:
    return FetchPlan("ib", "SPY", "1 min", "TRADES", START, END, out, chunk)


async def _fetch(history: _IbHistory, plan: FetchPlan, **kwargs: object):  # type: ignore[no-untyped-def]
    try:
        return await fetch(plan, history, bar_seconds=MINUTE, **kwargs)  # type: ignore[arg-type]
    finally:
        await history.close()


def _request_times(fake: FakeTws) -> list[float]:
    return [t for msg, t in fake.records.messages if msg == 20]


async def test_minute_bars_come_chunked_and_paced_into_a_close_stamped_file(tmp_path: Path) -> None:
    out = tmp_path / "spy.parquet"
    async with FakeTws() as fake:
        _history(fake, SESSION)
        result = await _fetch(_paced(fake), _plan(out))
        requests, times = fake.records.history_requests, _request_times(fake)
        assert fake.subscribed("SPY") == 0, "a fetch takes no real-time subscription"
    assert result.bars == len(SESSION) and not result.unreadable
    assert len(requests) == 8, "a day's chunk in requests of at most 360 bars (6 hours)"
    assert {(r["bar_size"], r["duration"], r["what_to_show"]) for r in requests} == {("1 min", "21600 S", "TRADES")}
    # the pacing limiter: a burst of 5, then one request per 0.5 s
    assert all(times[i] - times[0] >= (i - 4) * 0.5 - 0.05 for i in range(5, len(times))), times
    bars = load_bars(out, "SPY")  # exactly how backtest and train read it
    assert [b.ts for b in bars] == [t + MINUTE for t in SESSION], "stamped at the close, every bar once, in order"
    assert [b.open for b in bars] == [_price(i) for i in range(len(SESSION))]
    assert [b.volume for b in bars] == [1000.0 + i for i in range(len(SESSION))]
    frame = pd.read_parquet(out)
    assert list(frame.columns) == ["ts", "open", "high", "low", "close", "volume", "trade_count", "vwap"]


async def test_a_dropped_connection_keeps_the_stored_chunks_and_the_next_run_resumes(tmp_path: Path) -> None:
    out = tmp_path / "spy.csv"
    async with FakeTws() as fake:
        _history(fake, SESSION)
        tasks = []

        def drop_after_the_first_chunk(seconds: int, bars: int) -> None:
            if not tasks:
                tasks.append(asyncio.get_running_loop().create_task(fake.go_away()))

        with pytest.raises(BrokerError, match=r"390 bars kept in .*spy.csv.parts: run the same command again"):
            await _fetch(_paced(fake), _plan(out), progress=drop_after_the_first_chunk)
        assert not out.exists()
        await fake.come_back()
        asked = len(fake.records.history_requests)
        result = await _fetch(_paced(fake), _plan(out))
        resumed = fake.records.history_requests[asked:]
    assert result.resumed_from == DAYS[1], "after the stored chunk (the first day)"
    assert len(resumed) == 4, "only the second day is asked again"
    assert [b.ts for b in load_bars(out, "SPY")] == [t + MINUTE for t in SESSION], "every bar once, in order"


@pytest.mark.usefixtures("restore_logging")
async def test_the_command_fetches_and_reports_against_the_exchange_calendar(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The real `tradectl data fetch --broker ib` (the CLI's own code, in a thread beside the fake's loop), with
    the configured pacing and request size."""
    out = tmp_path / "spy.parquet"
    missing = SESSION[100:105]
    async with FakeTws() as fake:
        _history(fake, [t for t in SESSION if t not in missing], spike=SESSION[300])
        monkeypatch.setenv("TRADECTL_BROKER__IB__PORT", str(fake.port))
        code = await asyncio.to_thread(main, [
            "data", "fetch", "--broker", "ib", "--symbol", "spy", "--start", "2024-01-09", "--end", "2024-01-11",
            "--out", str(out), "--no-progress", "--json"])
        requests = fake.records.history_requests
    captured = capsys.readouterr()
    assert code == 0, captured.err
    doc = json.loads(captured.out)
    present = len(SESSION) - len(missing)
    assert doc["bars"] == present and doc["resumed_from"] is None
    quality = doc["quality"]
    assert (quality["calendar"], quality["expected_bars"], quality["missing_bars"]) == ("XNYS", len(SESSION), 5)
    assert quality["gaps"] == [{"start": missing[0] + MINUTE, "bars": 5}]
    assert [(o["ts"], o["field"]) for o in quality["outliers"]] == [(SESSION[300] + MINUTE, "high")]
    assert len(requests) == 2 and {r["bar_size"] for r in requests} == {"1 min"}, \
        "broker.ib.bar_seconds is the default timeframe; 2,000 bars a request"
    assert len(load_bars(out, "SPY")) == present


async def test_an_fx_pair_asks_for_the_price_named_and_is_judged_by_the_fx_week(tmp_path: Path) -> None:
    config = TradectlConfig(broker={"ib": {"contracts": [{"symbol": "EURUSD", "sec_type": "CASH",
                                                          "ib_symbol": "EUR"}]}})
    args = _args(symbol="eurusd", price="bid")
    assert IB.feed(args, config) == "BID"
    assert IB.feed(_args(symbol="EURUSD"), config) == "MIDPOINT", "FX has no trades: the contract's own MIDPOINT"
    assert IB.feed(_args(symbol="SPY"), config) == "TRADES", "an unconfigured symbol is a US stock"
    calendar, sessions = IB.sessions(config, None, "EURUSD")
    assert calendar is None and sessions is not None and sessions.name == "FX24x5"
    assert IB.sessions(config, None, "SPY") == ("XNYS", None)
    assert IB.sessions(config, "none", "SPY") == (None, None)


def _args(**values: object) -> object:
    import argparse

    return argparse.Namespace(**{"feed": None, "price": None, **values})


@pytest.mark.usefixtures("restore_logging")
def test_bad_arguments_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    base = ["data", "fetch", "--broker", "ib", "--start", "2024-01-09", "--end", "2024-01-10",
            "--out", str(tmp_path / "x.parquet"), "--no-progress"]
    monkeypatch.setenv("TRADECTL_BROKER__IB__PORT", "1")  # nothing listens there
    monkeypatch.setenv("TRADECTL_BROKER__IB__CONNECT_TIMEOUT_SECONDS", "2")
    cases = {
        ("--symbol", "SPY", "--timeframe", "1Min"): "--timeframe '1Min': the ib adapter reads 5 secs, 10 secs",
        ("--symbol", "SPY", "--feed", "iex"): "--feed is Alpaca's data feed",
        ("--symbol", "SPY"): "ib: connection refused at 127.0.0.1:1",
    }
    for extra, message in cases.items():
        assert main([*base, *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.usefixtures("restore_logging")
async def test_a_contract_that_does_not_qualify_is_ibs_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeTws() as fake:
        monkeypatch.setenv("TRADECTL_BROKER__IB__PORT", str(fake.port))
        code = await asyncio.to_thread(main, [
            "data", "fetch", "--broker", "ib", "--symbol", "NOPE", "--start", "2024-01-09", "--end", "2024-01-10",
            "--out", str(tmp_path / "x.parquet"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "ib: contract NOPE (STK NOPE USD SMART) does not qualify: No security definition" in err, err
