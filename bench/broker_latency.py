"""Live adapters' own latency (Alpaca, OANDA, IB): a bar's last message from the venue -> order request at the venue.

Not a test: prints a table. One run measures, for the same bars (the bundled real EUR/USD prices, re-stamped
as consecutive minute bars of SPY, the last closing now), the same strategy (the bundled recurrent model)
and the same settings (durable store, ``store.synchronous: full``):

* **wire**: the real ``tradectl run`` process with ``broker.kind: alpaca`` against the wire-level fake
  (``tests/fakes/alpaca``) in this process on 127.0.0.1: from the instant the fake hands a bar frame to the
  market-data socket to the instant the order request that bar caused arrives at ``POST /v2/orders``, both
  in the fake's ``time.monotonic_ns`` records. It holds the pipeline, the adapter on both sides (msgpack
  decode, close stamp, queue; the REST submit in a worker thread through the rate limiter) and loopback.
* **pipeline**: the simulator-backed live runner on the same bars, paced like the published ones (one bar
  every ``--gap-ms``): bar -> ``broker.submit`` inside ``on_bar`` (``bench/policy_latency.py``'s
  instrumentation, reused).

OANDA (``--broker oanda``, or ``all``): the same, with ``broker.kind: oanda`` against ``tests/fakes/oanda``:
from the instant the fake writes the HEARTBEAT at a bar's close to the pricing stream (the bar's four ticks go
out in the same loop turn just before it; OANDA's bar is complete when the venue's clock passes its close, so
that heartbeat is the bar's last message) to the arrival of ``POST .../orders``. It holds the stream's reader
thread (oandapyV20's NDJSON lines), the hand-off to the loop, the bar builder, the pipeline and the REST
submit in a worker thread through the limiter (50/s, scaled to the squeezed clock like Alpaca's). Fills are
read from the account's transactions, polled once a second for real minute bars: here once a bar interval
(else an open order would wait ~60 squeezed minutes for its fill, and the daemon sends little meanwhile). The bars are
stamped from Tuesday 2024-01-09 00:00 UTC (inside the FX week, whatever today is), so the daemon cannot
re-warm from the venue's history (asked relative to today's clock): every bar is published, the warm-up ones
too, and the simulator replays the same bars.

Like with like: both sides run the same strategy and settings on the same bars at the same pace. The pace
matters: a bar that arrives after an idle gap costs this VM about twice what a back-to-back one does (caches
and CPU gone cold, an fsync after idle), and the wire side cannot be run back to back. The disk's fsync,
which every journaled order waits for on both sides, drifts by several times while other work runs, so the
two sides are measured in alternating rounds (``--rounds``) and the samples pooled; each round's own figures
and the disk's fsync p50 in that round are printed. The venue's rate limit (200 requests a minute) is scaled
to the squeezed clock (200 per bar interval): every REST call still takes a token from the limiter, but a
minute's budget is not spent on 4 s of bars.

The adapter's overhead is wire - pipeline at p50; the target (docs: design brief) is an overhead no larger
than the pipeline's own bar -> submit p50 (ratio <= 1). Figures differ between machines; the ratio is
measured in one run.

    python bench/broker_latency.py              # 192 warm-up bars in the venue's history, 1,500 published
    python bench/broker_latency.py --bars 3000 --gap-ms 30
    python bench/broker_latency.py --strategy sma_cross --bars 600   # orders every few bars: a larger sample
    python bench/broker_latency.py --broker oanda      # or --broker all: each venue beside its own simulator run
    python bench/broker_latency.py --broker ib

Interactive Brokers (``--broker ib``): the same with ``broker.kind: ib`` against the fake TWS
(``tests/fakes/tws``), the daemon's ib_async client on the TWS socket protocol: from the instant the fake writes
the 5-second real-time bar that completes a minute bar (the twelfth of its 5-second bars; IB stamps them at the
open, the adapter sums them and stamps the minute at its close) to the arrival of the placeOrder message that bar
caused. It holds ib_async's decoder and events in the daemon's loop, the aggregation, the pipeline and
placeOrder through the 50-messages-a-second bucket (not scaled: IB's limit is per real second, and a squeezed
minute bar sends one order at most). The recurrent policy warms up from the fake's historical bars (480, so
that its first paced look-back suffices; publishing starts once the daemon's API answers, i.e. after the
warm-up), and the simulator replays the last 192 of those and the bars published.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import bisect  # noqa: E402
import contextlib  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import AsyncIterator  # noqa: E402
from datetime import UTC, datetime  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from brokers.base import Bar  # noqa: E402
from brokers.history import load_bundled  # noqa: E402
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca  # noqa: E402

CMD = [sys.executable, "-m", "daemon.cli"]
SYMBOL = "SPY"
WARMUP = 192  # the recurrent policy's warm-up, served from the venue's history
OANDA_SYMBOL = "EURUSD"
OANDA_T0 = 1704758400  # 2024-01-09T00:00:00Z, a Tuesday: the FX week stays open for the default bars and more
OANDA_MAX_AGE = 1_000_000_000  # bars stamped in 2024: the stale-data layer must not judge them by today's clock
# IB's history: enough minute bars for the recurrent re-warm's first look-back (features + 240 steps), else the
# daemon widens it four times, each wider request paced at 60 per 10 minutes (a quarter of an hour of start-up)
IB_WARMUP = 480


def _bars(total: int, symbol: str = SYMBOL, first_close: int | None = None) -> list[Bar]:
    """The first ``total`` bundled bars as consecutive minute bars of ``symbol``; by default the last one closes
    at the current minute (fresh for the stale-data layer and the bar guard)."""
    year = load_bundled()[:total]
    if first_close is None:
        first_close = int(time.time()) // 60 * 60 - (len(year) - 1) * 60
    return [Bar(symbol, first_close + 60 * i, b.open, b.high, b.low, b.close, b.volume) for i, b in enumerate(year)]


def _settings_yaml(db: Path, strategy: str, symbol: str = SYMBOL, max_age: int = 100_000) -> str:
    """What both runs share (the venue's run adds its broker section)."""
    return f"""
data: {{symbol: {symbol}, bar_seconds: 60}}
strategy: {{kind: {strategy}, sma_cross: {{fast: 3, slow: 8}}}}
risk:  # minute bars squeezed into one UTC day: the day's order cap and the loss-streak pause would end the sample
  stale_data: {{max_age_seconds: {max_age}}}
  trade_count: {{enabled: false}}
  loss_streak: {{enabled: false}}
store: {{path: {db}, synchronous: full}}
logging: {{level: error}}
"""


def _requests_per_minute(gap_ms: float) -> int:
    """The venue's limit per real minute, as a limit per squeezed minute (one bar every ``gap_ms``)."""
    from daemon.config import TradectlConfig

    return int(TradectlConfig().broker.alpaca.requests_per_minute * 60_000 / gap_ms)


async def _wire(bars: list[Bar], folder: Path, gap_ms: float, strategy: str) -> tuple[np.ndarray, int]:
    """Bar frame sent -> order request received (µs) for every order `tradectl run` sends on the fake."""
    history, live = bars[:WARMUP], bars[WARMUP:]
    opened = datetime.fromtimestamp(live[0].ts - 60, UTC)
    async with FakeAlpaca(start_time=opened, cash=10_000_000) as fake:
        fake.add_history(_fake_bar(b) for b in history)
        port = _free_port()
        config = folder / "alpaca.yaml"
        config.write_text(_settings_yaml(folder / "alpaca.db", strategy) + f"""
api: {{port: {port}}}
broker:
  kind: alpaca
  alpaca:
    symbols: [{SYMBOL}]
    requests_per_minute: {_requests_per_minute(gap_ms)}
    trading_url: {fake.base_url}
    data_url: {fake.base_url}
    data_stream_url: {fake.stock_stream_url('iex')}
    trading_stream_url: {fake.trading_stream_url}
""", encoding="utf-8")
        env = {**os.environ, "TRADECTL_ALPACA__KEY_ID": KEY_ID, "TRADECTL_ALPACA__SECRET_KEY": SECRET_KEY}
        async with _daemon(config, env, folder / "daemon.log"):
            await fake.wait_subscribed(SYMBOL, seconds=120)
            await fake.wait_listening(seconds=60)
            await asyncio.sleep(1.0)  # the start-up reconciliation and warm-up are done before bars matter
            for bar in live:
                await fake.publish_bars([_fake_bar(bar)])
                await asyncio.sleep(gap_ms / 1000)
            await asyncio.sleep(1.0)
        frames = [f.sent_ns for f in fake.records.bar_frames]
        orders = [r.arrived_ns for r in fake.records.requests if r.method == "POST" and r.path == "/v2/orders"]
    return _latencies(frames, orders), len(live)


def _latencies(sent_ns: list[int], arrived_ns: list[int]) -> np.ndarray:
    """Each order request's arrival less the last bar message sent before it (µs)."""
    latencies = []
    for arrived in arrived_ns:
        i = bisect.bisect_right(sent_ns, arrived) - 1
        if i >= 0:
            latencies.append((arrived - sent_ns[i]) / 1000.0)
    return np.array(latencies)


def _oanda_requests_per_second(gap_ms: float) -> float:
    """OANDA's limit per real second, scaled to the squeezed clock (one minute bar every ``gap_ms``)."""
    from daemon.config import TradectlConfig

    return TradectlConfig().broker.oanda.requests_per_second * 60_000 / gap_ms


async def _oanda_wire(bars: list[Bar], folder: Path, gap_ms: float, strategy: str) -> tuple[np.ndarray, int]:
    """A bar's closing heartbeat written to the fake's pricing stream -> order request received (µs)."""
    from tests.brokers.harness import publish_oanda_bar
    from tests.fakes.oanda import ACCOUNT_ID, TOKEN, FakeOanda

    async with FakeOanda(start_time=bars[0].ts - 60, balance=10_000_000) as fake:
        port = _free_port()
        config = folder / "oanda.yaml"
        config.write_text(_settings_yaml(folder / "oanda.db", strategy, OANDA_SYMBOL, OANDA_MAX_AGE) + f"""
api: {{port: {port}}}
broker:
  kind: oanda
  oanda:
    account_id: {ACCOUNT_ID}
    instruments: [EUR_USD]
    granularity: M1
    requests_per_second: {_oanda_requests_per_second(gap_ms)}
    transactions_poll_seconds: {gap_ms / 1000}
    api_url: {fake.base_url}
    stream_url: {fake.base_url}
""", encoding="utf-8")
        async with _daemon(config, {**os.environ, "TRADECTL_OANDA__TOKEN": TOKEN}, folder / "oanda-daemon.log"):
            await fake.wait_streaming(1, seconds=120)
            await asyncio.sleep(3.0)  # the start-up reconciliation is done before bars matter
            for bar in bars:
                ohlc = (round(bar.open, 5), round(bar.high, 5), round(bar.low, 5), round(bar.close, 5))
                publish_oanda_bar(fake, bar.ts - 60, ohlc)
                await asyncio.sleep(gap_ms / 1000)
            await asyncio.sleep(1.0)
        sent, orders = list(fake.records.heartbeats_sent_ns), list(fake.records.order_arrivals_ns)
    return _latencies(sent, orders), len(bars)


@contextlib.asynccontextmanager
async def _daemon(config: Path, env: dict[str, str], log_path: Path) -> AsyncIterator[None]:
    """`tradectl run --config config` for the block's duration (SIGTERM at its end), its output in ``log_path``."""
    with log_path.open("w") as log:
        proc = await asyncio.create_subprocess_exec(*CMD, "run", "--config", str(config), env=env, cwd=ROOT,
                                                    stdout=log, stderr=log)
        try:
            yield
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)


def _fake_bar(bar: Bar) -> Any:
    from tests.fakes.alpaca import Bar as FakeBar

    return FakeBar.make(bar.symbol, datetime.fromtimestamp(bar.ts - 60, UTC), bar.open, bar.high, bar.low,
                        bar.close, max(bar.volume, 1.0))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pipeline(bars: list[Bar], folder: Path, strategy: str, gap_ms: float, *, symbol: str = SYMBOL,
                    max_age: int = 100_000, history: bool = True) -> np.ndarray:
    """The simulator-backed live runner on the same bars, settings and pace: bar -> broker.submit (µs).

    ``history``: the wire side serves the first ``WARMUP`` bars as the venue's history (False: it publishes
    every bar, and so every bar is replayed here)."""
    import yaml
    from policy_latency import _SUBMIT, _order_latency  # bench/ is this script's folder

    from daemon.config import TradectlConfig
    from daemon.logs import configure_logging
    from strategies.recurrent import default_model_path

    configure_logging("error", False)
    settings = yaml.safe_load(_settings_yaml(folder / "sim.db", strategy, symbol, max_age))
    config = TradectlConfig(**settings, api={"enabled": False})
    # the bars the wire side trades: the recurrent daemon re-warms from the venue's history (the same bars go
    # through the simulator's pipeline, no order is possible before the policy is warm); the SMA starts cold
    replay = bars if strategy == "recurrent" or not history else bars[WARMUP:]
    timings = await _order_latency(default_model_path(), folder / "sim.db", replay, live=True, config=config,
                                   pace=1000.0 / gap_ms)
    return timings[_SUBMIT]


def _round(bars: list[Bar], folder: Path, args: argparse.Namespace, k: int,
           venue: str = "alpaca") -> tuple[np.ndarray, np.ndarray, float]:
    """One round: both sides (in alternating order from round to round), then the disk's fsync (µs)."""
    from durable_submit import bare_fsync_ms  # bench/ is this script's folder

    folder.mkdir()
    wire = pipeline = np.array([])
    oanda = venue == "oanda"
    for side in ("wire", "pipeline") if k % 2 == 0 else ("pipeline", "wire"):
        if side == "wire":
            measure = {"alpaca": _wire, "oanda": _oanda_wire, "ib": _ib_wire}[venue]
            wire, _ = asyncio.run(measure(bars, folder, args.gap_ms, args.strategy))
        elif oanda:
            pipeline = asyncio.run(_pipeline(bars, folder, args.strategy, args.gap_ms, symbol=OANDA_SYMBOL,
                                             max_age=OANDA_MAX_AGE, history=False))
        elif venue == "ib":  # the last WARMUP of IB's longer history, then the bars the wire side trades
            pipeline = asyncio.run(_pipeline(bars[IB_WARMUP - WARMUP:], folder, args.strategy, args.gap_ms))
        else:
            pipeline = asyncio.run(_pipeline(bars, folder, args.strategy, args.gap_ms))
    fsync = bare_fsync_ms(folder, 100, append=True, gap=args.gap_ms / 1000) * 1000.0
    return wire, pipeline, float(np.percentile(fsync, 50))


def _p50(t: np.ndarray) -> float:
    return float(np.percentile(t, 50)) if len(t) else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--broker", choices=["alpaca", "oanda", "ib", "all"], default="alpaca",
                        help="the venue measured (all: each in turn, beside its own simulator run)")
    parser.add_argument("--bars", type=int, default=1500, help="bars published after the warm-up")
    parser.add_argument("--strategy", choices=["recurrent", "sma_cross"], default="recurrent",
                        help="sma_cross (3/8) orders far more often: a larger sample of a cheaper pipeline")
    parser.add_argument("--gap-ms", type=float, default=15.0, help="pause between published bars")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both sides, pooled")
    args = parser.parse_args(argv)
    if args.broker in ("alpaca", "all"):
        _alpaca(args)
    if args.broker in ("oanda", "all"):
        _oanda(args)
    if args.broker in ("ib", "all"):
        _ib(args)


def _alpaca(args: argparse.Namespace) -> None:
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(max(1, args.rounds)):
            bars = _bars(WARMUP + args.bars)  # stamped afresh: the last bar closes now
            rounds.append(_round(bars, Path(tmp) / f"round{k}", args, k))
    print(f"Alpaca adapter latency, {args.strategy}, {args.bars} bars published a round ({args.gap_ms:g} ms apart, "
          f"the simulator paced the same), {len(rounds)} rounds, store.synchronous=full, REST limit "
          f"{_requests_per_minute(args.gap_ms):,}/min (200 a minute, scaled to the squeezed minute)")
    _report(rounds, "wire: bar frame sent by the fake -> order request at the fake")


def _oanda(args: argparse.Namespace) -> None:
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(max(1, args.rounds)):
            bars = _bars(WARMUP + args.bars, OANDA_SYMBOL, first_close=OANDA_T0 + 60)
            rounds.append(_round(bars, Path(tmp) / f"round{k}", args, k, venue="oanda"))
    print(f"OANDA adapter latency, {args.strategy}, {WARMUP + args.bars} bars published a round (warm-up included; "
          f"{args.gap_ms:g} ms apart, the simulator paced the same), {len(rounds)} rounds, store.synchronous=full, "
          f"REST limit {_oanda_requests_per_second(args.gap_ms):,.0f}/s (50 a second, scaled to the squeezed clock)")
    _report(rounds, "wire: bar's closing heartbeat on the fake's stream -> order request")


async def _ib_wire(bars: list[Bar], folder: Path, gap_ms: float, strategy: str) -> tuple[np.ndarray, int]:
    """The 5-second bar completing a minute bar written by the fake TWS -> placeOrder received (µs)."""
    from tests.fakes.tws import FakeTws

    history, live = bars[:IB_WARMUP], bars[IB_WARMUP:]
    async with FakeTws(cash=10_000_000) as fake:
        # the warm-up as the venue's history: one 5-second bar at each minute's open (the fake sums history)
        fake.add_history(SYMBOL, [(b.ts - 60, b.open, b.high, b.low, b.close, max(b.volume, 1.0)) for b in history])
        config, port = folder / "ib.yaml", _free_port()
        config.write_text(_settings_yaml(folder / "ib.db", strategy) + f"""
api: {{port: {port}}}
broker:
  kind: ib
  ib: {{port: {fake.port}, client_id: 5, bar_seconds: 60}}
""", encoding="utf-8")
        async with _daemon(config, dict(os.environ), folder / "ib-daemon.log"):
            await fake.wait_until(lambda: fake.subscribed(SYMBOL) == 1, 120, "real-time bars subscribed")
            await _api_up(port)  # the daemon's API starts once the warm-up's paced history requests are done
            await asyncio.sleep(1.0)  # the start-up reconciliation is done before bars matter
            for bar in live:
                await fake.publish_long_bar(SYMBOL, bar.ts - 60, 60, bar.open, bar.high, bar.low, bar.close,
                                            max(bar.volume, 1.0))
                await asyncio.sleep(gap_ms / 1000)
            await asyncio.sleep(1.0)
        closing = [ns for ts_open, ns in fake.records.bar_writes_ns if (ts_open + 5) % 60 == 0]
        orders = list(fake.records.order_arrivals_ns)
    return _latencies(closing, orders), len(live)


async def _api_up(port: int, seconds: float = 120.0) -> None:
    import aiohttp

    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as http:
        while True:
            try:
                async with http.get(f"http://127.0.0.1:{port}/status") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the daemon's API did not answer within {seconds:g} s")
            await asyncio.sleep(0.2)


def _ib(args: argparse.Namespace) -> None:
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(max(1, args.rounds)):
            bars = _bars(IB_WARMUP + args.bars)  # stamped afresh: the last bar closes now
            rounds.append(_round(bars, Path(tmp) / f"round{k}", args, k, venue="ib"))
    print(f"IB adapter latency, {args.strategy}, {args.bars} bars published a round as twelve 5-second bars each "
          f"({args.gap_ms:g} ms apart, the simulator paced the same), {len(rounds)} rounds, store.synchronous=full, "
          "50 messages/s")
    _report(rounds, "wire: bar-completing 5-s bar sent by the fake TWS -> placeOrder")


def _report(rounds: list[tuple[np.ndarray, np.ndarray, float]], wire_label: str) -> None:
    wire = np.concatenate([r[0] for r in rounds])
    pipeline = np.concatenate([r[1] for r in rounds])
    print(f"{'round':>5s} {'wire p50':>10s} {'pipeline p50':>13s} {'overhead':>10s} {'ratio':>7s} "
          f"{'orders wire/pipeline':>21s} {'disk fsync p50':>15s}  (µs)")
    for k, (w, p, fsync) in enumerate(rounds, 1):
        over = _p50(w) - _p50(p)
        print(f"{k:5d} {_p50(w):10.1f} {_p50(p):13.1f} {over:10.1f} {over / _p50(p):6.2f}x "
              f"{f'{len(w)}/{len(p)}':>21s} {fsync:15.1f}")
    print()
    print(f"{'path, all rounds':66s} {'p50 µs':>9s} {'p99 µs':>9s} {'n':>5s}")
    rows = {wire_label: wire, "pipeline: bar -> broker.submit (simulator, same bars and pace)": pipeline}
    for name, t in rows.items():
        if len(t):
            print(f"{name:66s} {np.percentile(t, 50):9.1f} {np.percentile(t, 99):9.1f} {len(t):5d}")
    if not len(wire) or not len(pipeline):
        print("no orders on one side: nothing to compare (see the daemon's log)\n")
        return
    overhead = _p50(wire) - _p50(pipeline)
    ratio = overhead / _p50(pipeline)
    print(f"{'adapter overhead at p50 (wire - pipeline)':66s} {overhead:9.1f}")
    print(f"adapter overhead p50 / pipeline bar -> submit p50: {ratio:.2f}x  "
          f"(target <= 1x: {'met' if ratio <= 1 else 'MISSED'})\n")


if __name__ == "__main__":
    main()
