"""Telegram end to end: the real python-telegram-bot client against the fake Bot API, a real LiveRunner on the
simulator, a real SQLite store. Commands change (or do not change) what the daemon does; alerts arrive once,
in order, with the P&L the store holds, through a 429, dropped connections and an outage."""

from __future__ import annotations

import asyncio
import io
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from brokers.history import load_bundled
from daemon.config import TradectlConfig
from daemon.logs import configure_logging
from daemon.runners import LiveRunner
from daemon.store import Store
from risk.governor import TradingState
from tests.fakes.telegram import FakeBotApi
from tests.waiting import until

TOKEN = "123456:TEST-token-never-logged"
OPS, WATCHER, STRANGER = 111, 222, 333  # OPS may act; WATCHER may only read; STRANGER is nobody


@pytest.fixture
async def fake() -> AsyncIterator[FakeBotApi]:
    async with FakeBotApi(TOKEN) as api:
        yield api


def _config(tmp_path: Path, fake: FakeBotApi, *, pace: float, **telegram: Any) -> TradectlConfig:
    return TradectlConfig(
        api={"enabled": False},
        strategy={"kind": "sma_cross"},
        store={"path": str(tmp_path / "live.db"), "synchronous": "normal"},
        data={"pace": pace},
        telegram={
            "enabled": True, "token": TOKEN, "base_url": fake.base_url, "chat_ids": [OPS, WATCHER],
            "command_chat_ids": [OPS], "poll_timeout_seconds": 1, "send_interval_seconds": 0,
            "bot_send_interval_seconds": 0,
            "retry_seconds": 0.05, "daily_summary_time": None, "backlog_summary_after": 1000, **telegram,
        },
    )


async def _reply(fake: FakeBotApi, chat: int, send: Callable[[], Awaitable[Any]], expect: str) -> str:
    """Send, then wait for a new message to ``chat`` that contains ``expect`` (alerts may come in between)."""
    before = len(fake.texts(chat))
    await send()

    def found() -> str | None:
        return next((t for t in fake.texts(chat)[before:] if expect in t), None)

    await until(lambda: found() is not None, 10, f"a reply with {expect!r}")
    return found() or ""


async def _started(runner: LiveRunner, fake: FakeBotApi) -> asyncio.Task[Any]:
    task = asyncio.create_task(runner.run(install_signals=False))
    await until(lambda: any(t.startswith("▶️ started") for t in fake.texts(OPS)), 10, "the start alert")
    await until(lambda: "getUpdates" in fake.calls, 10, "polling")
    return task


async def test_pause_from_an_allowed_chat_stops_entries_survives_a_restart_and_resume_lifts_it(
    tmp_path: Path, fake: FakeBotApi, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    bars = load_bundled()[:3000]
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=40), bars=bars)
    daemon = runner.daemon
    kinds: list[tuple[str, int]] = []
    daemon.events.subscribe(lambda e: kinds.append((e.kind, daemon.pipeline.counts.bars)))
    trading = await _started(runner, fake)
    try:
        # nobody else: no answer, nothing changes, counted
        await fake.send_command(STRANGER, "/pause")
        await fake.send_command(STRANGER, "/status")
        # a chat that may read but not act is told so, and nothing changes
        await _reply(fake, WATCHER, lambda: fake.send_command(WATCHER, "/pause"), "not allowed")
        assert daemon.governor.state is TradingState.ACTIVE
        assert fake.texts(STRANGER) == []
        assert runner.telegram is not None and runner.telegram.access.refused["unknown_chat"] == 2
        await _reply(fake, WATCHER, lambda: fake.send_command(WATCHER, "/status"), "State: active")

        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/pause"), "Paused")
        assert daemon.governor.state is TradingState.PAUSED
        paused_at = daemon.pipeline.counts.bars
        await until(lambda: daemon.pipeline.counts.bars >= paused_at + 40, 10, "bars while paused")
        assert not [k for k, bar in kinds if k == "entry" and bar > paused_at], "no entry while paused"
        assert any(t.startswith("🚦 state") and "paused" in t for t in fake.texts(OPS))
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 15)

    # a new process on the same store: still paused, and /resume from the allowed chat lifts it
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=40), bars=bars)
    daemon = runner.daemon
    assert daemon.governor.state is TradingState.PAUSED
    trading = await _started(runner, fake)
    try:
        await _reply(fake, WATCHER, lambda: fake.send_command(WATCHER, "/resume"), "not allowed")
        await fake.send_command(STRANGER, "/resume")
        assert daemon.governor.state is TradingState.PAUSED
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/resume"), "Resumed")
        assert daemon.governor.state is TradingState.ACTIVE
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 15)
    async with _store(tmp_path) as store:
        assert await store.get_state("trading_state") == "active"
    assert fake.texts(STRANGER) == []
    logged = caplog.text + capsys.readouterr().err
    assert TOKEN not in logged and "TEST-token" not in logged


async def test_flatten_needs_its_confirmation(tmp_path: Path, fake: FakeBotApi) -> None:
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=40), bars=load_bundled()[:3000])
    daemon = runner.daemon
    trading = await _started(runner, fake)
    flattens: list[str] = []
    daemon.events.subscribe(lambda e: flattens.append(e.message) if e.kind == "flatten" else None)
    try:
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/flatten confirm"), "send /flatten first")
        await _reply(fake, WATCHER, lambda: fake.send_command(WATCHER, "/flatten"), "not allowed")
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/flatten"), "/flatten confirm within 60 s")
        assert flattens == []
        data = _button(fake, OPS)
        # the button pressed in another chat, or with a stale nonce, does nothing
        await fake.press_button(STRANGER, data)
        await _reply(fake, OPS, lambda: fake.press_button(OPS, "flatten:00000000"), "send /flatten first")
        assert flattens == []
        # armed again, and confirmed with the button
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/flatten"), "Press the button")
        query = await fake.press_button(OPS, _button(fake, OPS))
        await until(lambda: any(t.startswith("Flatten:") for t in fake.texts(OPS)), 5, "flatten done")
        await until(lambda: query in fake.answered_callbacks, 5, "the button press answered")
        await until(lambda: len(flattens) == 1, 5, "one flatten")
        # a second confirmation is refused, not repeated
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/flatten confirm"), "send /flatten first")
        # and /flatten confirm works within the window
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/flatten"), "Press the button")
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/flatten confirm"), "Flatten:")
        await until(lambda: len(flattens) == 2, 5, "the second flatten")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 15)
    assert fake.texts(STRANGER) == []


async def test_malformed_and_chatless_updates_are_logged_and_the_bot_keeps_answering(
    tmp_path: Path, fake: FakeBotApi,
) -> None:
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=40), bars=load_bundled()[:3000])
    trading = await _started(runner, fake)
    try:
        await fake.push_update({"message": {"text": "/status"}})  # no chat, no date, no id
        await fake.push_update({"poll_answer": {"poll_id": "1", "option_ids": [0], "user": {
            "id": STRANGER, "is_bot": False, "first_name": "x"}}})  # a valid update without a chat
        await fake.push_update({"message": {"message_id": 1, "date": 0, "chat": {"id": OPS, "type": "private"},
                                            "text": "/trades many", "entities": [
                                                {"type": "bot_command", "offset": 0, "length": 7}]}})
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/trades 3"), "closed trades")
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/help"), "/flatten")
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/risk"), "State: active")
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/models"), "rule-based")
        assert "Usage: /trades [n]" in fake.texts(OPS)
        assert runner.telegram is not None and runner.telegram.malformed >= 1
        assert runner.daemon.governor.state is TradingState.ACTIVE
    finally:
        runner.daemon.request_stop()
        await asyncio.wait_for(trading, 15)
    assert fake.texts(STRANGER) == []


async def test_repeated_risk_denials_arrive_as_one_message_and_a_count(tmp_path: Path, fake: FakeBotApi) -> None:
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=40, coalesce_seconds=0.3), bars=load_bundled()[:3000])
    trading = await _started(runner, fake)
    try:
        for _ in range(5):
            runner.daemon.events.publish("risk_block", "exposure over limit", {"layer": "exposure", "reason": "max"})
        runner.daemon.events.publish("risk_block", "daily loss", {"layer": "daily_loss", "reason": "limit"})
        await until(lambda: any("4 more denials" in t for t in fake.texts(OPS)), 5, "the count")
    finally:
        runner.daemon.request_stop()
        await asyncio.wait_for(trading, 15)
    denials = [t for t in fake.texts(OPS) if t.startswith("🚫")]
    assert denials[:2] == ["🚫 risk block: exposure over limit", "🚫 risk block: daily loss"]
    assert len(denials) == 3 and "exposure/max: 4 more denials" in denials[2]


async def test_the_daily_summary_is_sent_once_per_date(tmp_path: Path, fake: FakeBotApi) -> None:
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=40, daily_summary_time="21:00",
                                           timezone="Europe/Berlin"), bars=load_bundled()[:3000])
    trading = await _started(runner, fake)
    service = runner.telegram
    assert service is not None
    try:
        await until(lambda: service.next_daily is not None, 5, "the tick task")
        due = service.next_daily
        assert due is not None and (due.hour, due.minute) == (21, 0) and str(due.tzinfo) == "Europe/Berlin"
        service.daily_if_due(due - timedelta(seconds=1))
        service.daily_if_due(due)
        await until(lambda: any(t.startswith("📊 Daily summary") for t in fake.texts(OPS)), 5, "the summary")
        service.next_daily = due  # as if a restarted daemon reached the same date's summary again
        service.daily_if_due(due + timedelta(minutes=1))
    finally:
        runner.daemon.request_stop()
        await asyncio.wait_for(trading, 15)  # the stop delivers whatever is still queued
    assert fake.texts(OPS)[-1].startswith("⏹ stopping")
    assert len([t for t in fake.texts(OPS) if t.startswith("📊")]) == 1, "one summary for the date"


async def test_entry_and_exit_alerts_carry_the_pnl_the_store_holds(tmp_path: Path, fake: FakeBotApi) -> None:
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=0), bars=load_bundled()[:600])
    await asyncio.wait_for(runner.run(install_signals=False), 30)
    async with _store(tmp_path) as store:
        trades = list(reversed(await store.recent_trades(1000)))
        orders = await store.query("SELECT COUNT(*) FROM orders")
        counts = await store.alert_status_counts()
    assert len(trades) >= 3, "the SMA cross trades in 600 bars"
    for chat in (OPS, WATCHER):
        texts = fake.texts(chat)
        exits = [re.search(r"P&L (\S+)$", t).group(1) for t in texts if t.startswith("📤 exit")]  # type: ignore[union-attr]
        assert exits == [str(t.pnl) for t in trades]
        entries = [t for t in texts if t.startswith("📥 order")]
        assert 0 < len(entries) <= orders[0][0]
        assert texts[0].startswith("▶️ started") and texts[-1].startswith("⏹ stopping")
    assert counts == {"sent": counts["sent"]}, "every alert delivered, none pending or dropped"


async def test_429_drops_and_an_outage_lose_nothing_duplicate_nothing_and_trading_goes_on(
    tmp_path: Path, fake: FakeBotApi,
) -> None:
    fake.fail("sendMessage", 429, retry_after=1)
    fake.fail("sendMessage", 0, times=2)  # then two dropped connections
    fake.fail("sendMessage", 502)
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=100), bars=load_bundled()[:1500])
    daemon = runner.daemon
    trading = asyncio.create_task(runner.run(install_signals=False))
    try:
        await until(lambda: any(t.startswith("▶️ started") for t in fake.texts(WATCHER)), 15, "start alert")
        assert fake.texts(OPS).count(fake.texts(OPS)[0]) == 1
        await fake.go_away()
        bars_before = daemon.pipeline.counts.bars
        queued_before = runner.telegram.outbox.counts["queued"]  # type: ignore[union-attr]
        await asyncio.sleep(2.0)
        assert daemon.pipeline.counts.bars >= bars_before + 100, "trading goes on while Telegram is away"
        assert runner.telegram.outbox.counts["queued"] > queued_before  # type: ignore[union-attr]
        assert not runner.telegram.outbox.connected  # type: ignore[union-attr]
        await fake.come_back()
        outbox = runner.telegram.outbox  # type: ignore[union-attr]
        await until(lambda: outbox.connected and outbox.counts["sent"] == outbox.counts["queued"], 10, "caught up")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 15)
    async with _store(tmp_path) as store:
        rows = await store.query("SELECT id, text, status FROM alert_outbox ORDER BY id")
    assert rows and all(status == "sent" for _, _, status in rows)
    for chat in (OPS, WATCHER):
        assert fake.texts(chat) == [text for _, text, _ in rows], "each alert once, in order"
    assert not fake.faults["sendMessage"], "the 429, both dropped connections and the 502 were all met"
    assert runner.telegram.outbox.counts["retry_after"] == 1  # type: ignore[union-attr]
    assert runner.daemon.lag.snapshot()["max"] < 250


async def test_a_long_backlog_is_summarised_not_flooded(tmp_path: Path, fake: FakeBotApi) -> None:
    await fake.go_away()  # a whole run without Telegram: its alerts wait in the store
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=0), bars=load_bundled()[:800])
    await asyncio.wait_for(runner.run(install_signals=False), 30)
    async with _store(tmp_path) as store:
        waiting = await store.pending_alert_count()
    assert waiting > 12 and fake.sent == []
    await fake.come_back()
    runner = await LiveRunner.open(_config(tmp_path, fake, pace=20, backlog_summary_after=6),
                                   bars=load_bundled()[:400])
    task = asyncio.create_task(runner.run(install_signals=False))
    try:
        await until(lambda: any(t.startswith("▶️ started") for t in fake.texts(OPS)), 10, "the new start alert")
    finally:
        runner.daemon.request_stop()
        await asyncio.wait_for(task, 15)
    async with _store(tmp_path) as store:
        counts = await store.alert_status_counts()
    texts = fake.texts(OPS)
    assert counts.get("pending", 0) == 0 and counts["summarised"] >= waiting - 3
    assert texts[0].startswith(f"📦 {counts['summarised'] + 1} alerts"), texts[0]  # the folded + their carrier
    assert len(texts) < 10, "a summary and the newest few, not the whole backlog"
    assert texts[-1].startswith("⏹ stopping")


def _button(fake: FakeBotApi, chat: int) -> str:
    """The callback data of the last inline button sent to ``chat``."""
    markup = next(m.reply_markup for m in reversed(fake.sent) if m.chat_id == chat and m.reply_markup)
    assert markup is not None
    return str(markup["inline_keyboard"][0][0]["callback_data"])


def _store(tmp_path: Path) -> Any:
    class _Open:
        async def __aenter__(self) -> Store:
            self.store = await Store.open(tmp_path / "live.db", synchronous="normal")
            return self.store

        async def __aexit__(self, *exc: object) -> None:
            await self.store.close()

    return _Open()


@pytest.mark.usefixtures("restore_logging")
async def test_an_error_logged_while_the_store_is_locked_reaches_the_operator_once_it_can(
    tmp_path: Path, fake: FakeBotApi,
) -> None:
    """Another process holds SQLite's write lock for 6.5 s: the health monitor's store probe (every 0.5 s here)
    fails after its 5 s wait and logs an error; the error becomes an alert, which waits for the store like every
    alert, then arrives. (Logging is set up as `tradectl run` sets it up: errors reach the alert channel through
    the standard library.)"""
    configure_logging(stream=io.StringIO(), json=True)
    config = _config(tmp_path, fake, pace=20, coalesce_seconds=60)
    config.health.store_probe_seconds = 0.5
    runner = await LiveRunner.open(config, bars=load_bundled()[:3000])
    daemon = runner.daemon
    trading = await _started(runner, fake)
    try:
        await _reply(fake, OPS, lambda: fake.send_command(OPS, "/pause"), "Paused")  # no entry journaled meanwhile
        other = sqlite3.connect(str(tmp_path / "live.db"), isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            await asyncio.sleep(6.5)
        finally:
            other.execute("ROLLBACK")
            other.close()
        await until(lambda: any(t.startswith("❗ error") for t in fake.texts(OPS)), 15, "the error alert")
        bars = daemon.pipeline.counts.bars
        await until(lambda: daemon.pipeline.counts.bars > bars + 20, 10, "trading goes on")
    finally:
        daemon.request_stop()
        await asyncio.wait_for(trading, 15)
    errors = [t for t in fake.texts(OPS) if t.startswith("❗ error")]
    assert errors[0] == "❗ error: store write probe failed (error=database is locked)", errors
    assert fake.texts(WATCHER).count(errors[0]) == 1
