"""The daemon's HTTP control surface, and the client the CLI talks to it with.

The API knows nothing about trading: the wiring hands it callables (status,
health, readiness, actions by name) so it can be tested against a real
socket without a pipeline behind it. Anything that changes state requires a
bearer token; without a configured token those endpoints are refused, never
open.
"""

from __future__ import annotations

import datetime as dt
import hmac
import inspect
import json
import math
from collections.abc import Awaitable, Callable, Mapping, Sequence
from decimal import Decimal
from enum import Enum
from types import TracebackType
from typing import Any, Self

import aiohttp
import structlog
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from brokers.errors import TradectlError

__all__ = ["Action", "ControlApi", "fetch_json"]

_log = structlog.get_logger(__name__)

Action = Callable[[], Awaitable[dict[str, Any]]]
StatusProvider = Callable[[], dict[str, Any] | Awaitable[dict[str, Any]]]
HealthProvider = Callable[[], tuple[bool, str] | Awaitable[tuple[bool, str]]]

# How long stop() waits for requests in flight; a daemon shutting down on
# SIGTERM must not hang on a slow client for aiohttp's default 60 s.
_SHUTDOWN_TIMEOUT = 5.0


def _jsonable(value: Any) -> Any:
    """Make a provider's document strict JSON.

    Decimals become strings so no precision is lost, datetimes ISO 8601, and
    NaN/inf become null because browsers' JSON.parse rejects them.
    """
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Enum):
        return _jsonable(value.value)
    return str(value)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    body = json.dumps(_jsonable(data), allow_nan=False)
    return web.Response(text=body, status=status, content_type="application/json", headers=headers)


async def _call(provider: Callable[[], Any]) -> Any:
    """Providers may be plain functions or coroutines; the wiring picks what is natural."""
    result = provider()
    if inspect.isawaitable(result):
        result = await result
    return result


class _StructlogAccessLog(AbstractAccessLogger):
    """Access lines at debug through structlog: health probes every few seconds
    would otherwise drown the log at info."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        _log.debug(
            "api request",
            method=request.method,
            path=request.path,
            status=response.status,
            ms=round(time * 1000, 2),
            peer=request.remote,
        )


@web.middleware
async def _errors_as_json(request: web.Request, handler: Callable[[web.Request], Awaitable[Any]]) -> Any:
    """Every answer is JSON, and a failing provider is a 500, never a dead daemon."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        return _json({"error": exc.reason}, status=exc.status, headers=headers)
    except Exception as exc:
        _log.exception("api handler failed", method=request.method, path=request.path)
        return _json({"error": f"{type(exc).__name__}: {exc}"}, status=500)


class ControlApi:
    """aiohttp server exposing health, status and the state-changing actions.

    ``port=0`` binds an ephemeral port; read :attr:`port` after :meth:`start`.
    ``ready`` defaults to ``health``: a daemon without a separate readiness
    notion is ready exactly when it is healthy.
    """

    def __init__(
        self,
        status: StatusProvider,
        health: HealthProvider,
        actions: Mapping[str, Action] | None = None,
        token: str | None = None,
        host: str = "127.0.0.1",
        port: int = 8787,
        *,
        ready: HealthProvider | None = None,
        documents: Mapping[str, StatusProvider] | None = None,
        routes: Sequence[web.RouteDef] = (),
    ) -> None:
        self._status = status
        # more read-only JSON documents, each served at GET /<name> (e.g. "risk")
        self._documents: dict[str, StatusProvider] = dict(documents or {})
        # more read-only endpoints built elsewhere (metrics, the dashboard), mounted before the actions
        self._routes = tuple(routes)
        self._health = health
        self._ready = ready if ready is not None else health
        self._actions: dict[str, Action] = dict(actions or {})
        self._token = token.encode() if token else None
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        """The bound port once started (the real one when constructed with 0)."""
        return self._port

    @property
    def url(self) -> str:
        return f"http://{_url_host(self.host)}:{self._port}"

    def _app(self) -> web.Application:
        app = web.Application(middlewares=[_errors_as_json])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status_doc)
        for name, provider in self._documents.items():
            app.router.add_get(f"/{name}", self._document(provider))
        app.router.add_routes(self._routes)
        app.router.add_post("/{action:[a-z_]+(?:/[a-z_]+)?}", self._action)  # /pause, /models/promote
        return app

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("ControlApi already started")
        # handler_cancellation stays off so a client hanging up mid-/flatten
        # cannot cancel the flatten half-way through.
        runner = web.AppRunner(
            self._app(),
            access_log_class=_StructlogAccessLog,
            handler_cancellation=False,
            shutdown_timeout=_SHUTDOWN_TIMEOUT,
        )
        await runner.setup()
        try:
            await web.TCPSite(runner, self.host, self._port).start()
        except OSError as exc:
            await runner.cleanup()
            raise TradectlError(
                f"control API cannot listen on {self.host}:{self._port} ({exc.strerror or exc}); "
                "choose another api.port or stop the process holding it"
            ) from exc
        self._runner = runner
        self._port = int(runner.addresses[0][1])
        _log.info("control api listening", url=self.url, auth=self._token is not None)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            _log.info("control api stopped")

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # -- handlers ---------------------------------------------------------

    async def _healthz(self, _request: web.Request) -> web.Response:
        return await self._probe(self._health)

    async def _readyz(self, _request: web.Request) -> web.Response:
        return await self._probe(self._ready)

    @staticmethod
    async def _probe(provider: HealthProvider) -> web.Response:
        ok, reason = await _call(provider)
        if ok:
            return _json({"ok": True})
        return _json({"ok": False, "reason": reason}, status=503)

    async def _status_doc(self, _request: web.Request) -> web.Response:
        return _json(await _call(self._status))

    @staticmethod
    def _document(provider: StatusProvider) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(_request: web.Request) -> web.Response:
            return _json(await _call(provider))

        return handler

    async def _action(self, request: web.Request) -> web.Response:
        refusal = self._refuse(request)
        if refusal is not None:
            return refusal
        name = request.match_info["action"]
        action = self._actions.get(name)
        if action is None:
            known = ", ".join(sorted(self._actions)) or "none"
            return _json({"error": f"unknown action {name!r}; available: {known}"}, status=404)
        _log.info("api action", action=name, peer=request.remote)
        try:
            result = await action()
        except TradectlError as exc:
            # A refused transition (e.g. resume while HALTED) is the caller's
            # conflict with the daemon's state, not a server fault.
            _log.warning("api action refused", action=name, reason=str(exc))
            return _json({"error": str(exc)}, status=409)
        return _json(result)

    def _refuse(self, request: web.Request) -> web.Response | None:
        """None when the request carries the configured bearer token."""
        if self._token is None:
            return _json(
                {
                    "error": "no API token is configured, so state-changing endpoints are disabled; "
                    "set TRADECTL_API__TOKEN and restart the daemon"
                },
                status=403,
            )
        scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
        given = presented.strip().encode("utf-8", "surrogateescape")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given, self._token):
            _log.warning("api auth failed", path=request.path, peer=request.remote)
            return _json(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="tradectl"'},
            )
        return None


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


async def fetch_json(
    host: str,
    port: int,
    path: str,
    *,
    method: str = "GET",
    token: str | None = None,
    timeout: float = 3.0,  # noqa: ASYNC109 - the CLI's contract; handed to aiohttp's ClientTimeout
) -> dict[str, Any]:
    """Ask a running daemon; every failure is a TradectlError the CLI can print as is.

    An answer of 400 or above raises with the daemon's own error message, so
    ``tradectl pause`` with a wrong token says so instead of printing JSON.
    """
    base = f"http://{_url_host(host)}:{port}"
    url = base + (path if path.startswith("/") else "/" + path)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.request(method, url, headers=headers) as response,
        ):
            status = response.status
            text = await response.text()
    except (aiohttp.ClientConnectionError, OSError, TimeoutError) as exc:
        reason = f"timed out after {timeout:g}s" if isinstance(exc, TimeoutError) else _reason(exc)
        raise TradectlError(
            f"no tradectl daemon answering on {base} ({reason}); start one with `tradectl run`"
        ) from exc
    try:
        body = json.loads(text)
    except ValueError:
        raise TradectlError(
            f"{base} answered {method} {path} with {status} and a non-JSON body; is it a tradectl daemon?"
        ) from None
    if not isinstance(body, dict):
        raise TradectlError(f"{base} answered {method} {path} with JSON that is not an object")
    if status >= 400:
        detail = body.get("error") or body.get("reason") or text
        raise TradectlError(f"daemon refused {method} {path}: {status} {detail}")
    return body


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.strerror or str(exc.os_error)
    return str(exc) or type(exc).__name__
