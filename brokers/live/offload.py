"""Blocking client calls (``requests`` under alpaca-py, oandapyV20) off the event loop, through the rate limiter.

``Offloader.call(fn, *args)`` takes a worker slot, then a rate-limit token,
then runs ``fn`` in a bounded ``ThreadPoolExecutor``: the loop only awaits a
future. A call the venue answers with "too many requests" (``throttled``
returns the seconds to wait, read from the response) pauses the shared limiter
so every caller waits for the venue's reset, and the call is made again after
it, at most ``throttle_retries`` times. An order is the exception
(``resend_throttled=False``): its client order id goes out once, so a
submit refused with 429 raises ``RateLimited`` (the venue did not process it:
the order is rejected, and the strategy decides again after the reset on
fresh prices instead of sending a stale decision late). Any other failure
goes to the caller unchanged: whether to retry it is the caller's decision
(a submit never is).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import structlog

from brokers.errors import BrokerError
from brokers.live.ratelimit import RateLimiter

__all__ = ["Offloader", "RateLimited"]

log = structlog.get_logger(__name__)
T = TypeVar("T")


class RateLimited(BrokerError):
    """The venue kept answering 429 after every pause this call was allowed."""


class Offloader:
    def __init__(
        self,
        limiter: RateLimiter,
        *,
        max_workers: int = 4,
        throttled: Callable[[BaseException], float | None] = lambda exc: None,
        throttle_retries: int = 5,
        name: str = "venue",
    ) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be >= 1, got {max_workers}")
        self.limiter = limiter
        self.max_workers = max_workers
        self._throttled = throttled
        self._throttle_retries = throttle_retries
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"{name}-rest")
        self._slots = asyncio.Semaphore(max_workers)
        self.name = name
        self.calls = 0
        self.in_flight = 0
        self.peak_in_flight = 0
        self.busy_seconds = 0.0  # time spent inside worker threads

    async def call(self, fn: Callable[..., T], *args: Any, resend_throttled: bool = True, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` in a worker thread. ``resend_throttled=False``: a 429 still pauses every
        caller, but this call is not made again; it raises ``RateLimited`` (an order: see the module docs)."""
        bound = functools.partial(fn, *args, **kwargs)
        for _ in range(self._throttle_retries + 1 if resend_throttled else 1):
            async with self._slots:
                await self.limiter.acquire()
                try:
                    return await self._run(bound)
                except Exception as exc:
                    delay = self._throttled(exc)
                    if delay is None:
                        raise
                    self.limiter.pause_until(delay, reason=f"{getattr(fn, '__name__', 'call')}: {exc}")
                    if not resend_throttled:
                        raise RateLimited(f"{self.name}: refused with 429 (not processed); not sent again") from exc
        raise RateLimited(f"{self.name}: still rate limited after {self._throttle_retries} pauses")

    async def _run(self, bound: Callable[[], T]) -> T:
        self.calls += 1
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        started = time.perf_counter()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, bound)
        finally:
            self.in_flight -= 1
            self.busy_seconds += time.perf_counter() - started

    def status(self) -> dict[str, Any]:
        return {
            "max_workers": self.max_workers,
            "in_flight": self.in_flight,
            "peak_in_flight": self.peak_in_flight,
            "calls": self.calls,
            "limiter": self.limiter.status(),
        }

    def close(self) -> None:
        """Stop taking work; calls already in a thread finish there (a thread cannot be cancelled)."""
        self._pool.shutdown(wait=False, cancel_futures=True)
