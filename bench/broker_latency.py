"""The Alpaca adapter's own latency: bar message on the venue's websocket -> order request at the venue.

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
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import asyncio  # noqa: E402
import bisect  # noqa: E402
import signal  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
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


def _bars(total: int) -> list[Bar]:
    """The first ``total`` bundled bars as consecutive minute bars of SPY; the last one closes at the current
    minute (fresh for the stale-data layer and the bar guard)."""
    year = load_bundled()[:total]
    last_close = int(time.time()) // 60 * 60
    first_close = last_close - (len(year) - 1) * 60
    return [Bar(SYMBOL, first_close + 60 * i, b.open, b.high, b.low, b.close, b.volume) for i, b in enumerate(year)]


def _settings_yaml(db: Path, strategy: str) -> str:
    """What both runs share (the Alpaca run adds its broker section)."""
    return f"""
data: {{symbol: {SYMBOL}, bar_seconds: 60}}
strategy: {{kind: {strategy}, sma_cross: {{fast: 3, slow: 8}}}}
risk:  # minute bars squeezed into one UTC day: the day's order cap and the loss-streak pause would end the sample
  stale_data: {{max_age_seconds: 100000}}
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
        log = (folder / "daemon.log").open("w")
        proc = await asyncio.create_subprocess_exec(*CMD, "run", "--config",
                                                    str(config), env=env, cwd=ROOT, stdout=log, stderr=log)
        try:
            await fake.wait_subscribed(SYMBOL, seconds=120)
            await fake.wait_listening(seconds=60)
            await asyncio.sleep(1.0)  # the start-up reconciliation and warm-up are done before bars matter
            for bar in live:
                await fake.publish_bars([_fake_bar(bar)])
                await asyncio.sleep(gap_ms / 1000)
            await asyncio.sleep(1.0)
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), 60)
            log.close()
        frames = [f.sent_ns for f in fake.records.bar_frames]
        orders = [r.arrived_ns for r in fake.records.requests if r.method == "POST" and r.path == "/v2/orders"]
    latencies = []
    for arrived in orders:
        i = bisect.bisect_right(frames, arrived) - 1  # the last bar frame sent before the order arrived
        if i >= 0:
            latencies.append((arrived - frames[i]) / 1000.0)
    return np.array(latencies), len(live)


def _fake_bar(bar: Bar) -> Any:
    from tests.fakes.alpaca import Bar as FakeBar

    return FakeBar.make(bar.symbol, datetime.fromtimestamp(bar.ts - 60, UTC), bar.open, bar.high, bar.low,
                        bar.close, max(bar.volume, 1.0))


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _pipeline(bars: list[Bar], folder: Path, strategy: str, gap_ms: float) -> np.ndarray:
    """The simulator-backed live runner on the same bars, settings and pace: bar -> broker.submit (µs)."""
    import yaml
    from policy_latency import _SUBMIT, _order_latency  # bench/ is this script's folder

    from daemon.config import TradectlConfig
    from daemon.logs import configure_logging
    from strategies.recurrent import default_model_path

    configure_logging("error", False)
    settings = yaml.safe_load(_settings_yaml(folder / "sim.db", strategy))
    config = TradectlConfig(**settings, api={"enabled": False})
    # the bars the wire side trades: the recurrent daemon re-warms from the venue's history (the same bars go
    # through the simulator's pipeline, no order is possible before the policy is warm); the SMA starts cold
    replay = bars if strategy == "recurrent" else bars[WARMUP:]
    timings = await _order_latency(default_model_path(), folder / "sim.db", replay, live=True, config=config,
                                   pace=1000.0 / gap_ms)
    return timings[_SUBMIT]


def _round(bars: list[Bar], folder: Path, args: argparse.Namespace, k: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One round: both sides (in alternating order from round to round), then the disk's fsync (µs)."""
    from durable_submit import bare_fsync_ms  # bench/ is this script's folder

    folder.mkdir()
    wire = pipeline = np.array([])
    for side in ("wire", "pipeline") if k % 2 == 0 else ("pipeline", "wire"):
        if side == "wire":
            wire, _ = asyncio.run(_wire(bars, folder, args.gap_ms, args.strategy))
        else:
            pipeline = asyncio.run(_pipeline(bars, folder, args.strategy, args.gap_ms))
    fsync = bare_fsync_ms(folder, 100, append=True, gap=args.gap_ms / 1000) * 1000.0
    return wire, pipeline, float(np.percentile(fsync, 50))


def _p50(t: np.ndarray) -> float:
    return float(np.percentile(t, 50)) if len(t) else float("nan")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bars", type=int, default=1500, help="bars published after the warm-up")
    parser.add_argument("--strategy", choices=["recurrent", "sma_cross"], default="recurrent",
                        help="sma_cross (3/8) orders far more often: a larger sample of a cheaper pipeline")
    parser.add_argument("--gap-ms", type=float, default=15.0, help="pause between published bars")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of both sides, pooled")
    args = parser.parse_args(argv)
    rounds = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(max(1, args.rounds)):
            bars = _bars(WARMUP + args.bars)  # stamped afresh: the last bar closes now
            rounds.append(_round(bars, Path(tmp) / f"round{k}", args, k))
    wire = np.concatenate([r[0] for r in rounds])
    pipeline = np.concatenate([r[1] for r in rounds])
    print(f"Alpaca adapter latency, {args.strategy}, {args.bars} bars published a round ({args.gap_ms:g} ms apart, "
          f"the simulator paced the same), {len(rounds)} rounds, store.synchronous=full, REST limit "
          f"{_requests_per_minute(args.gap_ms):,}/min (200 a minute, scaled to the squeezed minute)")
    print(f"{'round':>5s} {'wire p50':>10s} {'pipeline p50':>13s} {'overhead':>10s} {'ratio':>7s} "
          f"{'orders wire/pipeline':>21s} {'disk fsync p50':>15s}  (µs)")
    for k, (w, p, fsync) in enumerate(rounds, 1):
        over = _p50(w) - _p50(p)
        print(f"{k:5d} {_p50(w):10.1f} {_p50(p):13.1f} {over:10.1f} {over / _p50(p):6.2f}x "
              f"{f'{len(w)}/{len(p)}':>21s} {fsync:15.1f}")
    print()
    print(f"{'path, all rounds':60s} {'p50 µs':>9s} {'p99 µs':>9s} {'n':>5s}")
    rows = {"wire: bar frame sent by the fake -> order request at the fake": wire,
            "pipeline: bar -> broker.submit (simulator, same bars and pace)": pipeline}
    for name, t in rows.items():
        if len(t):
            print(f"{name:60s} {np.percentile(t, 50):9.1f} {np.percentile(t, 99):9.1f} {len(t):5d}")
    if not len(wire) or not len(pipeline):
        print("no orders on one side: nothing to compare (see the daemon's log)")
        return
    overhead = _p50(wire) - _p50(pipeline)
    ratio = overhead / _p50(pipeline)
    print(f"{'adapter overhead at p50 (wire - pipeline)':60s} {overhead:9.1f}")
    print(f"adapter overhead p50 / pipeline bar -> submit p50: {ratio:.2f}x  "
          f"(target <= 1x: {'met' if ratio <= 1 else 'MISSED'})")


if __name__ == "__main__":
    main()
