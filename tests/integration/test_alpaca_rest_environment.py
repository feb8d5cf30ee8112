"""The Alpaca REST client reads the environment's HTTP settings once, at start, and still honours them.

``AlpacaRest`` resolves the proxy variables (and ``NO_PROXY``) when it is built
instead of on every request (a per-request scan cost a quarter of an order's
client time). These tests drive the real alpaca-py client against the wire-level
fake and a small recording HTTP proxy on 127.0.0.1: an order goes through the
proxy the environment names, straight to the venue when ``NO_PROXY`` covers it,
and a variable changed after start-up is not picked up half-way through a run.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from aiohttp import web

from brokers.alpaca.rest import AlpacaRest
from brokers.base import OrderRequest, Side
from tests.brokers.harness import alpaca_settings
from tests.fakes.alpaca import FakeAlpaca

_PROXY_VARIABLES = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy",
                    "NO_PROXY", "no_proxy")


class _RecordingProxy:
    """An HTTP proxy that answers every request itself (a clock) and records the absolute URL it was asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._answer)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"

    async def _answer(self, request: web.Request) -> web.Response:
        self.asked.append(f"{request.method} {request.url}")
        return web.json_response({"timestamp": "2026-01-02T15:00:00Z", "is_open": True,
                                  "next_open": "2026-01-03T14:30:00Z", "next_close": "2026-01-02T21:00:00Z"})

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def fake() -> AsyncIterator[FakeAlpaca]:
    async with FakeAlpaca(start_time=datetime(2026, 1, 2, 15, 0, tzinfo=UTC)) as venue:
        yield venue


@pytest.fixture
async def proxy(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[_RecordingProxy]:
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    recording = _RecordingProxy()
    await recording.start()
    try:
        yield recording
    finally:
        await recording.close()


async def test_the_proxy_named_by_the_environment_carries_the_requests(
        fake: FakeAlpaca, proxy: _RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    rest = AlpacaRest(alpaca_settings(fake))
    try:
        clock = await rest.clock()
    finally:
        rest.close()
    assert clock["is_open"] is True
    assert proxy.asked == [f"GET {fake.base_url}/v2/clock"], "the request went to the proxy, for the venue's URL"
    assert not any(r.path == "/v2/clock" for r in fake.records.requests), "nothing reached the venue directly"


async def test_no_proxy_sends_an_order_straight_to_the_venue_and_a_later_change_is_not_picked_up(
        fake: FakeAlpaca, proxy: _RecordingProxy, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    rest = AlpacaRest(alpaca_settings(fake))
    try:
        await fake.publish_bar("SPY", datetime(2026, 1, 2, 15, 0, tzinfo=UTC), 100, 101, 99, 100.5, 1000)
        answer = await rest.submit_order("env-1", OrderRequest("SPY", Side.BUY, Decimal(3)))
        monkeypatch.delenv("NO_PROXY")  # read at start: a running daemon's routing does not change under it
        clock = await rest.clock()
    finally:
        rest.close()
    assert answer["client_order_id"] == "env-1" and fake.order("env-1").qty == Decimal(3)
    assert fake.records.client_order_ids == ["env-1"]
    assert "is_open" in clock and any(r.path == "/v2/clock" for r in fake.records.requests)
    assert proxy.asked == [], "NO_PROXY covered the venue: the proxy saw nothing"
