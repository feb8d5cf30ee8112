"""`tradectl run` (the real CLI, ``daemon.cli.main``) with a test-only kill switch around the broker's submit.

Run as ``python -m tests.e2e.killable_run run --config FILE``. ``TRADECTL_KILL_AT=point:n`` SIGKILLs the
process the n-th time it reaches ``point`` (the crash test's switch, ``tests.integration.fakes.crash_runner``):

* ``after_journal`` — the order is committed in the store; the venue has not been asked;
* ``after_send`` — the venue has the order (and may fill it); the daemon has not recorded its answer.

Tests only: the daemon itself has no kill points. The hook wraps each live venue's ``submit`` (Alpaca,
OANDA, IB), which the order manager calls after the journal commit, so nothing else about the run differs.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from brokers.alpaca import AlpacaBroker
from brokers.base import OrderRequest, OrderUpdate
from brokers.ib import IbBroker
from brokers.oanda import OandaBroker
from daemon.cli import main
from tests.integration.fakes.crash_runner import KILL

Submit = Callable[[Any, str, OrderRequest], Awaitable[OrderUpdate]]


def _killable(submit: Submit) -> Submit:
    async def killable_submit(self: Any, client_order_id: str, request: OrderRequest) -> OrderUpdate:
        KILL.reached("after_journal")
        update = await submit(self, client_order_id, request)
        KILL.reached("after_send")
        return update

    return killable_submit


for _venue in (AlpacaBroker, OandaBroker, IbBroker):
    _venue.submit = _killable(_venue.submit)  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main())
