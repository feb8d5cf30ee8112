"""systemd's notify protocol, spoken directly.

The protocol is one datagram to the socket named by ``NOTIFY_SOCKET`` (a
leading ``@`` means the Linux abstract namespace). Our own few lines instead of
the ``sdnotify`` package, which swallows every error: a watchdog ping that
silently fails gets the daemon killed with nothing in the log.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable

import structlog

log = structlog.get_logger(__name__)


class SystemdNotifier:
    """READY/STATUS/STOPPING messages and watchdog pings; a no-op outside systemd."""

    def __init__(self, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = ("\0" + raw[1:]) if raw.startswith("@") else (raw or None)
        usec = env.get("WATCHDOG_USEC", "")
        self.watchdog_interval: float | None = int(usec) / 1e6 / 2 if usec.isdigit() and int(usec) > 0 else None
        self._task: asyncio.Task[None] | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram. Returns False (and logs) on failure."""
        if self.address is None:
            return False
        payload = "\n".join(fields).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(payload, self.address)
        except OSError as exc:
            log.error("systemd notify failed", fields=fields, error=str(exc))
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", f"STATUS={status}" if status else "STATUS=ready")

    def stopping(self) -> bool:
        return self.send("STOPPING=1")

    def start_watchdog(self, healthy: Callable[[], tuple[bool, str]]) -> None:
        """Ping at half the watchdog interval, but only while ``healthy`` says so.

        An unhealthy daemon stops pinging and lets systemd restart it.
        """
        if self.address is None or self.watchdog_interval is None:
            return
        self._task = asyncio.get_running_loop().create_task(self._watchdog(healthy), name="sd-watchdog")

    async def stop_watchdog(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _watchdog(self, healthy: Callable[[], tuple[bool, str]]) -> None:
        """The ping runs on the event loop on purpose: a blocked loop cannot ping, so systemd sees it.

        Each change of health is also sent as STATUS=, so ``systemctl status``
        says why pings stopped before systemd's watchdog fires.
        """
        assert self.watchdog_interval is not None
        was_ok = True
        while True:
            ok, reason = healthy()
            if ok:
                if not was_ok:
                    self.send("WATCHDOG=1", "STATUS=healthy again")
                else:
                    self.send("WATCHDOG=1")
            else:
                log.warning("withholding watchdog ping", reason=reason)
                if was_ok:
                    self.send(f"STATUS=unhealthy: {reason}")
            was_ok = ok
            await asyncio.sleep(self.watchdog_interval)
