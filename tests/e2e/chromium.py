"""A real headless Chromium driven over the DevTools protocol with aiohttp (no playwright, no downloads).

Debian's ``chromium`` package is the browser; ``find_chromium`` says so when
it is missing so a test can skip with that message. Console messages,
uncaught exceptions and the browser's own log (failed requests) are all
collected from the moment the page target is attached, before navigating, so
nothing the page logs while loading is missed.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["MISSING_CHROMIUM", "Page", "find_chromium", "open_page"]

MISSING_CHROMIUM = (
    "Debian's chromium package is not installed (no `chromium` on PATH): "
    "`apt-get install chromium` (.ci/run installs it) to run the dashboard browser test"
)
_DRAINS: set[asyncio.Task[None]] = set()  # stderr readers, referenced until the browser exits
_LISTENING = re.compile(rb"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    return shutil.which("chromium") or next(
        (p for p in ("/usr/bin/chromium", "/usr/lib/chromium/chromium") if os.access(p, os.X_OK)), None
    )


class Page:
    """One page target: ``call`` a CDP method, read what the page logged in ``errors`` and ``console``."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.console: list[str] = []
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        await self._ws.send_json({"id": self._next, "method": method, "params": params})
        return await asyncio.wait_for(future, 15)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression in the page (JSON-serialisable values only)."""
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in reply:
            raise AssertionError(f"{expression!r} threw: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    async def text(self, selector: str) -> str | None:
        return await self.evaluate(f"document.querySelector({json.dumps(selector)})?.textContent ?? null")

    async def screenshot(self, path: Path) -> None:
        reply = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        await asyncio.to_thread(_write, path, base64.b64decode(reply["data"]))

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type is not aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(AssertionError(f"CDP error: {data['error']}"))
                    else:
                        future.set_result(data.get("result", {}))
            else:
                self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled":
            line = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            self.console.append(f"{params.get('type')}: {line}")
            if params.get("type") in ("error", "assert"):
                self.errors.append(f"console.{params.get('type')}: {line}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            self.errors.append(f"uncaught: {details.get('exception', {}).get('description') or details.get('text')}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                self.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}".strip())

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()


@contextlib.asynccontextmanager
async def open_page(binary: str, *, width: int = 1280, height: int = 1300) -> AsyncIterator[Page]:
    """Start a throwaway headless Chromium and attach to its blank page (navigate with ``Page.navigate``)."""
    with tempfile.TemporaryDirectory(prefix="tradectl-chromium-") as profile:
        process = await asyncio.create_subprocess_exec(
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-dev-shm-usage", f"--window-size={width},{height}", f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        try:
            endpoint = await asyncio.wait_for(_devtools_endpoint(process), 20)
            async with aiohttp.ClientSession() as session:
                async with session.get(f"http://{endpoint}/json/list") as response:
                    targets = await response.json()
                target = next(t for t in targets if t.get("type") == "page")
                ws = await session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0)
                page = Page(ws)
                try:
                    for domain in ("Runtime", "Log", "Page"):
                        await page.call(f"{domain}.enable")
                    yield page
                finally:
                    await page.close()
        finally:
            if process.returncode is None:
                process.terminate()
                try:
                    await asyncio.wait_for(process.wait(), 5)
                except TimeoutError:
                    process.kill()
                    await process.wait()


async def _devtools_endpoint(process: asyncio.subprocess.Process) -> str:
    """host:port of the DevTools server, read from the line Chromium prints on stderr."""
    assert process.stderr is not None
    seen: list[bytes] = []
    while line := await process.stderr.readline():
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            # keep draining stderr so a chatty browser never blocks on a full pipe
            _DRAINS.add(asyncio.get_running_loop().create_task(_drain(process.stderr)))
            return match.group(1).decode().split("/")[2]
    output = b"".join(seen).decode(errors="replace")
    raise AssertionError(f"chromium exited before its DevTools server listened:\n{output}")


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def _drain(stream: asyncio.StreamReader) -> None:
    try:
        while await stream.read(65536):
            pass
    finally:
        _DRAINS.discard(asyncio.current_task())  # type: ignore[arg-type]
