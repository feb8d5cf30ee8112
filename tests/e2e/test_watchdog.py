"""systemd's watchdog, with a real notify socket, against a real daemon on the simulator.

A unix datagram socket in tmp stands in for systemd (``NOTIFY_SOCKET``,
``WATCHDOG_USEC``). In process: READY=1 once start-up is done, WATCHDOG=1
pings that stop while the event loop is blocked or the store cannot be
written (another connection holds SQLite's write lock, as a backup tool or a
forgotten ``sqlite3`` shell would), and resume once healthy again; /healthz
says the same. As a
process: with ``health.exit_after_unhealthy_seconds`` (Fly.io), a daemon that
stays unhealthy stops cleanly and exits with code 4.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import pytest

from brokers.history import load_bundled
from daemon.cli import EXIT_UNHEALTHY
from daemon.config import TradectlConfig
from daemon.runners import LiveRunner

PING = b"WATCHDOG=1"


@dataclass
class Notifications:
    """Every datagram the daemon sent, with the loop time it was read (the daemon runs on the same loop)."""

    sock: socket.socket
    got: list[tuple[float, bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.got.append((loop.time(), data))
            self.arrived.set()

    async def silence(self, *, after: float, quiet: float, seconds: float) -> float:
        """Once pings have stopped for ``quiet`` seconds: the time of the last ping (or ``after``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            last = max([t for t, m in self.got if t >= after and m.startswith(PING)], default=after)
            if loop.time() - last >= quiet:
                return last
            await asyncio.sleep(0.05)
        raise AssertionError(f"pings did not stop within {seconds} s")

    def pings_between(self, start: float, end: float) -> int:
        return sum(1 for t, m in self.got if start <= t < end and m.startswith(PING))

    async def wait_for(self, test: Callable[[bytes], bool], *, after: float = 0.0, seconds: float) -> float:
        """The loop time of the first datagram after ``after`` that passes ``test``."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            for t, m in self.got:
                if t >= after and test(m):
                    return t
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no such notification within {seconds} s; got {self.got[-5:]}")
            self.arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.arrived.wait(), remaining)


@contextlib.asynccontextmanager
async def _notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Notifications]:
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    monkeypatch.setenv("WATCHDOG_USEC", "100000")  # a ping every 50 ms while healthy
    notes = Notifications(sock)
    task = asyncio.create_task(notes.collect())
    try:
        yield notes
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


def _config(tmp_path: Path, *, api: bool = False, **health: float) -> TradectlConfig:
    """Health limits a test can cross in a second; the checks a test is not about are given room (a loaded
    machine's fsync can take a second, and any test's loop can stall briefly)."""
    return TradectlConfig(
        api={"enabled": api, "port": 0},
        strategy={"kind": "sma_cross"},
        store={"path": str(tmp_path / "live.db"), "flush_seconds": 60},  # (see the store test)
        data={"pace": 20},
        health={
            "loop_lag_window_seconds": 1.0,
            "market_data_grace_seconds": 10,  # (a blocked loop also puts the replay behind its schedule)
            "store_probe_seconds": 0.1,
            **health,
        },
    )


async def test_ready_after_start_up_then_no_pings_while_the_loop_is_blocked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with _notify_socket(tmp_path, monkeypatch) as notes:
        config = _config(tmp_path, loop_lag_limit_ms=300, store_probe_max_age_seconds=60)
        runner = await LiveRunner.open(config, bars=load_bundled()[:4000])
        daemon = runner.daemon
        assert runner.notifier.watchdog_interval == 0.05
        trading = asyncio.create_task(runner.run(install_signals=False))
        loop = asyncio.get_running_loop()
        try:
            ready = await notes.wait_for(lambda m: m.startswith(b"READY=1"), seconds=20)
            assert notes.got[0][1].startswith(b"READY=1"), "nothing before READY=1"
            assert daemon.startup is not None and daemon.startup.as_dict(), "start-up reconciliation done"
            assert daemon.store.run_id > 0
            await asyncio.sleep(0.5)
            assert notes.pings_between(ready, loop.time()) >= 5, notes.got

            blocked = loop.time()
            time.sleep(1.5)  # noqa: ASYNC251 -- the point: a blocking call on the event loop
            unblocked = loop.time()
            ok, reason = daemon.health()  # before anything else has run: the stall is seen already
            assert not ok and reason.startswith("loop_lag: worst wake-up"), reason
            back = await notes.wait_for(lambda m: m.startswith(PING), after=unblocked, seconds=5)
            assert notes.pings_between(blocked, back) == 0, "no ping while blocked nor while the lag is in the window"
            assert back - unblocked >= 0.5, "the lag counted against health for (about) its window"
            assert any(m.startswith(b"STATUS=unhealthy: loop_lag") for t, m in notes.got if unblocked <= t <= back)
            assert daemon.health() == (True, "ok")
            await asyncio.sleep(0.3)
            assert notes.pings_between(back, loop.time()) >= 4, "pinging again"
        finally:
            daemon.request_stop()
            await asyncio.wait_for(trading, 15)
        assert notes.got[-1][1] == b"STOPPING=1"


async def test_no_pings_while_the_store_cannot_be_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _notify_socket(tmp_path, monkeypatch) as notes:
        config = _config(tmp_path, api=True, loop_lag_limit_ms=5000, store_probe_max_age_seconds=1.0)
        runner = await LiveRunner.open(config, bars=load_bundled()[:4000])
        daemon = runner.daemon
        trading = asyncio.create_task(runner.run(install_signals=False))
        loop = asyncio.get_running_loop()
        try:
            await notes.wait_for(lambda m: m.startswith(b"READY=1"), seconds=20)
            # no orders while the lock is held: this test is about the watchdog, not a failing order commit
            await daemon.pause()
            await notes.wait_for(lambda m: m.startswith(PING), after=loop.time(), seconds=5)

            other = sqlite3.connect(str(tmp_path / "live.db"), isolation_level=None)
            other.execute("BEGIN EXCLUSIVE")  # another process holds the write lock: every write of ours waits
            locked = loop.time()
            try:
                went_bad = await notes.silence(after=locked, quiet=1.0, seconds=5)
                ok, reason = daemon.health()
                assert not ok and reason.startswith("store: no successful write for"), reason
                status, body = await _healthz(runner)
                assert status == 503 and body["reason"].startswith("store: no successful write for"), body
            finally:
                other.execute("ROLLBACK")
                other.close()
            released = loop.time()
            back = await notes.wait_for(lambda m: m.startswith(PING), after=released, seconds=5)
            assert back - released < 2.0, "pinging again once a write succeeds"
            assert went_bad - locked <= 1.5, "unhealthy once no write succeeded for store_probe_max_age_seconds"
            assert notes.pings_between(went_bad + 0.01, released) == 0, "no ping while the store is unwritable"
            assert any(m.startswith(b"STATUS=unhealthy: store") for t, m in notes.got if locked <= t <= released)
            assert daemon.health() == (True, "ok")
            assert await _healthz(runner) == (200, {"ok": True})
        finally:
            daemon.request_stop()
            await asyncio.wait_for(trading, 15)
        assert (await daemon_state(tmp_path))[0] == "written", "the probe's write is in the store"


async def _healthz(runner: LiveRunner) -> tuple[int, dict[str, object]]:
    """GET /healthz on the daemon's API: the same rule as the watchdog's."""
    assert runner.api is not None
    async with aiohttp.ClientSession() as session, session.get(runner.api.url + "/healthz") as response:
        return response.status, await response.json()


async def daemon_state(tmp_path: Path) -> tuple[str, int]:
    with contextlib.closing(sqlite3.connect(str(tmp_path / "live.db"))) as conn:
        value, ts = conn.execute("SELECT value, updated_ts FROM state WHERE key = 'health_probe'").fetchone()
    return str(value), int(ts)


@pytest.mark.slow
def test_an_unhealthy_daemon_exits_with_code_4_when_configured(tmp_path: Path) -> None:
    """Fly.io: failing checks restart nothing, so the daemon stops itself and the restart policy brings it back.

    The process is frozen (SIGSTOP) for 1 s, a stall seen from inside as a 1 s loop lag; with a 4 s
    lag window and a 2 s exit delay it stays unhealthy long enough, stops cleanly, and exits 4. (The
    freeze stays under the 2.5 s after which the stalled-loop guard would end it without a clean stop.)
    The freeze waits for a watchdog ping, the proof of a healthy evaluation: on a loaded machine the
    start-up itself can lag past the limit, and the 2 s would then count from before the freeze.
    """
    sock_path = tmp_path / "notify.sock"
    env = dict(os.environ)
    env.update(
        NOTIFY_SOCKET=str(sock_path),
        WATCHDOG_USEC="400000",
        TRADECTL_STORE__PATH=str(tmp_path / "run.db"),
        TRADECTL_STRATEGY__KIND="sma_cross",
        TRADECTL_API__ENABLED="false",
        TRADECTL_DATA__PACE="20",
        TRADECTL_HEALTH__LOOP_LAG_LIMIT_MS="500",
        TRADECTL_HEALTH__LOOP_LAG_WINDOW_SECONDS="4",
        TRADECTL_HEALTH__EXIT_AFTER_UNHEALTHY_SECONDS="2",
    )
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(sock_path))
        sock.settimeout(30)
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "run"], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            assert sock.recv(4096).startswith(b"READY=1")
            while not sock.recv(4096).startswith(PING):
                pass  # STATUS= lines while start-up lag leaves the window
            assert proc.poll() is None, "healthy: still running"
            proc.send_signal(signal.SIGSTOP)
            time.sleep(1.0)
            proc.send_signal(signal.SIGCONT)
            stopped = time.monotonic()
            out, err = proc.communicate(timeout=20)
            took = time.monotonic() - stopped
            sock.setblocking(False)
            sent = []
            with contextlib.suppress(BlockingIOError):
                while True:
                    sent.append(sock.recv(4096))
            assert sent[-1] == b"STOPPING=1", sent
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == EXIT_UNHEALTHY == 4, err[-2000:]
    assert "stopped after staying unhealthy: loop_lag:" in err
    assert "tradectl run summary" in out, "a clean stop: the run's summary was written"
    assert 2.0 <= took < 10

