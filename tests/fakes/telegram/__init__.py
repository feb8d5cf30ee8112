"""A fake Telegram Bot API for driving the real python-telegram-bot client in tests."""

from tests.fakes.telegram.server import FakeBotApi, SentMessage

__all__ = ["FakeBotApi", "SentMessage"]
