"""`tradectl run` with broker.kind ib against the fake TWS, as a real process, and the faults a real process meets.

The daemon's own ib_async client connects to the fake over the TWS socket protocol, qualifies SPY, sums twelve
5-second real-time bars into each minute bar and trades the SMA baseline on them (``tests/e2e/live_run.py``,
shared with the Alpaca and OANDA tests). Every test ends with the store's fills and positions equal to the
fake's and no client order id (orderRef) sent twice:

* a plain run: orders carry our client ids in orderRef, every execution is booked once at the venue's price
  with its commission, one decision per minute bar, and `tradectl status` shows the fake's positions;
* SIGKILL between the journal commit and the send (``tests/e2e/killable_run.py``), then a restart: the journaled
  order is looked up by its orderRef among TWS's open and completed orders, found missing and rejected, never sent;
* SIGKILL between the send and the fill; the fake fills the order while no daemon is connected; the restarted
  one finds it again by its orderRef and books its execution once, with the commission report's fee;
* an oversized fill (the fake TWS executes 15 shares of a 10-share order): booked as the venue made it, trading
  halted (``risk_events`` orders/halt/overfill, the HALTED state stored), the Telegram alert sent, no order after.

(Connectivity faults — 1100/1101/1102, a dropped socket — refusals and the late commission are tested at the
adapter level in ``tests/integration/test_ib_adapter.py``.)
"""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.live_run import (
    LiveRun,
    killed_between_journal_and_send,
    killed_between_send_and_fill,
    oversized_fill_halts_and_alerts,
)
from tests.e2e.test_telegram_process import TOKEN as BOT_TOKEN
from tests.e2e.test_telegram_process import _telegram_env
from tests.fakes.telegram import FakeBotApi
from tests.fakes.tws import FakeTws, ib_commission

pytestmark = pytest.mark.slow
BARS = 240
SIZE = Decimal(10)
CLIENT_ID = 3


class _Run(LiveRun):
    """The fake TWS and `tradectl run` processes trading it: each minute bar is twelve 5-second bars."""

    symbol = "SPY"
    units = str(SIZE)
    bars_per_kill = 100

    def __init__(self, tmp_path: Path, fake: FakeTws, t0: int, *, env: dict[str, str] | None = None) -> None:
        self.fake = fake
        super().__init__(tmp_path, t0, broker_yaml=f"""
broker:
  kind: ib
  ib: {{port: {fake.port}, client_id: {CLIENT_ID}, bar_seconds: 60, backoff_floor_seconds: 0.1,
        backoff_cap_seconds: 1}}
""", env={**os.environ, **(env or {})})

    async def start(self, kill_at: str = "") -> None:
        # TWS refuses a client id that is still connected (326): a killed daemon's socket must be gone first
        await self.fake.wait_until(lambda: all(s.client_id != CLIENT_ID for s in self.fake.sessions), 30,
                                   "the previous daemon's session closed")
        await super().start(kill_at)

    async def ready(self) -> None:
        await self.fake.wait_until(lambda: self.fake.subscribed("SPY") == 1, 60, "SPY real-time bars subscribed")

    async def publish_bar(self, open_ts: int, ohlc: tuple[float, float, float, float]) -> None:
        await self.fake.publish_long_bar("SPY", open_ts, 60, *(round(p, 4) for p in ohlc))

    def held(self) -> dict[str, Decimal]:
        position = self.fake.position("SPY")
        return {"SPY": position} if position else {}

    def executed(self) -> list[tuple[str, Decimal, Decimal]]:
        return [(e.fields.order_ref, e.fields.shares, e.fields.price) for e in self.fake.executions]

    def sent(self) -> list[str]:
        return list(self.fake.records.order_refs)

    def filled_at_venue(self, client_order_id: str) -> bool:
        order = self.fake.order(client_order_id)
        return order is not None and order.status == "Filled"


def _t0(bars: int = BARS) -> int:
    return int(time.time()) // 60 * 60 - bars * 60  # the last bar closes about now


async def test_run_trades_the_fake_tws_and_status_shows_its_positions(tmp_path: Path) -> None:
    t0 = _t0()
    async with FakeTws() as fake:
        run = _Run(tmp_path, fake, t0)
        await run.start()
        try:
            await run.publish(BARS)
            await run.caught_up()
            doc = await run.status()
        finally:
            await run.stop()
        refs = run.sent()
        assert len(refs) >= 4 and all(r.startswith("tc") for r in refs), refs
        assert doc["broker"] == "ib" and doc["feed"]["connected"] is True
        shown = {r["symbol"]: Decimal(str(r["quantity"])) for r in doc["positions"]}
        assert {s: q for s, q in shown.items() if q} == run.held(), "`tradectl status` shows the fake's positions"
        run.assert_books_agree()
        fees = sorted((cid, Decimal(f)) for cid, f in run.store("SELECT client_order_id, fee FROM fills"))
        assert fees == sorted((e.fields.order_ref, e.fields.commission) for e in fake.executions), \
            "every fill's fee is its commission report's"
        decided = [ts for (ts,) in run.store("SELECT ts FROM decisions ORDER BY id")]
        last = t0 + BARS * 60
        assert decided == list(range(decided[0], last + 1, 60)) and decided[0] <= t0 + 8 * 60, \
            "one decision per minute bar from the slow SMA's first, none twice, none missing"


async def test_killed_between_journal_and_send_the_order_is_never_sent(tmp_path: Path) -> None:
    async with FakeTws() as fake:
        await killed_between_journal_and_send(_Run(tmp_path, fake, _t0(200)))


async def test_killed_between_send_and_fill_the_order_is_found_by_order_ref(tmp_path: Path) -> None:
    async with FakeTws() as fake:
        run = _Run(tmp_path, fake, _t0(200))
        sent = await killed_between_send_and_fill(run)
        (execution,) = [e for e in fake.executions if e.fields.order_ref == sent]
    (perm_id,) = run.store(f"SELECT broker_order_id FROM orders WHERE client_order_id = '{sent}'")[0]
    assert perm_id == str(execution.fields.perm_id), "the order found again by orderRef carries IB's permId"
    (fee,) = run.store(f"SELECT fee FROM fills WHERE client_order_id = '{sent}'")[0]
    assert Decimal(fee) == ib_commission(execution.instrument, SIZE, execution.fields.price) == Decimal("1.00"), \
        "the commission report of an execution made while no daemon ran is the fill's fee"


async def test_an_oversized_fill_is_booked_halts_trading_and_alerts(tmp_path: Path) -> None:
    async with FakeBotApi(BOT_TOKEN) as bot, FakeTws() as fake:
        run = _Run(tmp_path, fake, _t0(200), env=_telegram_env(bot))
        fake.overfill_next(5)  # the first execution of the run: 15 shares of a 10-share order
        await oversized_fill_halts_and_alerts(run, bot, ordered=SIZE, extra=Decimal(5))
