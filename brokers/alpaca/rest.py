"""Alpaca's REST API through alpaca-py's clients, off the event loop and inside the venue's rate limit.

alpaca-py's ``RESTClient`` is synchronous (``requests``) and, left as it is,
(a) waits forever for an answer (no timeout on its session), and (b) retries
429 and 504 itself with a blocking ``time.sleep`` — a 504 on ``POST /orders``
would *re-send the order*. So each client gets a session with a timeout and
its own retries switched off (``_retry = 0``): 429s are handled by our
``Offloader`` (shared pause until the venue's reset, then the same request
again, which the venue never processed; never an order: its client id is
sent once), and nothing else is retried here.

Orders are posted as JSON with quantities and prices as *strings*
(``client.post("/orders", ...)``): alpaca-py's request models hold them as
floats, and money is exact here. Every failure leaves as ``AlpacaError`` (a
``BrokerError``) carrying the HTTP status and Alpaca's error code, with a
one-line message that names the problem (bad key, wrong endpoint, refused).
"""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from typing import Any

import requests
from alpaca.common.exceptions import APIError
from alpaca.common.rest import RESTClient
from alpaca.data.historical.crypto import CryptoHistoricalDataClient
from alpaca.data.historical.stock import StockHistoricalDataClient
from alpaca.trading.client import TradingClient

from brokers.base import OrderRequest, OrderType
from brokers.errors import BrokerError
from brokers.live import Offloader, RateLimited, RateLimiter, SubmitFailure, reset_delay

from .settings import AlpacaSettings

__all__ = ["DUPLICATE_CLIENT_ORDER_ID", "AlpacaError", "AlpacaRest", "classify_submit", "throttle_delay"]

DUPLICATE_CLIENT_ORDER_ID = 40010001  # HTTP 422: "client_order_id must be unique"
_MAX_PAGE = 10_000


class AlpacaError(BrokerError):
    """A REST call failed. ``status`` is the HTTP status (None: no answer at all), ``code`` Alpaca's error code."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None,
                 venue_message: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.venue_message = venue_message


class _TimeoutSession(requests.Session):
    """A ``requests.Session`` whose requests give up after ``timeout`` seconds unless told otherwise, with the
    environment's HTTP settings read once.

    ``requests`` (``trust_env``) scans the environment for proxy and CA-bundle variables and reads ``~/.netrc``
    on every request: about 150 µs of CPU per call here, a quarter of the client's own cost of an order
    (``bench/broker_latency.py``). A daemon's environment does not change while it runs, so the same settings
    are resolved once, for the one origin this session talks to, and kept on the session.
    """

    def __init__(self, timeout: float, origin: str) -> None:
        super().__init__()
        self._timeout = timeout
        env = self.merge_environment_settings(origin, {}, None, None, None)
        self.proxies = env["proxies"]  # empty when none is set or NO_PROXY covers the origin
        self.verify = env["verify"]  # REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE, else certifi's bundle
        self.auth = requests.utils.get_netrc_auth(origin)
        self.trust_env = False

    def request(self, method: str | bytes, url: str | bytes, *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self._timeout)
        return super().request(method, url, *args, **kwargs)


def _tame(client: RESTClient, timeout: float) -> RESTClient:
    client._session = _TimeoutSession(timeout, client._base_url)  # alpaca-py sets no timeout at all
    client._retry = 0  # its own 429/504 retries sleep in the thread and would re-send an order after a 504
    return client


def throttle_delay(exc: BaseException) -> float | None:
    """Seconds to wait when ``exc`` is a 429 (from the response's reset headers), else None."""
    if isinstance(exc, APIError) and exc.status_code == 429:
        response = exc.response
        return reset_delay(dict(response.headers) if response is not None else None)
    return None


def _venue_text(exc: APIError) -> tuple[int | None, str]:
    try:
        body = json.loads(str(exc))
    except ValueError:
        return None, str(exc)[:200]
    if not isinstance(body, dict):
        return None, str(body)[:200]
    code = body.get("code")
    return (code if isinstance(code, int) else None), str(body.get("message", ""))[:200]


def _translate(exc: BaseException, what: str, origin: str) -> AlpacaError:
    """One clear line for the operator, whatever went wrong."""
    if isinstance(exc, AlpacaError):
        return exc
    if isinstance(exc, APIError):
        status = exc.status_code
        code, text = _venue_text(exc)
        # a 403 refuses the key, except on an order, where it also means "insufficient buying power" & co.
        refused_key = status == 401 or (status == 403 and (
            code is None or text.strip().lower() == "forbidden" or not what.startswith("submit")))
        if refused_key:
            hint = (f"the key was refused (HTTP {status}): check TRADECTL_ALPACA__KEY_ID / "
                    "TRADECTL_ALPACA__SECRET_KEY and that paper keys go with broker.alpaca.paper: true")
            return AlpacaError(f"{what}: {hint}", status=status, code=code, venue_message=text)
        if status == 404:
            return AlpacaError(f"{what}: {origin} answered 404 ({text or 'not found'}): wrong endpoint?",
                               status=status, code=code, venue_message=text)
        return AlpacaError(f"{what}: HTTP {status}{f' code {code}' if code else ''}: {text}", status=status,
                           code=code, venue_message=text)
    if isinstance(exc, requests.exceptions.ConnectionError) and "refused" in str(exc).lower():
        return AlpacaError(f"{what}: connection to {origin} refused")
    if isinstance(exc, requests.exceptions.Timeout):
        return AlpacaError(f"{what}: {origin} did not answer in time ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.RequestException):
        return AlpacaError(f"{what}: cannot reach {origin}: {type(exc).__name__}: {exc}")
    if isinstance(exc, RateLimited):
        return AlpacaError(f"{what}: {exc}", status=429)
    if isinstance(exc, ValueError):  # a body that is not JSON: not an Alpaca API at this address
        return AlpacaError(f"{what}: {origin} did not answer like Alpaca's API ({exc}): wrong endpoint?")
    return AlpacaError(f"{what}: {type(exc).__name__}: {exc}")


def classify_submit(exc: BaseException) -> tuple[SubmitFailure, str]:
    """Whether a failed ``POST /orders`` certainly did not place the order, placed it before, or may have."""
    if isinstance(exc, AlpacaError):
        status, code = exc.status, exc.code
        reason = exc.venue_message or str(exc)
        if status == 422 and code == DUPLICATE_CLIENT_ORDER_ID:
            return SubmitFailure.DUPLICATE, reason
        if status == 429:  # every attempt was refused before processing: nothing was placed
            return SubmitFailure.REJECTED, f"rate limited: {reason}"
        if status is not None and 400 <= status < 500 and status != 408:
            return SubmitFailure.REJECTED, reason
        return SubmitFailure.AMBIGUOUS, str(exc)
    return SubmitFailure.AMBIGUOUS, repr(exc)


class AlpacaRest:
    """The REST calls the adapter makes; every one goes through the rate limiter and a worker thread."""

    def __init__(self, settings: AlpacaSettings) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.requests_per_minute, 60.0, name="alpaca")
        self.offloader = Offloader(self.limiter, max_workers=settings.max_workers, throttled=throttle_delay,
                                   name="alpaca")
        timeout = settings.request_timeout_seconds
        self.trading = _tame(TradingClient(settings.key_id, settings.secret_key, paper=settings.paper, raw_data=True,
                                           url_override=settings.trading_url), timeout)
        # stocks: /v2/stocks/bars; crypto: /v1beta3/crypto/{loc}/bars (the client carries the API version)
        data_client = CryptoHistoricalDataClient if settings.is_crypto else StockHistoricalDataClient
        self.data = _tame(data_client(settings.key_id, settings.secret_key, raw_data=True,
                                      url_override=settings.data_url), timeout)

    async def _call(self, what: str, origin: str, fn: Any, *args: Any, resend_throttled: bool = True) -> Any:
        try:
            return await self.offloader.call(fn, *args, resend_throttled=resend_throttled)
        except Exception as exc:
            raise _translate(exc, what, origin) from exc

    async def _trading(self, what: str, method: str, path: str, data: Any = None) -> Any:
        return await self._call(what, self.settings.rest_origin, getattr(self.trading, method), path, data)

    # ------------------------------------------------------------------ orders
    async def submit_order(self, client_order_id: str, request: OrderRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "symbol": request.symbol,
            "qty": _plain(request.quantity),
            "side": request.side.value,
            "type": request.order_type.value,
            "time_in_force": request.time_in_force.value,
            "client_order_id": client_order_id,
        }
        if request.order_type is OrderType.LIMIT and request.limit_price is not None:
            body["limit_price"] = _plain(request.limit_price)
        # sent once: a 429 pauses every caller and rejects this order (the venue did not process it)
        return await self._call(f"submit {client_order_id}", self.settings.rest_origin, self.trading.post, "/orders",
                                body, resend_throttled=False)

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        try:
            return await self._trading(f"order {client_order_id}", "get", "/orders:by_client_order_id",
                                       {"client_order_id": client_order_id})
        except AlpacaError as exc:
            if exc.status == 404:
                return None
            raise

    async def open_orders(self) -> list[dict[str, Any]]:
        return await self._trading("open orders", "get", "/orders", {"status": "open", "limit": 500,
                                                                      "direction": "asc"})

    async def cancel_order(self, order_id: str) -> None:
        await self._trading(f"cancel {order_id}", "delete", f"/orders/{order_id}")

    async def fill_activities(self, order_id: str, after: str | None = None) -> list[dict[str, Any]]:
        """Every FILL activity of one order, oldest first (paged by ``page_token``)."""
        found: list[dict[str, Any]] = []
        params: dict[str, Any] = {"direction": "asc", "page_size": 100}
        if after:
            params["after"] = after
        while True:
            page = await self._trading("fill activities", "get", "/account/activities/FILL", dict(params))
            if not isinstance(page, list):
                raise AlpacaError(f"fill activities: unexpected answer {type(page).__name__}")
            found += [a for a in page if a.get("order_id") == order_id]
            if len(page) < params["page_size"]:
                return found
            params["page_token"] = page[-1].get("id")

    # ------------------------------------------------------------------ account
    async def account(self) -> dict[str, Any]:
        return await self._trading("account", "get", "/account")

    async def positions(self) -> list[dict[str, Any]]:
        return await self._trading("positions", "get", "/positions")

    async def clock(self) -> dict[str, Any]:
        return await self._trading("clock", "get", "/clock")

    async def calendar(self, start: date, end: date) -> list[dict[str, Any]]:
        return await self._trading("calendar", "get", "/calendar", {"start": start.isoformat(),
                                                                    "end": end.isoformat()})

    # ------------------------------------------------------------------ market data
    async def bars(self, symbol: str, start: str, end: str) -> list[dict[str, Any]]:
        """Raw historical bars of one symbol opening in [start, end] (RFC 3339), every page, oldest first.

        Stocks and crypto share the answer's shape (``{"bars": {sym: [...]}, "next_page_token"}``).
        """
        s = self.settings
        params: dict[str, Any] = {"symbols": symbol, "timeframe": s.timeframe, "start": start, "end": end,
                                  "limit": _MAX_PAGE, "sort": "asc"}
        if not s.is_crypto:  # a stock feed and split adjustment; crypto has neither
            params.update(feed=s.feed, adjustment="raw")
        found: list[dict[str, Any]] = []
        while True:
            page = await self._call("historical bars", s.data_origin, self.data.get, s.bars_path, dict(params))
            bars = (page or {}).get("bars") or {}
            found += bars.get(symbol, []) if isinstance(bars, dict) else []
            token = (page or {}).get("next_page_token")
            if not token:
                return found
            params["page_token"] = token

    def close(self) -> None:
        self.offloader.close()
        for client in (self.trading, self.data):
            client._session.close()


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")
