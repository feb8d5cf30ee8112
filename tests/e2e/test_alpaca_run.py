"""`tradectl run` with broker.kind alpaca against the wire-level fake: orders carry our client ids, fills are
booked from the fake's trade updates, and `tradectl status` shows the positions the fake holds.

Then the faults a real process meets, each ending with the store's fills and positions equal to the fake's
and no client order id sent twice: SIGKILL between the journal commit and the send, and between the send and
the fill (``tests/e2e/killable_run.py`` kills at exactly those points), each followed by a restart; and a
burst of 429s in the middle of a run. (The adapter-level faults, reconnect and backfill, a lost submit answer
and 429 handling, are tested in ``tests/integration/test_alpaca_adapter.py``.)
"""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.live_run import LiveRun, killed_between_journal_and_send, killed_between_send_and_fill
from tests.fakes.alpaca import KEY_ID, SECRET_KEY, FakeAlpaca

pytestmark = pytest.mark.slow
BARS = 200
SIZE = Decimal(10)


class _Run(LiveRun):
    """The Alpaca fake and `tradectl run` processes trading it (``tests/e2e/live_run.py``)."""

    symbol = "SPY"
    units = str(SIZE)
    bars_per_kill = BARS // 2

    def __init__(self, tmp_path: Path, fake: FakeAlpaca, t0: int) -> None:
        self.fake = fake
        super().__init__(tmp_path, t0, broker_yaml=f"""
broker:
  kind: alpaca
  alpaca:
    trading_url: {fake.base_url}
    data_url: {fake.base_url}
    data_stream_url: {fake.stock_stream_url('iex')}
    trading_stream_url: {fake.trading_stream_url}
    backoff_floor_seconds: 0.1
    backoff_cap_seconds: 1
""", env={**os.environ, "TRADECTL_ALPACA__KEY_ID": KEY_ID, "TRADECTL_ALPACA__SECRET_KEY": SECRET_KEY})

    async def ready(self) -> None:
        await self.fake.wait_until(lambda: self.fake.market_data.subscribed("SPY") == 1, 60, "SPY subscribed")
        await self.fake.wait_listening(seconds=60)

    async def publish_bar(self, open_ts: int, ohlc: tuple[float, float, float, float]) -> None:
        await self.fake.publish_bar("SPY", datetime.fromtimestamp(open_ts, UTC), *ohlc)

    def held(self) -> dict[str, Decimal]:
        return {s: p.qty for s, p in self.fake.positions().items()}

    def executed(self) -> list[tuple[str, Decimal, Decimal]]:
        return [(e.client_order_id, e.qty, e.price) for e in self.fake.executions]

    def sent(self) -> list[str]:
        return list(self.fake.received_client_order_ids)

    def filled_at_venue(self, client_order_id: str) -> bool:
        order = self.fake.order(client_order_id)
        return order is not None and order.status == "filled"


def _t0() -> int:
    return int(time.time()) // 60 * 60 - BARS * 60  # the last bar closes about now


async def test_run_trades_the_fake_and_status_shows_its_positions(tmp_path: Path) -> None:
    async with FakeAlpaca(start_time=datetime.fromtimestamp(_t0(), UTC)) as fake:
        run = _Run(tmp_path, fake, _t0())
        await run.start()
        try:
            await run.publish(BARS)
            await run.caught_up()
            doc = await run.status()
        finally:
            await run.stop()
        ids = fake.received_client_order_ids
        assert len(ids) >= 4 and all(i.startswith("tc") for i in ids), ids
        assert doc["broker"] == "alpaca-paper" and doc["feed"]["connected"] is True
        shown = {row["symbol"]: Decimal(str(row["quantity"])) for row in doc["positions"]}
        assert shown == run.held(), "`tradectl status` shows the positions the fake holds"
        run.assert_books_agree()


async def test_killed_between_journal_and_send_the_order_is_never_sent(tmp_path: Path) -> None:
    t0 = _t0()
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        await killed_between_journal_and_send(_Run(tmp_path, fake, t0))


async def test_killed_between_send_and_fill_the_fill_is_booked_after_restart(tmp_path: Path) -> None:
    t0 = _t0()
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        await killed_between_send_and_fill(_Run(tmp_path, fake, t0))


async def test_a_burst_of_429s_mid_run_loses_nothing_and_sends_nothing_twice(tmp_path: Path) -> None:
    t0 = _t0()
    async with FakeAlpaca(start_time=datetime.fromtimestamp(t0, UTC)) as fake:
        run = _Run(tmp_path, fake, t0)
        await run.start()
        try:
            await run.publish(40)
            refused = [s for *_, s in fake.records.responses].count(429)
            fake.rate_limit_next(4, reset_in_seconds=0.5)
            await run.publish(60)
            await fake.wait_until(lambda: [s for *_, s in fake.records.responses].count(429) == refused + 4, 30,
                                  "the whole burst was served")
            await run.publish(40)
            await run.caught_up()
            doc = await run.status()
        finally:
            await run.stop()
        assert doc["state"] == "active", doc["state"]
        refused = [(m, p) for m, p, s in fake.records.responses if s == 429].count(("POST", "/v2/orders"))
        rejected = run.store("SELECT COUNT(*) FROM orders WHERE status = 'rejected' AND message LIKE '%rate limited%'")
        assert rejected == [(refused,)], "an order refused with 429 is rejected, never sent again"
        assert {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]} == run.held()
        run.assert_books_agree()
