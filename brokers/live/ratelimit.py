"""A venue's REST rate limit: a token bucket every request goes through, and a shared pause after a 429.

``RateLimiter.acquire`` waits (``asyncio.sleep``, never blocking the loop)
until a token is free. The bucket holds ``burst`` tokens and refills at
``rate`` per ``per`` seconds (Alpaca: 200 per 60 s). A 429 means the venue
counts differently than we do (another program on the same key, a clock
skew): ``pause_until`` makes *every* caller wait until the venue's reset,
and the bucket restarts empty then so the first second after the reset is
not a burst that trips the limit again.

``reset_delay`` reads the reset from a response's headers:
``Retry-After`` (seconds or an HTTP date) or ``X-RateLimit-Reset`` (epoch
seconds), falling back to one refill interval when neither is usable.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import time
from collections.abc import Callable, Mapping

import structlog

__all__ = ["RateLimiter", "reset_delay"]

log = structlog.get_logger(__name__)


class RateLimiter:
    """Token bucket with a venue-imposed pause; one per venue, shared by every REST caller."""

    def __init__(
        self,
        rate: float,
        per: float = 60.0,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        name: str = "venue",
    ) -> None:
        if not rate > 0 or not per > 0:
            raise ValueError(f"rate limit needs rate > 0 and per > 0, got {rate}/{per}")
        self.name = name
        self.rate = rate / per  # tokens per second
        self.capacity = float(burst if burst is not None else rate)
        if not self.capacity >= 1:
            raise ValueError(f"burst must be >= 1, got {self.capacity}")
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._paused_until = 0.0
        self._lock = asyncio.Lock()  # FIFO: callers get tokens in the order they asked
        self.acquired = 0
        self.waited_seconds = 0.0
        self.throttled = 0  # 429s reported

    @property
    def paused_for(self) -> float:
        return max(0.0, self._paused_until - self._clock())

    @property
    def tokens(self) -> float:
        self._refill()
        return self._tokens

    def _refill(self) -> None:
        now = self._clock()
        if now < self._paused_until:
            return
        start = max(self._stamp, self._paused_until)
        self._tokens = min(self.capacity, self._tokens + (now - start) * self.rate)
        self._stamp = now

    def _wait_needed(self) -> float:
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        self._refill()
        if self._tokens >= 1:
            return 0.0
        return (1 - self._tokens) / self.rate

    async def acquire(self) -> None:
        """Take one token, waiting for it (and for any venue pause) without blocking the loop."""
        async with self._lock:
            waited = 0.0
            while (delay := self._wait_needed()) > 0:
                waited += delay
                await asyncio.sleep(delay)
            self._tokens -= 1
            self.acquired += 1
            self.waited_seconds += waited

    def pause_until(self, delay: float, reason: str = "429") -> None:
        """The venue said "too many": no caller gets a token for ``delay`` seconds, then the bucket is empty."""
        self.throttled += 1
        until = self._clock() + max(0.0, delay)
        if until > self._paused_until:
            self._paused_until = until
            self._tokens = 0.0
            self._stamp = until
            log.warning("rate limited by the venue; every request waits", venue=self.name,
                        seconds=round(delay, 3), reason=reason)

    def status(self) -> dict[str, float | int]:
        return {
            "tokens": round(self.tokens, 2),
            "paused_seconds": round(self.paused_for, 3),
            "requests": self.acquired,
            "waited_seconds": round(self.waited_seconds, 3),
            "throttled": self.throttled,
        }


def reset_delay(headers: Mapping[str, str] | None, *, now: float | None = None, default: float = 1.0) -> float:
    """Seconds until the venue's rate-limit window resets, read from a 429's headers.

    ``Retry-After`` wins (delta seconds or an HTTP date), then ``X-RateLimit-Reset``
    (epoch seconds). A missing, malformed or past value gives ``default``.
    """
    now = time.time() if now is None else now
    if not headers:
        return default
    lowered = {k.lower(): v for k, v in headers.items()}
    retry_after = lowered.get("retry-after")
    if retry_after is not None:
        try:
            seconds = float(retry_after)
        except ValueError:
            try:
                seconds = email.utils.parsedate_to_datetime(retry_after).timestamp() - now
            except (TypeError, ValueError):
                seconds = math.nan
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    reset = lowered.get("x-ratelimit-reset")
    if reset is not None:
        try:
            seconds = float(reset) - now
        except ValueError:
            seconds = math.nan
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    return default
