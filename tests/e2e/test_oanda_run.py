"""`tradectl run` with broker.kind oanda against the wire-level fake for 300 M1 bars: orders carry our client ids
(none twice), fills are booked from the fake's transactions at its prices and fees, and `tradectl status` shows
the positions the fake holds (the run's mechanics: ``tests/e2e/live_run.py``, the OANDA side in
``test_oanda_faults``)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from tests.e2e.test_oanda_faults import T0, _Run
from tests.fakes.oanda import FakeOanda

pytestmark = pytest.mark.slow
BARS = 300  # from Tuesday 10:00 UTC: the FX week is open for all 300 minutes


async def test_run_trades_the_fake_and_status_shows_its_positions(tmp_path: Path) -> None:
    async with FakeOanda(start_time=T0, commission="0.05", heartbeat_every=1.0) as fake:
        run = _Run(tmp_path, fake)
        await run.start()
        try:
            await run.publish(BARS)
            await run.caught_up()
            doc = await run.status()
        finally:
            await run.stop()
        log_text = run.log.read_text()
        assert "mismatch" not in log_text and "Traceback" not in log_text, log_text[-3000:]
        ids = run.sent()
        assert len(ids) >= 4 and all(i.startswith("tc") for i in ids), ids
        assert doc["broker"] == "oanda-practice" and doc["feed"]["connected"] is True
        shown = {row["symbol"]: Decimal(str(row["quantity"])) for row in doc["positions"]}
        assert {s: q for s, q in shown.items() if q} == run.held()
        run.assert_books_agree()
        booked = sorted((fid, Decimal(fee)) for fid, fee in run.store("SELECT fill_id, fee FROM fills"))
        assert booked == sorted((tx["id"], Decimal(tx["commission"])) for tx in fake.fills), \
            "every execution booked once under its transaction id, the venue's commission as its fee"
