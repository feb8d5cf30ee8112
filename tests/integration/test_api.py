"""ControlApi on a real 127.0.0.1 socket, driven by a real aiohttp client."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

import aiohttp
import pytest

from brokers.errors import RiskStateError, TradectlError
from daemon.api import ControlApi, fetch_json

TOKEN = "s3cret-token"


class _State(Enum):
    ACTIVE = "active"


class _Calls:
    """Records which actions the server actually ran."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def action(self, name: str, result: dict[str, Any]) -> Callable[[], Awaitable[dict[str, Any]]]:
        async def run() -> dict[str, Any]:
            self.names.append(name)
            return result

        return run


def _healthy() -> tuple[bool, str]:
    return True, ""


def _status() -> dict[str, Any]:
    return {"state": "ACTIVE"}


async def _request(
    api: ControlApi, method: str, path: str, token: str | None = None
) -> tuple[int, dict[str, Any], Mapping[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, api.url + path, headers=headers) as response,
    ):
        assert response.content_type == "application/json"
        return response.status, await response.json(), response.headers


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[ControlApi]]]:
    started: list[ControlApi] = []

    async def start(**kwargs: Any) -> ControlApi:
        kwargs.setdefault("status", _status)
        kwargs.setdefault("health", _healthy)
        api = ControlApi(port=0, **kwargs)
        await api.start()
        started.append(api)
        return api

    yield start
    for api in started:
        await api.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_binds_loopback_by_default() -> None:
    api = ControlApi(_status, _healthy)
    assert (api.host, api.port) == ("127.0.0.1", 8787)


async def test_ephemeral_port_is_exposed_after_start(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    api = await serve()
    assert api.port > 0
    assert api.url == f"http://127.0.0.1:{api.port}"


async def test_healthz_ok(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    api = await serve()
    status, body, _ = await _request(api, "GET", "/healthz")
    assert (status, body) == (200, {"ok": True})


async def test_healthz_unhealthy_is_503_with_reason(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    api = await serve(health=lambda: (False, "feed stale for 312s"))
    status, body, _ = await _request(api, "GET", "/healthz")
    assert (status, body) == (503, {"ok": False, "reason": "feed stale for 312s"})


async def test_readyz_uses_its_own_provider_or_falls_back_to_health(
    serve: Callable[..., Awaitable[ControlApi]],
) -> None:
    api = await serve(ready=lambda: (False, "reconciling"))
    assert (await _request(api, "GET", "/readyz"))[:2] == (503, {"ok": False, "reason": "reconciling"})
    assert (await _request(api, "GET", "/healthz"))[:2] == (200, {"ok": True})

    fallback = await serve(health=lambda: (False, "broker disconnected"))
    assert (await _request(fallback, "GET", "/readyz"))[0] == 503


async def test_status_serialises_decimals_datetimes_and_non_finite_floats(
    serve: Callable[..., Awaitable[ControlApi]],
) -> None:
    doc = {
        "state": _State.ACTIVE,
        "equity": Decimal("100234.5600"),
        "feed": {"last_bar_ts": datetime(2017, 3, 1, 10, 0, tzinfo=UTC), "lag_seconds": 0.25},
        "positions": [{"symbol": "EURUSD", "quantity": Decimal("10000"), "average_price": Decimal("1.05123")}],
        "loop_lag_ms": {"p99": float("nan")},
    }
    api = await serve(status=lambda: doc)
    status, body, _ = await _request(api, "GET", "/status")
    assert status == 200
    assert body == {
        "state": "active",
        "equity": "100234.5600",
        "feed": {"last_bar_ts": "2017-03-01T10:00:00+00:00", "lag_seconds": 0.25},
        "positions": [{"symbol": "EURUSD", "quantity": "10000", "average_price": "1.05123"}],
        "loop_lag_ms": {"p99": None},
    }


async def test_async_status_provider_is_awaited(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    async def status() -> dict[str, Any]:
        return {"state": "PAUSED"}

    api = await serve(status=status)
    assert (await _request(api, "GET", "/status"))[1] == {"state": "PAUSED"}


async def test_pause_without_configured_token_is_forbidden(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    calls = _Calls()
    api = await serve(actions={"pause": calls.action("pause", {"state": "PAUSED"})}, token=None)
    for token in (None, "anything"):
        status, body, _ = await _request(api, "POST", "/pause", token=token)
        assert status == 403
        assert "no API token is configured" in body["error"]
    assert calls.names == []


async def test_pause_with_wrong_or_missing_token_is_unauthorized(
    serve: Callable[..., Awaitable[ControlApi]],
) -> None:
    calls = _Calls()
    api = await serve(actions={"pause": calls.action("pause", {"state": "PAUSED"})}, token=TOKEN)
    for token in (None, "wrong", TOKEN + "x", ""):
        status, body, headers = await _request(api, "POST", "/pause", token=token)
        assert status == 401, token
        assert "token" in body["error"]
        assert headers["WWW-Authenticate"].startswith("Bearer")
    async with (
        aiohttp.ClientSession() as session,
        session.post(api.url + "/pause", headers={"Authorization": f"Basic {TOKEN}"}) as response,
    ):
        assert response.status == 401
    assert calls.names == []


async def test_pause_with_right_token_runs_the_action(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    calls = _Calls()
    api = await serve(
        actions={
            "pause": calls.action("pause", {"state": "PAUSED", "since": datetime(2024, 5, 1, tzinfo=UTC)}),
            "flatten": calls.action("flatten", {"orders": 2}),
        },
        token=TOKEN,
    )
    status, body, _ = await _request(api, "POST", "/pause", token=TOKEN)
    assert (status, body) == (200, {"state": "PAUSED", "since": "2024-05-01T00:00:00+00:00"})
    assert await fetch_json("127.0.0.1", api.port, "/flatten", method="POST", token=TOKEN) == {"orders": 2}
    assert calls.names == ["pause", "flatten"]


async def test_unknown_action_is_404(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    api = await serve(actions={}, token=TOKEN)
    status, body, _ = await _request(api, "POST", "/resume", token=TOKEN)
    assert status == 404
    assert "unknown action 'resume'" in body["error"]


async def test_refused_action_is_409_with_the_reason(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    async def resume() -> dict[str, Any]:
        raise RiskStateError("cannot resume: trading is HALTED by the drawdown layer")

    api = await serve(actions={"resume": resume}, token=TOKEN)
    status, body, _ = await _request(api, "POST", "/resume", token=TOKEN)
    assert (status, body) == (409, {"error": "cannot resume: trading is HALTED by the drawdown layer"})


async def test_failing_provider_is_500_json_and_server_keeps_serving(
    serve: Callable[..., Awaitable[ControlApi]],
) -> None:
    broken = {"status": True}

    def status() -> dict[str, Any]:
        if broken["status"]:
            raise KeyError("portfolio")
        return {"state": "ACTIVE"}

    def health() -> tuple[bool, str]:
        raise RuntimeError("health check crashed")

    async def flatten() -> dict[str, Any]:
        raise ZeroDivisionError("no prices")

    api = await serve(status=status, health=health, actions={"flatten": flatten}, token=TOKEN)
    status_code, body, _ = await _request(api, "GET", "/status")
    assert status_code == 500
    assert "KeyError" in body["error"]
    assert (await _request(api, "GET", "/healthz"))[:2] == (
        500,
        {"error": "RuntimeError: health check crashed"},
    )
    assert (await _request(api, "POST", "/flatten", token=TOKEN))[0] == 500

    broken["status"] = False
    assert (await _request(api, "GET", "/status"))[:2] == (200, {"state": "ACTIVE"})


async def test_unknown_route_and_wrong_method_answer_json(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    api = await serve()
    assert (await _request(api, "GET", "/no/such/page"))[0] == 404
    status, _, headers = await _request(api, "GET", "/pause")
    assert status == 405
    assert "POST" in headers["Allow"]


async def test_fetch_json_reads_a_running_daemon(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    api = await serve(status=lambda: {"equity": Decimal("1.50")})
    assert await fetch_json("127.0.0.1", api.port, "/status") == {"equity": "1.50"}
    assert await fetch_json("127.0.0.1", api.port, "healthz") == {"ok": True}


async def test_fetch_json_turns_refusals_into_tradectl_errors(
    serve: Callable[..., Awaitable[ControlApi]],
) -> None:
    calls = _Calls()
    api = await serve(actions={"pause": calls.action("pause", {})}, token=TOKEN)
    with pytest.raises(TradectlError, match=r"refused POST /pause: 401 missing or wrong bearer token"):
        await fetch_json("127.0.0.1", api.port, "/pause", method="POST", token="wrong")
    assert calls.names == []


async def test_fetch_json_against_closed_port_says_no_daemon() -> None:
    port = _free_port()
    with pytest.raises(TradectlError) as info:
        await fetch_json("127.0.0.1", port, "/status")
    message = str(info.value)
    assert message.startswith(f"no tradectl daemon answering on http://127.0.0.1:{port} (")
    assert message.endswith("start one with `tradectl run`")


async def test_stopped_server_is_unreachable(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    api = await serve()
    await api.stop()
    await api.stop()  # idempotent
    with pytest.raises(TradectlError, match="no tradectl daemon answering"):
        await fetch_json("127.0.0.1", api.port, "/healthz")


async def test_port_in_use_is_a_clear_error(serve: Callable[..., Awaitable[ControlApi]]) -> None:
    first = await serve()
    second = ControlApi(_status, _healthy, port=first.port)
    with pytest.raises(TradectlError, match=f"cannot listen on 127.0.0.1:{first.port}"):
        await second.start()


async def test_context_manager_starts_and_stops() -> None:
    async with ControlApi(_status, _healthy, port=0) as api:
        assert await fetch_json("127.0.0.1", api.port, "/status") == {"state": "ACTIVE"}
    with pytest.raises(TradectlError):
        await fetch_json("127.0.0.1", api.port, "/status")
