"""OANDA's v20 REST API through oandapyV20, off the event loop and inside the rate limit.

oandapyV20 is synchronous (``requests``) and its ``API`` keeps one
``requests.Session``, which is not thread-safe: each worker thread gets its
own ``API`` (``threading.local``). Hosts are looked up per request in the
library's ``TRADING_ENVIRONMENTS``; the adapter registers its own entry (the
practice or live hosts, or a test's overrides) and names it. Every request has
a timeout (the library sets none) and the library retries nothing, so an
order is never re-sent from here; 429s are handled by our ``Offloader``
(shared pause, then the same read again; never an order).

Every failure leaves as ``OandaError`` (a ``BrokerError``) with the HTTP
status, OANDA's ``errorCode`` or ``rejectReason``, and one line naming the
problem (a refused token, a wrong account, a refused connection).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import oandapyV20.endpoints.accounts as accounts
import oandapyV20.endpoints.instruments as instruments
import oandapyV20.endpoints.orders as orders
import oandapyV20.endpoints.positions as positions
import oandapyV20.endpoints.transactions as transactions
import requests
from oandapyV20 import API
from oandapyV20.exceptions import V20Error
from oandapyV20.oandapyV20 import TRADING_ENVIRONMENTS

from brokers.base import OrderRequest, OrderType, TimeInForce
from brokers.errors import BrokerError
from brokers.live import Offloader, RateLimited, RateLimiter, SubmitFailure, reset_delay
from brokers.live.wire import WireError, epoch_seconds

from .convert import reason_code
from .settings import PRICE_COMPONENTS, OandaSettings

__all__ = ["DUPLICATE_CLIENT_ID", "OandaError", "OandaRest", "classify_submit", "make_api", "throttle_delay"]

DUPLICATE_CLIENT_ID = "CLIENT_ORDER_ID_ALREADY_EXISTS"
_MAX_CANDLES = 5000  # OANDA's cap on ``count``
_TIF = {TimeInForce.GTC: "GTC", TimeInForce.DAY: "GFD", TimeInForce.IOC: "IOC"}
# oandapyV20 logs every request at INFO and every 4xx (a routine 404 look-up, a 429) at ERROR with the response
# body; the daemon turns any ERROR record into an operator alert. Each failure is ours to report, once, as an
# ``OandaError`` line, so the library's own records are dropped below CRITICAL.
logging.getLogger("oandapyV20").setLevel(logging.CRITICAL)


class OandaError(BrokerError):
    """A REST call failed. ``status``: HTTP status (None: no answer); ``code``: OANDA's reject reason or error code."""

    def __init__(self, message: str, *, status: int | None = None, code: str | None = None,
                 venue_message: str = "", body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.venue_message = venue_message
        self.body = body or {}


def register_environment(settings: OandaSettings) -> str:
    """Add the adapter's hosts to oandapyV20's table (it looks them up at request time); the entry's name."""
    TRADING_ENVIRONMENTS[settings.environment] = {"api": settings.api_origin, "stream": settings.stream_origin}
    return settings.environment


def make_api(settings: OandaSettings, timeout: float) -> API:
    """One oandapyV20 client (one session: use it from one thread only)."""
    return API(access_token=settings.token, environment=register_environment(settings),
               request_params={"timeout": timeout})


def throttle_delay(exc: BaseException) -> float | None:
    """Seconds to wait when ``exc`` is a 429 (OANDA sends no reset header: one second), else None."""
    if isinstance(exc, V20Error) and exc.code == 429:
        return reset_delay(None)
    return None


def _body(exc: V20Error) -> dict[str, Any]:
    try:
        body = json.loads(exc.msg)
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}


def _reject_reason(body: dict[str, Any]) -> str | None:
    for key, value in body.items():
        if key.endswith("RejectTransaction") and isinstance(value, dict) and value.get("rejectReason"):
            return str(value["rejectReason"])
    code = body.get("errorCode")
    return str(code) if code else None


def _translate(exc: BaseException, what: str, origin: str) -> OandaError:
    """One clear line for the operator, whatever went wrong."""
    if isinstance(exc, OandaError):
        return exc
    if isinstance(exc, V20Error):
        status, body = exc.code, _body(exc)
        code = _reject_reason(body)
        text = str(body.get("errorMessage") or exc.msg or "")[:200]
        if status == 401:
            return OandaError(f"{what}: the token was refused (HTTP 401): check TRADECTL_OANDA__TOKEN and that a "
                              "practice token goes with broker.oanda.practice: true", status=status, code=code,
                              venue_message=text, body=body)
        if status == 403 and not what.startswith("submit"):
            return OandaError(f"{what}: forbidden (HTTP 403: {text}): is broker.oanda.account_id this token's "
                              "account?", status=status, code=code, venue_message=text, body=body)
        return OandaError(f"{what}: HTTP {status}{f' {code}' if code else ''}: {text}", status=status, code=code,
                          venue_message=text, body=body)
    if isinstance(exc, requests.exceptions.ConnectionError) and "refused" in str(exc).lower():
        return OandaError(f"{what}: connection to {origin} refused")
    if isinstance(exc, requests.exceptions.Timeout):
        return OandaError(f"{what}: {origin} did not answer in time ({type(exc).__name__})")
    if isinstance(exc, requests.exceptions.RequestException):
        return OandaError(f"{what}: cannot reach {origin}: {type(exc).__name__}: {exc}")
    if isinstance(exc, RateLimited):
        return OandaError(f"{what}: {exc}", status=429)
    if isinstance(exc, ValueError):  # not JSON, or oandapyV20's "unexpected status" check
        return OandaError(f"{what}: {origin} did not answer like OANDA's v20 API ({exc})")
    return OandaError(f"{what}: {type(exc).__name__}: {exc}")


def classify_submit(exc: BaseException) -> tuple[SubmitFailure, str]:
    """Whether a failed order create certainly did not place the order, placed it before, or may have.

    A 201 whose answer cancels the order at once (``orderCancelTransaction``,
    no fill) arrives here as an ``OandaError`` with status 201: refused.

    The reason of a definite refusal starts with our reason code
    (``insufficient_margin: OANDA INSUFFICIENT_MARGIN: ...``).
    """
    if isinstance(exc, OandaError):
        status, code = exc.status, exc.code
        if status == 201:  # answered, and the order cancelled in the same answer (no margin, no price)
            return SubmitFailure.REJECTED, f"{reason_code(code)}: OANDA {code}: {exc.venue_message}"
        if code == DUPLICATE_CLIENT_ID:
            return SubmitFailure.DUPLICATE, f"{reason_code(code)}: OANDA {code}"
        if status == 429:  # refused before processing: nothing was placed
            return SubmitFailure.REJECTED, f"rate_limited: {exc.venue_message or exc}"
        if status is not None and 400 <= status < 500 and status != 408:
            return SubmitFailure.REJECTED, f"{reason_code(code)}: OANDA {code or status}: {exc.venue_message}"
        return SubmitFailure.AMBIGUOUS, str(exc)
    return SubmitFailure.AMBIGUOUS, repr(exc)


def _plain(value: Decimal) -> str:
    return format(value.normalize(), "f")


def order_body(client_order_id: str, instrument: str, request: OrderRequest) -> dict[str, Any]:
    """The v20 order request: units signed by side, our client id in ``clientExtensions.id``."""
    order: dict[str, Any] = {
        "instrument": instrument,
        "units": _plain(request.signed_quantity),
        "positionFill": "DEFAULT",
        "clientExtensions": {"id": client_order_id, "tag": "tradectl"},
    }
    if request.order_type is OrderType.LIMIT:
        if request.limit_price is None:
            raise BrokerError(f"{client_order_id}: a limit order needs a limit price")
        order.update(type="LIMIT", price=_plain(request.limit_price), timeInForce=_TIF[request.time_in_force])
    else:  # a market order fills now or not at all (FOK), or what it can (IOC)
        order.update(type="MARKET", timeInForce="IOC" if request.time_in_force is TimeInForce.IOC else "FOK")
    return {"order": order}


class OandaRest:
    """The REST calls the adapter makes; each goes through the rate limiter and a worker thread."""

    def __init__(self, settings: OandaSettings) -> None:
        self.settings = settings
        self.limiter = RateLimiter(settings.requests_per_second, 1.0, name="oanda")
        self.offloader = Offloader(self.limiter, max_workers=settings.max_workers, throttled=throttle_delay,
                                   name="oanda")
        self._local = threading.local()
        self._apis: list[API] = []
        self._apis_lock = threading.Lock()
        register_environment(settings)

    def _api(self) -> API:
        api = getattr(self._local, "api", None)
        if api is None:
            api = self._local.api = make_api(self.settings, self.settings.request_timeout_seconds)
            with self._apis_lock:
                self._apis.append(api)
        return api

    def _request(self, endpoint: Any) -> Any:
        return self._api().request(endpoint)

    async def _call(self, what: str, endpoint: Any, *, resend_throttled: bool = True) -> Any:
        try:
            return await self.offloader.call(self._request, endpoint, resend_throttled=resend_throttled)
        except Exception as exc:
            raise _translate(exc, what, self.settings.api_origin) from exc

    @property
    def _account(self) -> str:
        return self.settings.account_id

    # ------------------------------------------------------------------ orders
    async def create_order(self, client_order_id: str, instrument: str, request: OrderRequest) -> dict[str, Any]:
        body = order_body(client_order_id, instrument, request)
        # sent once: a 429 pauses every caller and rejects this order (the venue did not process it)
        return await self._call(f"submit {client_order_id}", orders.OrderCreate(self._account, data=body),
                                resend_throttled=False)

    async def order_by_client_id(self, client_order_id: str) -> dict[str, Any] | None:
        try:
            answer = await self._call(f"order {client_order_id}",
                                      orders.OrderDetails(self._account, orderID=f"@{client_order_id}"))
        except OandaError as exc:
            if exc.status == 404:
                return None
            raise
        return answer.get("order")

    async def pending_orders(self) -> list[dict[str, Any]]:
        return (await self._call("pending orders", orders.OrdersPending(self._account))).get("orders") or []

    async def cancel_order(self, order_id: str) -> dict[str, Any]:
        return await self._call(f"cancel {order_id}", orders.OrderCancel(self._account, orderID=order_id))

    # ------------------------------------------------------------------ account
    async def accounts(self) -> list[dict[str, Any]]:
        """The accounts this token may use (``GET /v3/accounts``; no account id needed)."""
        return (await self._call("accounts", accounts.AccountList())).get("accounts") or []

    async def account_summary(self) -> dict[str, Any]:
        return (await self._call("account", accounts.AccountSummary(self._account))).get("account") or {}

    async def open_positions(self) -> list[dict[str, Any]]:
        return (await self._call("positions", positions.OpenPositions(self._account))).get("positions") or []

    async def transactions_since(self, transaction_id: str) -> tuple[list[dict[str, Any]], str]:
        """Every transaction after ``transaction_id``, oldest first, and the account's last transaction id."""
        found: list[dict[str, Any]] = []
        last = transaction_id
        while True:
            page = await self._call("transactions",
                                    transactions.TransactionsSinceID(self._account, params={"id": last}))
            rows = page.get("transactions") or []
            found += rows
            newest = str(page.get("lastTransactionID") or last)
            if not rows or str(rows[-1].get("id")) == newest:
                return found, newest
            last = str(rows[-1].get("id"))

    # ------------------------------------------------------------------ market data
    async def candles(self, instrument: str, from_ts: int, count: int = _MAX_CANDLES) -> list[dict[str, Any]]:
        """Candles opening at or after ``from_ts``, oldest first (complete or not)."""
        s = self.settings
        params = {"granularity": s.granularity, "price": PRICE_COMPONENTS[s.price][0], "from": rfc3339(from_ts),
                  "count": min(count, _MAX_CANDLES)}
        answer = await self._call("candles", instruments.InstrumentsCandles(instrument, params=params))
        return answer.get("candles") or []

    async def candles_between(self, instrument: str, from_ts: int, to_ts: int) -> list[dict[str, Any]]:
        """Candles opening in ``[from_ts, to_ts)``, oldest first, every page (complete or not).

        v20 answers at most 5,000 candles a request and refuses ``count`` beside both ``from`` and ``to``:
        a span of at most 5,000 bar slots is asked as ``from``/``to``, a longer one in ``from``/``count``
        pages, each starting where the previous page's last candle closed.
        """
        s = self.settings
        step = s.bar_seconds
        found: list[dict[str, Any]] = []
        cursor = from_ts
        while cursor < to_ts:
            params: dict[str, Any] = {"granularity": s.granularity, "price": PRICE_COMPONENTS[s.price][0],
                                      "from": rfc3339(cursor)}
            whole = -(-(to_ts - cursor) // step) <= _MAX_CANDLES
            if whole:
                params["to"] = rfc3339(to_ts)
            else:
                params["count"] = _MAX_CANDLES
            answer = await self._call("candles", instruments.InstrumentsCandles(instrument, params=params))
            page = answer.get("candles") or []
            found += page
            if whole or not page:
                break
            try:
                after = epoch_seconds(page[-1].get("time"), "time") + step
            except (AttributeError, WireError):  # the caller's reader refuses the bad candle; paging stops here
                break
            if after <= cursor:
                break
            cursor = after
        return found

    def close(self) -> None:
        self.offloader.close()
        with self._apis_lock:
            for api in self._apis:
                api.close()


def rfc3339(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000000000Z")
