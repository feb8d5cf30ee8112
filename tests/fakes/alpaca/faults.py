"""What can go wrong on purpose, and what the fake writes down for the tests to check afterwards.

Faults are queued and consumed in arrival order, so a test states exactly which requests fail ("the next
three REST calls get 429") instead of racing a timer. A fault is served before the request is processed:
a request answered 429 or 500 changed nothing on the venue, exactly as on Alpaca, so a resent order that
the fake holds twice is the client's bug. The one exception is ``lose_submit_response``, whose whole point
is an order that exists although its submitter never heard back.

Records use ``time.monotonic_ns`` so that a latency bench can subtract a bar frame's send time from an
order request's arrival time in the same clock.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime


@dataclass(frozen=True)
class HttpFault:
    """Answer a matching REST request with ``status`` (429 carries rate-limit headers) instead of serving it."""

    status: int
    path_prefix: str = "/"
    reset_in_seconds: float = 1.0  # 429 only: X-RateLimit-Reset is now + this, in epoch seconds


@dataclass
class Delay:
    """Answer matching REST requests ``seconds`` late; ``remaining`` None means until cleared."""

    seconds: float
    remaining: int | None
    path_prefix: str = "/"


@dataclass(frozen=True)
class Rejection:
    """Refuse the next order: synchronously (HTTP ``status`` + Alpaca code, Alpaca's usual way) or, when
    ``asynchronous``, accept it and then send a ``rejected`` trade update."""

    reason: str
    asynchronous: bool = False
    status: int = 403
    code: int = 40310000


@dataclass
class FaultPlan:
    """The queued faults the server and the streams consult; changed through ``FakeAlpaca``'s methods."""

    http: list[HttpFault] = field(default_factory=list)
    delays: list[Delay] = field(default_factory=list)
    lose_submit_responses: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    duplicate_trade_updates: int = 0  # the next N trade updates are each sent twice
    reorder_trade_updates: int = 0  # the next N trade updates are held, then sent in reverse order
    market_data_down: bool = False  # websocket upgrades on the market-data paths are refused (503)
    trade_updates_down: bool = False  # the same for /stream

    def take_http(self, path: str) -> HttpFault | None:
        for i, fault in enumerate(self.http):
            if path.startswith(fault.path_prefix):
                return self.http.pop(i)
        return None

    def take_delay(self, path: str) -> float:
        for i, delay in enumerate(self.delays):
            if path.startswith(delay.path_prefix):
                if delay.remaining is not None:
                    delay.remaining -= 1
                    if delay.remaining <= 0:
                        self.delays.pop(i)
                return delay.seconds
        return 0.0


@dataclass(frozen=True)
class RequestRecord:
    """One REST request as it arrived (before any fault), with the client order id of an order submission."""

    method: str
    path: str
    query: dict[str, str]
    arrived_ns: int
    client_order_id: str | None = None


@dataclass(frozen=True)
class BarFrameRecord:
    """One market-data frame of bars: what it held and when it was handed to the sockets."""

    symbols: tuple[str, ...]
    ts_open: tuple[datetime, ...]
    sent_ns: int
    receivers: int  # connections subscribed to at least one of its bars


@dataclass(frozen=True)
class TradeUpdateRecord:
    """One trade-update message handed to the sockets (duplicates are recorded twice)."""

    event: str
    client_order_id: str
    execution_id: str | None
    sent_ns: int
    receivers: int


@dataclass
class Records:
    requests: list[RequestRecord] = field(default_factory=list)
    client_order_ids: list[str] = field(default_factory=list)  # every POST /v2/orders, duplicates included
    bar_frames: list[BarFrameRecord] = field(default_factory=list)
    trade_updates: list[TradeUpdateRecord] = field(default_factory=list)
    responses: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path, status) as answered

    def duplicate_client_order_ids(self) -> dict[str, int]:
        """Client order ids received more than once, with their counts."""
        return {cid: n for cid, n in Counter(self.client_order_ids).items() if n > 1}
