"""`tradectl run` with broker.kind oanda against the wire-level fake, under the faults a real process meets.

Each ends with the store's fills and positions equal to the fake's and no client order id sent twice
(``tests/e2e/live_run.py``, shared with the Alpaca tests):

* SIGKILL between the journal commit and the send (``tests/e2e/killable_run.py``), then a restart: the
  journaled order is looked up by ``@<client id>``, found missing and rejected, never sent;
* SIGKILL between the send and the fill; the fake fills the order while no daemon runs; the restarted one
  finds the order by client id and books its fill once from the account's transaction history;
* an oversized fill (the fake fills 1,500 units of a 1,000-unit order, OANDA's "position size escalation"):
  the order manager books what the venue did, halts trading (``risk_events``: orders/halt/overfill, the
  HALTED state stored) and alerts through Telegram (the store's outbox and the fake Bot API); no order goes
  out afterwards.
"""

from __future__ import annotations

import os
from decimal import Decimal
from pathlib import Path

import pytest

from tests.brokers.harness import publish_oanda_bar
from tests.e2e.live_run import (
    LiveRun,
    killed_between_journal_and_send,
    killed_between_send_and_fill,
    oversized_fill_halts_and_alerts,
)
from tests.e2e.test_telegram_process import TOKEN as BOT_TOKEN
from tests.e2e.test_telegram_process import _telegram_env
from tests.fakes.oanda import ACCOUNT_ID, TOKEN, FakeOanda
from tests.fakes.telegram import FakeBotApi

pytestmark = pytest.mark.slow
T0 = 1704794400  # 2024-01-09T10:00:00Z, a Tuesday: the FX week is open for every bar published here
UNITS = Decimal(1000)


class _Run(LiveRun):
    """The OANDA fake and `tradectl run` processes trading it."""

    symbol = "EURUSD"
    base_price = 1.10
    amplitude = 0.004
    units = str(UNITS)
    bars_per_kill = 100

    def __init__(self, tmp_path: Path, fake: FakeOanda, *, env: dict[str, str] | None = None) -> None:
        self.fake = fake
        super().__init__(tmp_path, T0, broker_yaml=f"""
broker:
  kind: oanda
  oanda:
    account_id: {ACCOUNT_ID}
    granularity: M1
    api_url: {fake.base_url}
    stream_url: {fake.base_url}
    transactions_poll_seconds: 0.2
    backoff_floor_seconds: 0.1
    backoff_cap_seconds: 1
""", env={**os.environ, "TRADECTL_OANDA__TOKEN": TOKEN, **(env or {})}, max_age_seconds=1_000_000_000)
    async def start(self, kill_at: str = "") -> None:
        self._connections = self.fake.records.stream_connections
        await super().start(kill_at)

    async def ready(self) -> None:
        """This daemon's pricing stream is connected (a killed one's socket may linger at the fake a while)."""
        await self.fake.wait_until(lambda: self.fake.records.stream_connections > self._connections, 60,
                                   "the daemon's pricing stream")

    async def publish_bar(self, open_ts: int, ohlc: tuple[float, float, float, float]) -> None:
        publish_oanda_bar(self.fake, open_ts, tuple(round(p, 5) for p in ohlc))  # type: ignore[arg-type]

    def held(self) -> dict[str, Decimal]:
        return {i.replace("_", ""): units for i, units in self.fake.net_positions().items()}

    def executed(self) -> list[tuple[str, Decimal, Decimal]]:
        cid_of = {o.id: o.client_id or "" for o in self.fake.orders}
        return [(cid_of[tx["orderID"]], abs(Decimal(tx["units"])), Decimal(tx["price"])) for tx in self.fake.fills]

    def sent(self) -> list[str]:
        return list(self.fake.records.client_ids)

    def filled_at_venue(self, client_order_id: str) -> bool:
        order = self.fake.order(client_order_id)
        return order is not None and order.state == "FILLED"


async def test_killed_between_journal_and_send_the_order_is_never_sent(tmp_path: Path) -> None:
    async with FakeOanda(start_time=T0, commission="0.05", heartbeat_every=1.0) as fake:
        await killed_between_journal_and_send(_Run(tmp_path, fake))


async def test_killed_between_send_and_fill_the_fill_is_booked_after_restart(tmp_path: Path) -> None:
    async with FakeOanda(start_time=T0, commission="0.05", heartbeat_every=1.0) as fake:
        run = _Run(tmp_path, fake)
        sent = await killed_between_send_and_fill(run)
    (fee,) = run.store(f"SELECT fee FROM fills WHERE client_order_id = '{sent}'")[0]
    assert Decimal(fee) == Decimal("0.05"), "the venue's commission is the fill's fee"


async def test_an_oversized_fill_is_booked_halts_trading_and_alerts(tmp_path: Path) -> None:
    async with FakeBotApi(BOT_TOKEN) as bot, FakeOanda(start_time=T0, heartbeat_every=1.0) as fake:
        run = _Run(tmp_path, fake, env=_telegram_env(bot))
        fake.overfill_next(500)  # the first fill of the run executes 1,500 units of a 1,000-unit order
        await oversized_fill_halts_and_alerts(run, bot, ordered=UNITS, extra=Decimal(500))
