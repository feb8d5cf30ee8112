"""Waiting in tests for something a running daemon does, with a deadline instead of a fixed sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


async def until(check: Callable[[], bool], seconds: float = 10, what: str = "", *, step: float = 0.005) -> None:
    """Return as soon as ``check()`` is true; fail the test when it is not within ``seconds``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(step)
