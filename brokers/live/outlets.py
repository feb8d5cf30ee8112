"""Where a live adapter hands bars and order updates to the daemon: one rule each, for every venue.

* ``BarOutlet`` — the ``bars()`` / ``stop_bars()`` side of ``MarketData``:
  each bar time of a symbol is handed on once and only forward (a backfill
  and the live stream overlap after a reconnect), and a stop wakes the
  consumer waiting for the next bar.
* ``UpdateOutlet`` — the ``next_update()`` / ``drain_updates()`` side of
  ``Broker``: every update moves forward only (``ForwardOnly``) and the
  client ids still working are tracked (what a reconnect or a poll recovers).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from brokers.base import Bar, OrderUpdate, UpdateInbox
from brokers.live.updates import ForwardOnly

__all__ = ["BarOutlet", "UpdateOutlet"]


class BarOutlet:
    def __init__(self) -> None:
        self._queue: asyncio.Queue[Bar | None] = asyncio.Queue()
        self._stopped = False
        self.last_ts: dict[str, int] = {}
        self.last_bar: Bar | None = None
        self.delivered = 0
        self.duplicates = 0

    def put(self, bar: Bar) -> bool:
        """Hand ``bar`` on unless its time is not after the symbol's last bar; True when handed on."""
        if bar.ts <= self.last_ts.get(bar.symbol, 0):
            self.duplicates += 1
            return False
        self.last_ts[bar.symbol] = bar.ts
        self.last_bar = bar
        self.delivered += 1
        self.hand_on(bar)
        return True

    def hand_on(self, bar: Bar) -> None:
        """Queue ``bar`` for ``bars()`` without the check of ``put`` (an adapter with its own repeat rule)."""
        if not self._stopped:
            self._queue.put_nowait(bar)

    async def bars(self) -> AsyncIterator[Bar]:
        while True:
            bar = await self._queue.get()
            if bar is None:
                return
            yield bar

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put_nowait(None)


class UpdateOutlet:
    def __init__(self) -> None:
        self._inbox = UpdateInbox()
        self._forward = ForwardOnly()
        self.working: set[str] = set()  # client ids reported and not yet terminal
        self.delivered = 0

    def put(self, update: OrderUpdate) -> OrderUpdate:
        update = self._forward(update)
        if update.status.is_terminal:
            self.working.discard(update.client_order_id)
        else:
            self.working.add(update.client_order_id)
        self.delivered += 1
        self._inbox.put(update)
        return update

    async def next(self) -> OrderUpdate:
        return await self._inbox.get()

    def drain(self) -> list[OrderUpdate]:
        return self._inbox.drain()
