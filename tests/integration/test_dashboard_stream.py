"""The dashboard's routes and server-sent events on a real ControlApi socket, with real aiohttp clients.

What matters here is that the feed can never hurt trading: a browser that
stops reading costs a bounded queue and is dropped, publishing never waits,
and stopping the API does not wait on an open stream.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
import socket
import tomllib
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from daemon.api import ControlApi
from daemon.dashboard import STATIC_DIR, STATIC_FILES, Dashboard, SseQueue, sse_frame
from daemon.events import EventHub


class _Snapshots:
    """A snapshot provider that counts how often the dashboard asked."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self) -> dict[str, Any]:
        self.calls += 1
        return {"status": {"equity": Decimal("100000.25"), "n": self.calls}, "drawdown": float("nan")}


async def _serve(dashboard: Dashboard) -> ControlApi:
    api = ControlApi(status=lambda: {}, health=lambda: (True, ""), port=0, routes=dashboard.routes())
    await api.start()
    return api


@pytest.fixture
async def served() -> AsyncIterator[tuple[Dashboard, ControlApi, EventHub, _Snapshots]]:
    hub, snapshots = EventHub(), _Snapshots()
    dashboard = Dashboard(snapshots, hub, interval=0.05, queue_size=8, write_timeout=0.5)
    api = await _serve(dashboard)
    yield dashboard, api, hub, snapshots
    await dashboard.close()
    await api.stop()


async def _frames(response: aiohttp.ClientResponse, count: int) -> list[tuple[str, Any]]:
    """The next ``count`` named events of a stream as (event, decoded data)."""
    frames: list[tuple[str, Any]] = []
    kind = ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[len("event: "):]
        elif line.startswith("data: "):
            frames.append((kind, json.loads(line[len("data: "):])))
            if len(frames) == count:
                break
    return frames


def test_every_served_file_ships_in_the_package() -> None:
    """A wheel carries only what package-data names: a page file outside it would 500 on an installed daemon."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["daemon"]
    for name in STATIC_FILES:
        assert (STATIC_DIR / name).is_file()
        assert any(fnmatch.fnmatch(f"static/{name}", pattern) for pattern in patterns), name


def test_queue_keeps_the_newest_frames_and_counts_the_dropped() -> None:
    queue = SseQueue(3)
    for i in range(5):
        queue.put(str(i).encode())
    assert (len(queue), queue.dropped) == (3, 2)

    async def drain() -> list[bytes | None]:
        got = [await queue.get(), await queue.get()]
        queue.close()
        queue.put(b"after close")
        return [*got, await queue.get()]

    assert asyncio.run(drain()) == [b"2", b"3", None], "closed means done, even with a frame left"


def test_frame_is_one_strict_json_line() -> None:
    frame = sse_frame("snapshot", {"equity": Decimal("1.10"), "dd": float("inf"), "text": "a\nb"})
    assert frame == b'event: snapshot\ndata: {"equity":"1.10","dd":null,"text":"a\\nb"}\n\n'


async def test_page_and_its_files_are_served_and_nothing_else(
    served: tuple[Dashboard, ControlApi, EventHub, _Snapshots],
) -> None:
    _, api, _, _ = served
    async with aiohttp.ClientSession() as session:
        async with session.get(api.url + "/") as page:
            assert page.status == 200 and page.content_type == "text/html"
            html = await page.text()
        assert '<script src="/static/app.js"' in html
        assert "://" not in html, "no CDN: every script, style and icon comes from the daemon"
        assert all(ref.startswith(("/static/", "data:")) for ref in re.findall(r'(?:src|href)="([^"]*)"', html))
        async with session.get(api.url + "/static/app.js") as script:
            assert script.status == 200 and script.content_type == "text/javascript"
        async with session.get(api.url + "/static/dashboard.py") as other:
            assert other.status == 404
        async with session.get(api.url + "/dashboard.json") as doc:
            assert await doc.json() == {"status": {"equity": "100000.25", "n": 1}, "drawdown": None}


async def test_stream_sends_a_snapshot_then_events_and_periodic_snapshots(
    served: tuple[Dashboard, ControlApi, EventHub, _Snapshots],
) -> None:
    _, api, hub, _ = served
    async with aiohttp.ClientSession() as session, session.get(api.url + "/events") as stream:
        assert stream.content_type == "text/event-stream"
        (first,) = await _frames(stream, 1)
        assert first[0] == "snapshot" and first[1]["status"]["equity"] == "100000.25"
        hub.publish("halt", "drawdown halt", {"layer": "drawdown"})
        frames = await _frames(stream, 3)
    kinds = [kind for kind, _ in frames]
    assert "event" in kinds and "snapshot" in kinds
    event = next(data for kind, data in frames if kind == "event")
    assert (event["kind"], event["message"], event["data"]) == ("halt", "drawdown halt", {"layer": "drawdown"})
    numbers = [data["status"]["n"] for kind, data in frames if kind == "snapshot"]
    assert numbers == sorted(numbers) and numbers[0] > 1, "fresh snapshots, not the first one again"


async def test_a_browser_that_stops_reading_costs_a_bounded_queue_and_is_dropped(
    served: tuple[Dashboard, ControlApi, EventHub, _Snapshots],
) -> None:
    dashboard, api, hub, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    # a raw client with a tiny receive window that never reads a byte
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    writer.write(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
    await writer.drain()
    for _ in range(100):
        if dashboard.clients:
            break
        await asyncio.sleep(0.01)
    assert dashboard.clients == 1
    loop = asyncio.get_running_loop()
    started = loop.time()
    payload = {"blob": "x" * 50_000}
    for _ in range(400):  # 20 MB: far more than any socket buffer takes
        hub.publish("alert", "big", payload)
        await asyncio.sleep(0)
    assert loop.time() - started < 2.0, "publishing never waits on a browser"
    assert 0 < dashboard.backlog <= 8
    for _ in range(300):  # the stalled write times out (0.5 s) and the stream is closed
        if dashboard.clients == 0:
            break
        await asyncio.sleep(0.01)
    assert dashboard.clients == 0
    writer.close()
    del reader


async def test_closing_ends_open_streams_so_the_api_stops_at_once() -> None:
    snapshots = _Snapshots()
    dashboard = Dashboard(snapshots, EventHub(), interval=0.05)
    api = await _serve(dashboard)
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session, session.get(api.url + "/events") as stream:
        await _frames(stream, 1)
        started = loop.time()
        await dashboard.close()
        await api.stop()
        rest = await asyncio.wait_for(stream.content.read(), 2)
    assert loop.time() - started < 1.0, "not the API's 5 s shutdown timeout"
    assert b"event:" not in rest or rest.endswith(b"\n\n")
    calls = snapshots.calls
    await asyncio.sleep(0.2)
    assert snapshots.calls == calls, "no ticker left running"


async def test_the_ticker_runs_only_while_someone_watches(
    served: tuple[Dashboard, ControlApi, EventHub, _Snapshots],
) -> None:
    dashboard, api, _, snapshots = served
    await asyncio.sleep(0.2)
    assert snapshots.calls == 0, "no browser, no snapshot reads"
    async with aiohttp.ClientSession() as session, session.get(api.url + "/events") as stream:
        await _frames(stream, 3)
    for _ in range(100):
        if dashboard.clients == 0:
            break
        await asyncio.sleep(0.02)
    assert dashboard.clients == 0
    await asyncio.sleep(0.1)
    calls = snapshots.calls
    await asyncio.sleep(0.3)
    assert snapshots.calls == calls
