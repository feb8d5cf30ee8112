"""Telegram's parts without the network: access, alert texts and coalescing, the daily time, and the outbox
(real SQLite store, a scripted send function standing in for the bot)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from telegram.error import BadRequest, NetworkError, RetryAfter

from daemon.events import Event
from daemon.store import Store
from daemon.telegram.access import Access
from daemon.telegram.alerts import Coalescer, format_event
from daemon.telegram.outbox import Outbox, OutboxSettings
from daemon.telegram.service import next_daily_summary


def test_access_reads_from_listed_chats_and_acts_only_from_the_smaller_list() -> None:
    access = Access([1, 2], [1], user_ids=[])
    assert access.may_read(1, 9) and access.may_read(2, 9)
    assert not access.may_read(3, 9) and not access.may_read(None, None)
    assert access.may_act(1, 9) and not access.may_act(2, 9) and not access.may_act(3, 9)
    assert access.refused == {"unknown_chat": 2, "not_for_commands": 2}
    users = Access([1], None, user_ids=[7])
    assert users.may_act(1, 7) and not users.may_act(1, 8) and not users.may_read(1, None)


def test_alert_texts_and_what_is_not_alerted() -> None:
    assert format_event(Event("exit", "EURUSD closed, P&L 12.5")) == "📤 exit: EURUSD closed, P&L 12.5"
    assert format_event(Event("reconciliation_mismatch", "trading halted: x")) == (
        "⚖️ reconciliation mismatch: trading halted: x")
    assert format_event(Event("risk_block", "too big")) == "🚫 risk block: too big"
    assert format_event(Event("something_internal", "x")) is None
    assert len(format_event(Event("error", "y" * 5000)) or "") == 600


def test_denials_are_coalesced_per_layer_and_reason_per_interval() -> None:
    c = Coalescer(60)

    def denial(layer: str, reason: str) -> Event:
        return Event("risk_block", f"{layer} says no", {"layer": layer, "reason": reason})

    assert c.offer(denial("exposure", "max"), 0)
    assert not c.offer(denial("exposure", "max"), 1) and not c.offer(denial("exposure", "max"), 2)
    assert c.offer(denial("drawdown", "tier1"), 3), "another reason is not folded into the first"
    assert c.due(30) == []
    summaries = c.due(61)
    assert len(summaries) == 1 and "exposure/max: 2 more denials" in summaries[0]
    assert c.offer(denial("exposure", "max"), 62), "a new window lets the next one through at once"


def test_daily_summary_time_is_local_and_always_in_the_future() -> None:
    berlin = ZoneInfo("Europe/Berlin")
    assert next_daily_summary(datetime(2026, 3, 1, 20, 0, tzinfo=berlin), "21:00") == datetime(
        2026, 3, 1, 21, 0, tzinfo=berlin)
    assert next_daily_summary(datetime(2026, 3, 1, 21, 0, tzinfo=berlin), "21:00") == datetime(
        2026, 3, 2, 21, 0, tzinfo=berlin)
    assert next_daily_summary(datetime(2026, 3, 1, 8, 0, tzinfo=berlin), None) is None


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    s = await Store.open(tmp_path / "t.db", synchronous="normal")
    try:
        yield s
    finally:
        await s.close()


class _Bot:
    """Records what was sent; ``script`` lists exceptions to raise on the next sends (None = succeed)."""

    def __init__(self) -> None:
        self.sent: list[tuple[int, str]] = []
        self.script: list[Exception | None] = []

    async def send(self, chat: int, text: str) -> None:
        if self.script:
            exc = self.script.pop(0)
            if exc is not None:
                raise exc
        self.sent.append((chat, text))


def _outbox(store: Store, bot: _Bot, chats: list[int], **settings: float) -> Outbox:
    values = {"limit": 100, "summary_after": 50, "send_interval": 0.0, "bot_send_interval": 0.0, "retry_seconds": 0.01,
              **settings}
    return Outbox(store, bot.send, chats, OutboxSettings(**values))  # type: ignore[arg-type]


async def test_outbox_delivers_in_order_once_per_chat_through_failures(store: Store) -> None:
    bot = _Bot()
    outbox = _outbox(store, bot, [1, 2])
    for i in range(4):
        outbox.put(f"k{i}", "exit", f"alert {i}")
    outbox.put("k0", "exit", "alert 0 again")  # the same key: queued once
    # alert 0: chat 1 ok, chat 2 fails (network); then a 429, then a permanent refusal for chat 1 of alert 1
    bot.script = [None, NetworkError("down")]
    assert not await (_persist_and_deliver(outbox))
    assert bot.sent == [(1, "alert 0")]
    bot.script = [RetryAfter(0), None, BadRequest("chat not found"), None]
    assert await _persist_and_deliver(outbox)
    assert bot.sent == [(1, "alert 0"), (2, "alert 0"), (2, "alert 1"), (1, "alert 2"), (2, "alert 2"),
                        (1, "alert 3"), (2, "alert 3")]
    assert outbox.counts["retry_after"] == 1 and outbox.counts["refused"] == 1
    assert await store.alert_status_counts() == {"sent": 4}
    assert outbox.depth == 0


async def test_outbox_depth_counts_what_waits_in_memory_and_in_the_store(store: Store) -> None:
    bot = _Bot()
    outbox = _outbox(store, bot, [1])
    for i in range(3):
        outbox.put(f"d{i}", "exit", f"alert {i}")
    assert outbox.depth == 3, "queued in memory"
    bot.script = [None, NetworkError("down")]
    assert not await _persist_and_deliver(outbox)
    assert outbox.depth == 2 == await store.pending_alert_count(), "one sent, two pending in the store"


async def _persist_and_deliver(outbox: Outbox) -> bool:
    await outbox.persist()
    return await outbox.deliver()


async def test_outbox_is_bounded_and_folds_a_backlog_into_one_summary(store: Store) -> None:
    bot = _Bot()
    outbox = _outbox(store, bot, [1], limit=10, summary_after=4)
    for i in range(15):
        outbox.put(f"k{i}", "entry" if i % 2 else "exit", f"alert {i}")
        if i in (7, 14):
            await outbox.persist()
    counts = await store.alert_status_counts()
    assert counts == {"pending": 10, "dropped": 5}, "the oldest beyond the bound are dropped and counted"
    assert await outbox.deliver()
    texts = [t for _, t in bot.sent]
    assert texts[0].startswith("📦 8 alerts") and "4 entry" in texts[0] and "4 exit" in texts[0]
    assert texts[1:] == ["alert 13", "alert 14"]
    assert await store.alert_status_counts() == {"dropped": 5, "summarised": 7, "sent": 3}


async def test_the_memory_queue_is_bounded_too(store: Store) -> None:
    outbox = _outbox(store, _Bot(), [1], limit=10)
    for i in range(13):
        outbox.put(f"k{i}", "exit", f"alert {i}")
    await outbox.persist()
    assert outbox.counts["dropped_in_memory"] == 3
    assert [a.text for a in await store.pending_alerts(20)] == [f"alert {i}" for i in range(3, 13)]


async def test_alerts_left_pending_are_delivered_by_the_next_process(tmp_path: Path) -> None:
    first = await Store.open(tmp_path / "t.db", synchronous="normal")
    bot = _Bot()
    outbox = _outbox(first, bot, [1])
    outbox.put("a", "exit", "before the restart")
    bot.script = [NetworkError("down")]
    assert not await _persist_and_deliver(outbox)
    await first.close()
    second = await Store.open(tmp_path / "t.db", synchronous="normal")
    try:
        assert await _outbox(second, bot, [1]).deliver()
    finally:
        await second.close()
    assert bot.sent == [(1, "before the restart")]
