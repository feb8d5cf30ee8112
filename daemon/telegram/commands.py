"""The bot's commands, answered through exactly the controls the API and the CLI use.

``/pause``, ``/resume`` and ``/flatten`` call ``Daemon.pause/resume/flatten``
(the trading state they set is persisted by the daemon itself, so a pause
survives a restart whichever channel asked for it). Who may ask is decided
before a handler runs (``TelegramService``'s guard) for reading, and here
for acting. ``/flatten`` only arms; it runs after an inline button press or
``/flatten confirm`` from the same chat within ``confirm_seconds``.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog
from telegram import InlineKeyboardButton, InlineKeyboardMarkup, Update
from telegram.ext import BaseHandler, CallbackQueryHandler, CommandHandler, ContextTypes

from daemon.telegram import replies
from daemon.telegram.access import Access

if TYPE_CHECKING:
    from daemon.app import Daemon

log = structlog.get_logger(__name__)

Context = ContextTypes.DEFAULT_TYPE
_MAX_TRADES = 20


@dataclass(frozen=True)
class _Armed:
    nonce: str
    deadline: float


class Commands:
    def __init__(self, daemon: Daemon, access: Access, *, confirm_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._daemon = daemon
        self._access = access
        self._confirm_seconds = confirm_seconds
        self._clock = clock
        self._armed: dict[int, _Armed] = {}  # chat id -> the flatten it may confirm

    def handlers(self) -> list[BaseHandler[Update, Any, Any]]:
        plain = {
            "status": self.status, "positions": self.positions, "pnl": self.pnl, "trades": self.trades,
            "risk": self.risk, "pause": self.pause, "resume": self.resume, "flatten": self.flatten,
            "models": self.models, "help": self.help, "start": self.help,
        }
        out: list[BaseHandler[Update, Any, Any]] = [CommandHandler(name, fn) for name, fn in plain.items()]
        out.append(CallbackQueryHandler(self.flatten_button, pattern=r"^flatten:"))
        return out

    # ------------------------------------------------------------------ reading
    async def status(self, update: Update, context: Context) -> None:
        await _reply(update, replies.status(self._daemon.status()))

    async def positions(self, update: Update, context: Context) -> None:
        await _reply(update, replies.positions(self._daemon.status()))

    async def pnl(self, update: Update, context: Context) -> None:
        await _reply(update, replies.pnl(self._daemon.status()))

    async def trades(self, update: Update, context: Context) -> None:
        args = context.args or []
        try:
            n = int(args[0]) if args else 5
        except ValueError:
            await _reply(update, "Usage: /trades [n]")
            return
        n = max(1, min(n, _MAX_TRADES))
        await _reply(update, replies.trades(await self._daemon.store.recent_trades(n)))

    async def risk(self, update: Update, context: Context) -> None:
        await _reply(update, replies.risk(self._daemon.risk_report()))

    async def models(self, update: Update, context: Context) -> None:
        rows = await self._daemon.store.models()
        await _reply(update, replies.models(rows, self._daemon.strategy.model_sha256))

    async def help(self, update: Update, context: Context) -> None:
        await _reply(update, replies.HELP)

    # ------------------------------------------------------------------ acting
    async def pause(self, update: Update, context: Context) -> None:
        if await self._may_act(update, "pause"):
            await _reply(update, replies.state_change("Paused: no new entries", await self._daemon.pause()))

    async def resume(self, update: Update, context: Context) -> None:
        if await self._may_act(update, "resume"):
            await _reply(update, replies.state_change("Resumed", await self._daemon.resume()))

    async def flatten(self, update: Update, context: Context) -> None:
        if not await self._may_act(update, "flatten"):
            return
        chat = _chat_id(update)
        assert chat is not None  # _may_act refused updates without a chat
        args = [a.lower() for a in (context.args or [])]
        if args == ["confirm"]:
            await self._confirmed(update, chat, None)
            return
        armed = _Armed(secrets.token_hex(4), self._clock() + self._confirm_seconds)
        self._armed[chat] = armed
        button = InlineKeyboardButton("Confirm flatten", callback_data=f"flatten:{armed.nonce}")
        await _reply(update, f"Flatten closes every position. Press the button or send /flatten confirm"
                             f" within {self._confirm_seconds:.0f} s.",
                     markup=InlineKeyboardMarkup([[button]]))

    async def flatten_button(self, update: Update, context: Context) -> None:
        query = update.callback_query
        if query is None:
            return
        await query.answer()
        chat = _chat_id(update)
        if chat is None or not await self._may_act(update, "flatten"):
            return
        await self._confirmed(update, chat, (query.data or "").removeprefix("flatten:"))

    async def _confirmed(self, update: Update, chat: int, nonce: str | None) -> None:
        armed = self._armed.pop(chat, None)
        if armed is None or self._clock() > armed.deadline or (nonce is not None and nonce != armed.nonce):
            await _reply(update, "No flatten waiting for confirmation: send /flatten first.")
            return
        log.warning("flatten confirmed over telegram", chat_id=chat)
        result = await self._daemon.flatten()
        await _reply(update, f"Flatten: {len(result.get('sent', []))} closing orders,"
                             f" {len(result.get('cancelled', []))} cancelled, {len(result.get('denied', []))} denied.")

    async def _may_act(self, update: Update, command: str) -> bool:
        """Whether this chat (and user) may change the state; a chat that may only read is told so."""
        user = update.effective_user
        if self._access.may_act(_chat_id(update), user.id if user else None):
            log.info("telegram command", command=command, chat_id=_chat_id(update))
            return True
        await _reply(update, f"/{command} is not allowed from this chat.")
        return False


def _chat_id(update: Update) -> int | None:
    chat = update.effective_chat
    return chat.id if chat is not None else None


async def _reply(update: Update, text: str, *, markup: InlineKeyboardMarkup | None = None) -> None:
    message = update.effective_message
    chat = update.effective_chat
    if update.callback_query is not None and chat is not None:
        await update.callback_query.get_bot().send_message(chat.id, text, reply_markup=markup)
    elif message is not None:
        await message.reply_text(text, reply_markup=markup)
