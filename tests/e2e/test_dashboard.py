"""The dashboard in a real headless Chromium against a real daemon trading the simulator.

The daemon runs in-process (``LiveRunner`` with its API on a free port) so
the test can hold the runner's books lock: with no bar being booked, the
daemon's figures stand still and the page must show exactly them. Released,
new bars must reach the page without a reload. The screenshot stays in
``var/dashboard.png`` for people to look at.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.runners import LiveRunner
from tests.e2e.chromium import MISSING_CHROMIUM, Page, find_chromium, open_page

pytestmark = pytest.mark.slow

SCREENSHOT = Path(__file__).resolve().parents[2] / "var" / "dashboard.png"


def _config(tmp_path: Path) -> TradectlConfig:
    return TradectlConfig(
        api={"port": 0},
        strategy={"kind": "sma_cross", "sma_cross": {"fast": 3, "slow": 8}},  # a position within a few bars
        store={"path": str(tmp_path / "dashboard.db")},
        data={"pace": 25},  # bars keep arriving while the page is open
    )


async def _until(check: Callable[[], Awaitable[bool]], seconds: float, what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.05)


async def _positions(page: Page) -> list[list[str]]:
    rows = await page.evaluate(
        "JSON.stringify([...document.querySelectorAll('#positions tbody tr')]"
        ".map(r => [...r.cells].map(c => c.textContent)))"
    )
    return json.loads(rows)


async def test_dashboard_shows_the_daemon_live_in_chromium(tmp_path: Path) -> None:
    binary = find_chromium()
    if binary is None:
        pytest.skip(MISSING_CHROMIUM)
    runner = await LiveRunner.open(_config(tmp_path), bars=load_bundled()[:3000])
    daemon = runner.daemon
    trading = asyncio.create_task(runner.run(install_signals=False))
    try:
        async def positioned() -> bool:
            held = bool(daemon.portfolio.position_rows())
            return runner.api is not None and daemon.pipeline.counts.bars >= 20 and held

        await _until(positioned, 20, "the daemon holds a position")
        assert runner.api is not None
        async with open_page(binary) as page:
            await page.call("Page.navigate", url=runner.api.url + "/")

            # frozen: no bar is booked while the test holds the books, so the page must match the daemon exactly
            async with runner._books:
                status: dict[str, Any] = daemon.status()
                equity = f"{status['equity']:,.2f}"
                bars = str(status["counts"]["bars"])

                async def caught_up() -> bool:
                    return await page.text("#bars") == bars and await page.text("#equity") == equity

                await _until(caught_up, 10, f"the page shows bar {bars} and equity {equity}")
                assert await page.text("#state") == status["state"]
                shown = await _positions(page)
                expected = [[p["symbol"], str(p["quantity"])] for p in status["positions"]]
                assert expected, "the crossing strategy holds a position from its first trade on"
                assert [row[:2] for row in shown] == expected
                chart = await page.evaluate("document.querySelector('#equity-chart path')?.getAttribute('d')")
                assert chart, "the equity chart is drawn"

            # released: new bars reach the page without a reload
            async def moved_on() -> bool:
                shown_bars = await page.text("#bars")
                return shown_bars is not None and shown_bars.isdigit() and int(shown_bars) >= int(bars) + 5

            await _until(moved_on, 10, "the page follows new bars")
            after = await page.evaluate("document.querySelector('#equity-chart path')?.getAttribute('d')")
            assert after != chart, "the equity chart changed with the new bars"
            assert await page.text("#live") == "live"
            assert await page.evaluate("document.querySelectorAll('#risk tbody tr').length") == len(
                daemon.governor.layers
            )
            await page.screenshot(SCREENSHOT)
            assert page.errors == [], f"the page logged errors: {page.errors}"
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 15)
    assert SCREENSHOT.stat().st_size > 10_000
