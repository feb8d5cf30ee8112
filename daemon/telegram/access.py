"""Who may talk to the bot: an allow-list of chats for reading, a possibly smaller one for acting.

Everything else gets no answer at all (an answer would tell a stranger the
bot is alive and whose it is); it is logged and counted instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

import structlog

log = structlog.get_logger(__name__)


class Access:
    def __init__(self, chat_ids: Iterable[int], command_chat_ids: Iterable[int] | None,
                 user_ids: Iterable[int] = ()) -> None:
        self.read_chats = frozenset(chat_ids)
        self.command_chats = self.read_chats if command_chat_ids is None else frozenset(command_chat_ids)
        self.users = frozenset(user_ids)
        self.refused: Counter[str] = Counter()  # by reason: unknown_chat, unknown_user, not_for_commands

    def _user_ok(self, user_id: int | None) -> bool:
        return not self.users or (user_id is not None and user_id in self.users)

    def may_read(self, chat_id: int | None, user_id: int | None) -> bool:
        if chat_id is None or chat_id not in self.read_chats:
            return self._refuse("unknown_chat", chat_id, user_id)
        if not self._user_ok(user_id):
            return self._refuse("unknown_user", chat_id, user_id)
        return True

    def may_act(self, chat_id: int | None, user_id: int | None) -> bool:
        """State-changing commands (pause, resume, flatten)."""
        if chat_id is None or chat_id not in self.command_chats or not self._user_ok(user_id):
            return self._refuse("not_for_commands", chat_id, user_id)
        return True

    def _refuse(self, reason: str, chat_id: int | None, user_id: int | None) -> bool:
        self.refused[reason] += 1
        log.warning("telegram update refused", reason=reason, chat_id=chat_id, user_id=user_id)
        return False
