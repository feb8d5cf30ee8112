"""The venue rate limiter, the offloader that runs blocking calls in threads through it, and 429 handling."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from brokers.live import Offloader, RateLimited, RateLimiter, reset_delay


async def test_the_bucket_allows_a_burst_then_paces_at_the_rate() -> None:
    limiter = RateLimiter(20, per=1.0, burst=5)
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    assert time.monotonic() - started < 0.05, "the burst is free"
    for _ in range(4):
        await limiter.acquire()
    elapsed = time.monotonic() - started
    assert 0.18 <= elapsed < 0.5, f"4 more tokens at 20/s take ~0.2 s, took {elapsed:.3f}"
    assert limiter.acquired == 9


async def test_alpaca_sized_bucket_refills_two_hundred_per_minute() -> None:
    now = [0.0]
    limiter = RateLimiter(200, per=60.0, clock=lambda: now[0])
    assert limiter.tokens == 200
    for _ in range(200):
        await limiter.acquire()
    assert limiter.tokens < 1
    now[0] = 30.0
    assert limiter.tokens == pytest.approx(100)


async def test_a_pause_makes_every_caller_wait_and_restarts_the_bucket_empty() -> None:
    limiter = RateLimiter(1000, per=1.0, burst=1000)
    limiter.pause_until(0.2)
    started = time.monotonic()
    done: list[float] = []

    async def caller() -> None:
        await limiter.acquire()
        done.append(time.monotonic() - started)

    await asyncio.gather(*(caller() for _ in range(3)))
    assert min(done) >= 0.19, f"nobody got a token during the pause: {done}"
    assert limiter.throttled == 1


def test_reset_delay_reads_retry_after_then_the_epoch_reset() -> None:
    assert reset_delay({"Retry-After": "3"}, now=1000.0) == 3.0
    assert reset_delay({"X-RateLimit-Reset": "1004.5"}, now=1000.0) == 4.5
    assert reset_delay({"retry-after": "2", "x-ratelimit-reset": "1009"}, now=1000.0) == 2.0, "Retry-After wins"
    assert reset_delay({"Retry-After": "Thu, 01 Jan 1970 00:16:50 GMT"}, now=1000.0) == 10.0
    assert reset_delay({"X-RateLimit-Reset": "900"}, now=1000.0, default=1.5) == 1.5, "a past reset"
    assert reset_delay({"X-RateLimit-Reset": "soon"}, now=1000.0, default=1.5) == 1.5
    assert reset_delay(None, default=2.0) == 2.0


class _Throttle(Exception):
    def __init__(self, wait: float) -> None:
        super().__init__("429")
        self.wait = wait


async def test_a_429_pauses_all_callers_and_the_call_is_made_again_after_the_reset() -> None:
    limiter = RateLimiter(1000, per=1.0)
    offloader = Offloader(limiter, max_workers=2, throttled=lambda e: e.wait if isinstance(e, _Throttle) else None)
    answers = iter([_Throttle(0.15), "ok"])
    calls: list[float] = []
    started = time.monotonic()

    def flaky() -> str:
        calls.append(time.monotonic() - started)
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert await offloader.call(flaky) == "ok"
    assert len(calls) == 2 and calls[1] - calls[0] >= 0.14
    assert limiter.throttled == 1
    offloader.close()


async def test_other_failures_are_not_retried_and_endless_429s_give_up() -> None:
    offloader = Offloader(RateLimiter(1000, per=1.0), throttled=lambda e: 0.001 if isinstance(e, _Throttle) else None,
                          throttle_retries=2)
    count = 0

    def boom() -> None:
        nonlocal count
        count += 1
        raise TimeoutError("read timed out")

    with pytest.raises(TimeoutError):
        await offloader.call(boom)
    assert count == 1, "an ambiguous failure is the caller's to judge, never retried here"

    def always_429() -> None:
        raise _Throttle(0.001)

    with pytest.raises(RateLimited, match="2 pauses"):
        await offloader.call(always_429)
    offloader.close()


async def test_blocking_calls_run_in_bounded_threads_and_leave_the_loop_free() -> None:
    offloader = Offloader(RateLimiter(10_000, per=1.0), max_workers=3)
    threads: set[str] = set()
    lock = threading.Lock()
    active = 0
    peak = 0

    def blocking() -> None:
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
            threads.add(threading.current_thread().name)
        time.sleep(0.05)  # what requests does while it waits for a venue
        with lock:
            active -= 1

    lags: list[float] = []

    async def probe() -> None:
        loop = asyncio.get_running_loop()
        for _ in range(40):
            t = loop.time()
            await asyncio.sleep(0.005)
            lags.append(loop.time() - t - 0.005)

    await asyncio.gather(probe(), *(offloader.call(blocking) for _ in range(12)))
    assert peak == 3 and offloader.peak_in_flight == 3
    assert threading.current_thread().name not in threads
    assert max(lags) < 0.03, f"the loop stayed responsive (worst lag {max(lags) * 1000:.1f} ms)"
    offloader.close()


async def test_an_order_refused_with_429_is_not_sent_again_but_still_pauses_everyone() -> None:
    limiter = RateLimiter(1000, per=1.0)
    offloader = Offloader(limiter, throttled=lambda e: e.wait if isinstance(e, _Throttle) else None)
    sends = 0

    def submit() -> None:
        nonlocal sends
        sends += 1
        raise _Throttle(0.1)

    with pytest.raises(RateLimited, match="not sent again"):
        await offloader.call(submit, resend_throttled=False)
    assert sends == 1 and limiter.paused_for > 0.05
    offloader.close()
