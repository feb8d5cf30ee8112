"""The notify protocol against a real unix datagram socket standing in for systemd."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from daemon.sdnotify import SystemdNotifier


def _listener(path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    return sock


def test_ready_and_stopping_reach_the_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    with _listener(path) as sock:
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path)})
        assert notifier.enabled
        assert notifier.ready("trading EURUSD")
        assert sock.recv(1024) == b"READY=1\nSTATUS=trading EURUSD"
        assert notifier.stopping()
        assert sock.recv(1024) == b"STOPPING=1"


def test_abstract_namespace_address() -> None:
    name = f"tradectl-test-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert sock.recv(1024).startswith(b"READY=1")


def test_outside_systemd_it_does_nothing() -> None:
    notifier = SystemdNotifier({})
    assert not notifier.enabled
    assert notifier.ready() is False


def test_a_missing_socket_is_reported_not_raised(tmp_path: Path) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert notifier.ready() is False


async def test_watchdog_pings_only_while_healthy(tmp_path: Path) -> None:
    path = tmp_path / "wd.sock"
    with _listener(path) as sock:
        sock.setblocking(False)
        health = {"ok": True}
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "40000"})  # ping every 20 ms
        assert notifier.watchdog_interval == 0.02
        notifier.start_watchdog(lambda: (health["ok"], "feed stalled"))
        await asyncio.sleep(0.15)
        pings = _drain(sock)
        assert pings and set(pings) == {b"WATCHDOG=1"}
        health["ok"] = False
        await asyncio.sleep(0.05)
        _drain(sock)  # a ping already in flight when health changed
        await asyncio.sleep(0.15)
        assert _drain(sock) == []
        await notifier.stop_watchdog()


def _drain(sock: socket.socket) -> list[bytes]:
    out = []
    while True:
        try:
            out.append(sock.recv(1024))
        except BlockingIOError:
            return out


async def test_each_change_of_health_is_sent_as_status(tmp_path: Path) -> None:
    """``systemctl status`` shows why pings stopped, once per change (not once per withheld ping)."""
    path = tmp_path / "st.sock"
    with _listener(path) as sock:
        sock.setblocking(False)
        health = {"ok": False}
        notifier = SystemdNotifier({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "40000"})
        notifier.start_watchdog(lambda: (health["ok"], "store: write failed"))
        await asyncio.sleep(0.15)
        assert _drain(sock) == [b"STATUS=unhealthy: store: write failed"]  # READY's status said ready
        health["ok"] = True
        await asyncio.sleep(0.1)
        got = _drain(sock)
        assert got[0] == b"WATCHDOG=1\nSTATUS=healthy again" and set(got[1:]) == {b"WATCHDOG=1"}
        health["ok"] = False
        await asyncio.sleep(0.1)
        assert _drain(sock) == [b"STATUS=unhealthy: store: write failed"]
        await notifier.stop_watchdog()
