"""Telegram: alerts to the operator's chats and commands from them, inside the daemon's event loop.

* ``access`` — who may read and who may change the trading state.
* ``alerts`` — daemon events as short phone-readable texts; risk denials coalesced.
* ``outbox`` — alerts persisted before delivery, delivered in order at least once.
* ``commands`` — /status, /pause, /flatten ... over the daemon's own controls.
* ``updates`` — getUpdates that a malformed update cannot jam.
* ``service`` — python-telegram-bot's lifecycle (no ``run_polling``: our loop is the daemon's).
"""

from daemon.telegram.service import TelegramService

__all__ = ["TelegramService"]
