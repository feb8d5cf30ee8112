"""The Telegram bot's lifecycle inside the daemon's event loop, and its wiring to the daemon's events.

python-telegram-bot is driven by hand (``initialize``, ``start``,
``updater.start_polling``; never ``run_polling``, which owns a loop of its
own). Nothing here can hold up trading: the event listener only appends to
the outbox's memory queue; connecting, polling, persisting and sending run
in their own tasks and retry quietly while Telegram is unreachable (trading
starts whether or not Telegram answers). The token comes from the
environment only and is never logged: httpx, which logs request URLs (the
token is part of the path), is held at WARNING.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import structlog
from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, ApplicationHandlerStop, ContextTypes, TypeHandler

from brokers.errors import ConfigError
from daemon.config import TelegramConfig
from daemon.events import Event
from daemon.telegram import replies
from daemon.telegram.access import Access
from daemon.telegram.alerts import Coalescer, format_event, is_repeating
from daemon.telegram.commands import Commands
from daemon.telegram.outbox import Outbox, OutboxSettings
from daemon.telegram.updates import QuarantiningRequest

if TYPE_CHECKING:
    from daemon.app import Daemon

log = structlog.get_logger(__name__)

# httpx logs each request's URL and the URL holds the token; python-telegram-bot logs its base URLs (with the
# token) at DEBUG, and every poll too: both are held above that, and the bot's own loggers redact the token.
for _noisy in ("httpx", "httpcore"):
    logging.getLogger(_noisy).setLevel(logging.WARNING)
logging.getLogger("telegram").setLevel(logging.INFO)
_BOT_LOGGERS = ("telegram.Bot", "telegram.ext.ExtBot", "telegram.ext.Updater", "telegram.ext.Application")


class _Redact(logging.Filter):
    """Cuts the token out of a record (a filter on the loggers python-telegram-bot uses for the bot)."""

    def __init__(self, token: str) -> None:
        super().__init__()
        self._token = token

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if self._token in text:
            record.msg, record.args = text.replace(self._token, "<token>"), None
        return True

_TICK_SECONDS = 1.0  # coalesced denials and the daily summary are looked at this often
_STOP_FLUSH_SECONDS = 3.0  # at stop, how long connecting and delivering may take before alerts wait for the next run


class TelegramService:
    def __init__(self, daemon: Daemon, config: TelegramConfig) -> None:
        if config.token is None:
            raise ConfigError("telegram.enabled needs a bot token: set TRADECTL_TELEGRAM__TOKEN")
        self._daemon = daemon
        self._config = config
        self._token = config.token.get_secret_value()
        self._redact = _Redact(self._token)
        for name in _BOT_LOGGERS:
            logging.getLogger(name).addFilter(self._redact)
        self.access = Access(config.chat_ids, config.command_chat_ids, config.user_ids)
        self.app: Application[Any, Any, Any, Any, Any, Any] = (
            ApplicationBuilder()
            .token(self._token)
            .base_url(config.base_url)
            .connect_timeout(5).read_timeout(10).write_timeout(10).pool_timeout(5)
            .get_updates_request(QuarantiningRequest(
                connection_pool_size=1, read_timeout=config.poll_timeout_seconds + 10, write_timeout=10,
                connect_timeout=5, pool_timeout=5,
            ))
            .build()
        )
        self.app.add_handler(TypeHandler(Update, self._guard), group=-1)
        for handler in Commands(daemon, self.access, confirm_seconds=config.confirm_seconds).handlers():
            self.app.add_handler(handler)
        self.app.add_error_handler(self._on_error)
        self.outbox = Outbox(daemon.store, self._send, config.chat_ids, OutboxSettings(
            limit=config.outbox_limit, summary_after=config.backlog_summary_after,
            send_interval=config.send_interval_seconds, bot_send_interval=config.bot_send_interval_seconds,
            retry_seconds=config.retry_seconds,
        ))
        self.coalescer = Coalescer(config.coalesce_seconds)
        self.malformed = 0
        self._sequence = itertools.count(1)
        self._tasks: list[asyncio.Task[None]] = []
        self._unsubscribe: Any = None
        self._connected = asyncio.Event()
        self.next_daily: datetime | None = None  # when the daily summary is due next (set by the tick task)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Listen to the daemon's events at once; connect to Telegram in the background."""
        self._unsubscribe = self._daemon.events.subscribe(self.on_event)
        self._tasks = [
            asyncio.create_task(self._connect(), name="telegram-connect"),
            asyncio.create_task(self._tick(), name="telegram-tick"),
        ]

    async def stop(self) -> None:
        """Say goodbye through the outbox, deliver what can be delivered quickly, and shut the bot down."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        doc = self._daemon.status()
        self._put("stop", f"⏹ stopping: state {doc.get('state')}, equity {doc.get('equity')},"
                          f" realised {doc.get('realized_pnl')}", f"stop:{self._daemon.store.run_id}")
        deadline = time.monotonic() + _STOP_FLUSH_SECONDS
        with contextlib.suppress(TimeoutError):  # a bot still connecting gets part of the stop budget
            await asyncio.wait_for(self._connected.wait(), _STOP_FLUSH_SECONDS)
        self.outbox.close()
        if self._connected.is_set():  # delivering: it returns after the alert in hand
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._tasks[0]), max(0.1, deadline - time.monotonic()))
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        if self._connected.is_set():
            await self.outbox.flush(max(0.1, deadline - time.monotonic()))
        else:
            await self.outbox.persist()  # kept for the next run to deliver
        await self._shutdown_bot()
        for name in _BOT_LOGGERS:
            logging.getLogger(name).removeFilter(self._redact)

    async def _connect(self) -> None:
        """initialize/start/start_polling, retried until Telegram answers; then deliver the outbox forever."""
        app = self.app
        while True:
            try:
                await app.initialize()
                break
            except TelegramError as exc:
                log.warning("telegram not reachable yet; retrying", error=self._safe(exc))
                await asyncio.sleep(self._config.retry_seconds)
        await app.start()
        while True:
            try:
                assert app.updater is not None
                await app.updater.start_polling(
                    timeout=self._config.poll_timeout_seconds, drop_pending_updates=True,
                    error_callback=self._on_poll_error,
                )
                break
            except TelegramError as exc:
                log.warning("telegram polling could not start; retrying", error=self._safe(exc))
                await asyncio.sleep(self._config.retry_seconds)
        self._connected.set()
        log.info("telegram bot connected", chats=len(self._config.chat_ids))
        await self.outbox.run()

    async def _shutdown_bot(self) -> None:
        app = self.app
        try:
            if app.updater is not None and app.updater.running:
                await app.updater.stop()
            if app.running:
                await app.stop()
            await app.shutdown()
        except Exception as exc:  # stopping must finish whatever Telegram does
            log.warning("telegram shutdown incomplete", error=self._safe(exc))

    # ------------------------------------------------------------------ alerts
    def on_event(self, event: Event) -> None:
        """The event hub's listener: decide and queue, nothing else (it runs inside a bar)."""
        if is_repeating(event) and not self.coalescer.offer(event, time.monotonic()):
            return
        text = format_event(event)
        if text is not None:
            self._put(event.kind, text)

    def _put(self, kind: str, text: str, key: str | None = None) -> None:
        self.outbox.put(key or f"{self._daemon.store.run_id}:{next(self._sequence)}:{kind}", kind, text)

    async def _tick(self) -> None:
        """Coalesced denials when their window closes; the daily summary at its local time."""
        zone = ZoneInfo(self._config.timezone)
        self.next_daily = next_daily_summary(datetime.now(zone), self._config.daily_summary_time)
        while True:
            await asyncio.sleep(_TICK_SECONDS)
            for text in self.coalescer.due(time.monotonic()):
                self._put("risk_denials", text)
            self.daily_if_due(datetime.now(zone))

    def daily_if_due(self, now: datetime) -> None:
        """Queue the daily summary once its time has come; keyed by its date, so a restart cannot repeat it."""
        due = self.next_daily
        if due is None or now < due:
            return
        self._put("daily", replies.daily(self._daemon.status()), f"daily:{due.date().isoformat()}")
        self.next_daily = next_daily_summary(now, self._config.daily_summary_time)

    async def _send(self, chat_id: int, text: str) -> object:
        return await self.app.bot.send_message(chat_id, text)

    # ------------------------------------------------------------------ updates
    async def _guard(self, update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
        """Runs before every handler: updates from chats not on the allow-list stop here, unanswered."""
        chat, user = update.effective_chat, update.effective_user
        if chat is None:
            self.malformed += 1
            log.warning("telegram update without a chat ignored", update_id=update.update_id)
            raise ApplicationHandlerStop
        if not self.access.may_read(chat.id, user.id if user else None):
            raise ApplicationHandlerStop

    async def _on_error(self, update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
        log.error("telegram handler failed", error=self._safe(context.error))

    def _on_poll_error(self, exc: TelegramError) -> None:
        log.warning("telegram polling error; retrying", error=self._safe(exc))

    def _safe(self, exc: BaseException | None) -> str:
        """An error's text for the log, with the token cut out should a library ever put a URL in it."""
        return repr(exc).replace(self._token, "<token>")


def next_daily_summary(now: datetime, at: str | None) -> datetime | None:
    """The next local ``HH:MM`` strictly after ``now`` (``now`` carries the zone), or None when switched off."""
    if at is None:
        return None
    hour, minute = (int(part) for part in at.split(":"))
    candidate = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if candidate <= now:
        candidate = (candidate + timedelta(days=1)).replace(hour=hour, minute=minute)
    return candidate
