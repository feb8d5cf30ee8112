"""The alert outbox: every alert is in SQLite before delivery is tried, and leaves it only once delivered.

Never in trading's way: ``put`` is a synchronous append to a bounded
in-memory queue (the event hub's listener calls it mid-bar); one task writes
the queue to the store and delivers pending alerts in order, one chat after
another, at most one message per chat per ``send_interval``, honouring
Telegram's ``retry_after``. A failed send leaves the alert pending (retried
after ``retry_seconds``; the chats that already have it are remembered, so
nobody gets it twice). After an outage a backlog longer than
``summary_after`` is folded: the oldest become one summary line, the newest
are sent as they are. Delivery is at least once; a duplicate can only come
from a send whose answer was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import warnings
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import structlog
from telegram.error import BadRequest, Forbidden, InvalidToken, RetryAfter, TelegramError
from telegram.warnings import PTBDeprecationWarning

from daemon.store import OutboxAlert, Store

log = structlog.get_logger(__name__)

Send = Callable[[int, str], Awaitable[object]]


@dataclass(frozen=True)
class OutboxSettings:
    limit: int = 1000
    summary_after: int = 10
    send_interval: float = 1.0  # per chat: Telegram allows about one message a second
    bot_send_interval: float = 1 / 30  # across all chats: about 30 a second per bot
    retry_seconds: float = 5.0


class Outbox:
    def __init__(self, store: Store, send: Send, chat_ids: Sequence[int], settings: OutboxSettings) -> None:
        self._store = store
        self._send = send
        self._chats = tuple(chat_ids)
        self._settings = settings
        self._queued: deque[tuple[str, str, str, float]] = deque()
        self._wake = asyncio.Event()
        self._last_sent: dict[int, float] = {}
        self._last_any = -1e9  # the last send to any chat: Telegram allows about 30 messages a second per bot
        self.pending_in_store = 0  # as of the last delivery round
        self.counts: Counter[str] = Counter()  # queued, dropped_in_memory, sent, failed_sends, summarised, ...
        self.connected = True
        self._closing = False

    # ------------------------------------------------------------------ producing (synchronous, never blocks)
    def put(self, dedup_key: str, kind: str, text: str) -> None:
        if not self._chats:
            return
        if len(self._queued) >= self._settings.limit:
            self._queued.popleft()
            self.counts["dropped_in_memory"] += 1
        self._queued.append((dedup_key, kind, text, time.time()))
        self.counts["queued"] += 1
        self._wake.set()

    @property
    def depth(self) -> int:
        """Alerts not yet delivered: queued in memory plus pending in the store (as last counted)."""
        return len(self._queued) + self.pending_in_store

    # ------------------------------------------------------------------ the delivery task
    async def run(self) -> None:
        """Persist and deliver until ``close`` (or cancelled); errors are logged and retried, never raised."""
        while not self._closing:
            self._wake.clear()
            try:
                await self.persist()
                delivered_all = await self.deliver()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store or library surprise: log, wait, try again
                log.error("alert delivery failed", error=repr(exc))
                delivered_all = False
            if delivered_all:
                await self._wake.wait()
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.retry_seconds)

    async def persist(self) -> None:
        """Write what ``put`` queued to the store (in order)."""
        while self._queued:
            key, kind, text, created = self._queued[0]
            await self._store.enqueue_alert(key, kind, text, created, limit=self._settings.limit)
            self._queued.popleft()

    async def deliver(self) -> bool:
        """Send pending alerts in order; True when none is left, False at the first failure."""
        await self._fold_backlog()
        while True:
            batch = await self._store.pending_alerts(50)
            if not batch:
                return True
            for alert in batch:
                if self._closing or not await self._deliver_one(alert):
                    return False

    def close(self) -> None:
        """Ask ``run`` to return after the alert in hand: cancelling it between a send and its mark would
        send that alert twice."""
        self._closing = True
        self._wake.set()

    async def flush(self, within: float) -> bool:
        """Persist, then try to deliver for at most ``within`` seconds (the daemon is stopping; ``run`` is done)."""
        self._closing = False
        try:
            await self.persist()
            return await asyncio.wait_for(self.deliver(), within)
        except (TimeoutError, TelegramError, OSError) as exc:
            log.warning("alerts left in the outbox at stop", error=repr(exc))
            return False

    async def _deliver_one(self, alert: OutboxAlert) -> bool:
        delivered = set(alert.delivered_to)
        for chat in self._chats:
            if chat in delivered:
                continue
            ok = await self._send_to(chat, alert.text)
            if ok is None:  # transient: keep what was delivered, try again later
                await self._store.alert_progress(alert.id, delivered)
                return False
            delivered.add(chat)
        await self._store.finish_alerts([alert.id], "sent", time.time())
        self.counts["sent"] += 1
        self.pending_in_store = max(0, self.pending_in_store - 1)
        return True

    async def _send_to(self, chat: int, text: str) -> bool | None:
        """True when sent, False when Telegram refused it for good (logged), None on a transient failure."""
        while True:
            now = time.monotonic()
            wait = max(self._settings.send_interval - (now - self._last_sent.get(chat, -1e9)),
                       self._settings.bot_send_interval - (now - self._last_any))
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                await self._send(chat, text)
            except RetryAfter as exc:
                with warnings.catch_warnings():  # PTB 22 warns that the int will become a timedelta: both are read
                    warnings.simplefilter("ignore", PTBDeprecationWarning)
                    seconds = _seconds(exc.retry_after)
                self.counts["retry_after"] += 1
                log.warning("telegram asks to wait", retry_after=seconds)
                await asyncio.sleep(seconds)
                continue
            except (BadRequest, Forbidden, InvalidToken) as exc:
                self.counts["refused"] += 1
                log.error("telegram refused an alert; skipping it for this chat", chat_id=chat, error=str(exc))
                return False
            except (TelegramError, OSError) as exc:
                self.counts["failed_sends"] += 1
                self._set_connected(False, exc)
                return None
            self._last_sent[chat] = self._last_any = time.monotonic()
            self._set_connected(True, None)
            return True

    def _set_connected(self, up: bool, exc: BaseException | None) -> None:
        if up != self.connected:
            self.connected = up
            if up:
                log.info("telegram reachable again")
            else:
                log.warning("telegram unreachable; alerts wait in the outbox", error=repr(exc))

    async def _fold_backlog(self) -> None:
        """A long backlog: the oldest alerts become one summary line, the newest stay as they are."""
        settings = self._settings
        pending = self.pending_in_store = await self._store.pending_alert_count()
        if pending <= settings.summary_after:
            return
        keep = settings.summary_after // 2
        old = await self._store.pending_alerts(pending - keep)
        if len(old) < 2:
            return
        kinds = Counter(a.kind for a in old)
        first, last = _clock(old[0].created_at), _clock(old[-1].created_at)
        text = (f"📦 {len(old)} alerts from {first} to {last} UTC while Telegram was unreachable: "
                + ", ".join(f"{n} {kind}" for kind, n in kinds.most_common()))
        await self._store.summarise_alerts([a.id for a in old[:-1]], old[-1].id, text, time.time())
        self.counts["summarised"] += len(old)
        self.pending_in_store -= len(old) - 1
        log.info("alert backlog summarised", alerts=len(old), kept=keep)


def _seconds(value: int | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _clock(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%m-%d %H:%M")
