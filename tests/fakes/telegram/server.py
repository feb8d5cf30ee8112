"""A fake Telegram Bot API (aiohttp, 127.0.0.1 only) that the real python-telegram-bot client talks to.

It answers what our bot uses (getMe, deleteWebhook, long-polling
getUpdates, sendMessage, answerCallbackQuery) the way Telegram does:
``{"ok": true, "result": ...}``, errors as ``{"ok": false, "error_code",
"description"}`` with ``parameters.retry_after`` on 429. Faults are queued
per method (429, 5xx, a dropped connection) and the whole server can go
away and come back on the same port, so tests can show what an outage does.
A fault is served before the request is processed: a failed sendMessage was
never delivered, so a duplicate in ``sent`` is our bug, not the fake's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from aiohttp import web

BOT_USER = {"id": 4242, "is_bot": True, "first_name": "tradectl", "username": "tradectl_test_bot"}


@dataclass(frozen=True)
class SentMessage:
    chat_id: int
    text: str
    reply_markup: dict[str, Any] | None


@dataclass(frozen=True)
class _Fault:
    status: int  # 429, 5xx, or 0 = drop the connection
    retry_after: int = 0


class FakeBotApi:
    def __init__(self, token: str) -> None:
        self.token = token
        self.sent: list[SentMessage] = []
        self.answered_callbacks: list[str] = []
        self.calls: list[str] = []
        self.faults: dict[str, deque[_Fault]] = {}
        self._updates: list[dict[str, Any]] = []
        self._new_update = asyncio.Condition()
        self._update_ids = itertools.count(1)
        self._message_ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._site: web.TCPSite | None = None
        self.port = 0

    # ------------------------------------------------------------------ lifecycle
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/bot"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/bot{token}/{method}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)  # its log line holds the token
        await self._runner.setup()
        self._site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await self._site.start()
        if not self.port:
            server = self._site._server
            assert server is not None
            self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def __aenter__(self) -> FakeBotApi:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def go_away(self) -> None:
        """Close every connection and stop listening: connections are refused until ``come_back``."""
        await self.close()

    async def come_back(self) -> None:
        """Listen again on the same port."""
        await self.start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._site = None

    # ------------------------------------------------------------------ test controls
    def fail(self, method: str, status: int, times: int = 1, retry_after: int = 0) -> None:
        """The next ``times`` calls of ``method`` fail with ``status`` (0 = the connection is dropped)."""
        self.faults.setdefault(method, deque()).extend(_Fault(status, retry_after) for _ in range(times))

    async def send_command(self, chat_id: int, text: str, *, user_id: int | None = None) -> None:
        """A user writes ``text`` (a /command) in ``chat_id``."""
        command = text.split()[0]
        entities = [{"type": "bot_command", "offset": 0, "length": len(command)}] if command.startswith("/") else []
        await self.push_update({"message": {**self._message(chat_id, text, user_id), "entities": entities}})

    async def press_button(self, chat_id: int, data: str, *, user_id: int | None = None) -> str:
        """A user presses an inline button whose callback data is ``data``; returns the query id."""
        query_id = f"cq{next(self._update_ids)}"
        await self.push_update({"callback_query": {
            "id": query_id, "from": self._user(user_id or chat_id), "chat_instance": str(chat_id),
            "data": data, "message": self._message(chat_id, "(button)", 4242),
        }})
        return query_id

    async def push_update(self, body: dict[str, Any]) -> None:
        async with self._new_update:
            self._updates.append({"update_id": next(self._update_ids), **body})
            self._new_update.notify_all()

    def texts(self, chat_id: int | None = None) -> list[str]:
        return [m.text for m in self.sent if chat_id is None or m.chat_id == chat_id]

    # ------------------------------------------------------------------ the API
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        method = request.match_info["method"]
        self.calls.append(method)
        if request.match_info["token"] != self.token:
            return _error(401, "Unauthorized")
        queue = self.faults.get(method)
        if queue:
            fault = queue.popleft()
            if fault.status == 0:
                assert request.transport is not None
                request.transport.close()  # the connection dies mid-request
                return web.Response()
            if fault.status == 429:
                return _error(429, f"Too Many Requests: retry after {fault.retry_after}",
                              {"retry_after": fault.retry_after})
            return _error(fault.status, "Internal Server Error")
        try:
            params = await _params(request)
        except ConnectionResetError:  # the client went away (a poll cut short at shutdown)
            return web.Response()
        handler = getattr(self, f"_m_{method}", None)
        if handler is None:
            return _error(404, "Not Found")
        return web.json_response({"ok": True, "result": await handler(params)})

    async def _m_getMe(self, params: dict[str, Any]) -> Any:
        return BOT_USER

    async def _m_deleteWebhook(self, params: dict[str, Any]) -> Any:
        return True

    async def _m_getUpdates(self, params: dict[str, Any]) -> Any:
        offset = int(params.get("offset") or 0)
        timeout = float(params.get("timeout") or 0)
        async with self._new_update:
            self._updates = [u for u in self._updates if u["update_id"] >= offset]
            if not self._updates and timeout > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._new_update.wait(), timeout)
            return list(self._updates)

    async def _m_sendMessage(self, params: dict[str, Any]) -> Any:
        chat_id = int(params["chat_id"])
        markup = params.get("reply_markup")
        if isinstance(markup, str):
            markup = json.loads(markup)
        self.sent.append(SentMessage(chat_id, str(params["text"]), markup))
        return {**self._message(chat_id, str(params["text"]), BOT_USER["id"]), "from": BOT_USER}

    async def _m_answerCallbackQuery(self, params: dict[str, Any]) -> Any:
        self.answered_callbacks.append(str(params["callback_query_id"]))
        return True

    # ------------------------------------------------------------------ objects
    def _message(self, chat_id: int, text: str, user_id: int | None) -> dict[str, Any]:
        return {
            "message_id": next(self._message_ids), "date": int(time.time()),
            "chat": {"id": chat_id, "type": "private" if chat_id > 0 else "group", "title": "t"},
            "from": self._user(user_id or chat_id), "text": text,
        }

    @staticmethod
    def _user(user_id: int) -> dict[str, Any]:
        return {"id": user_id, "is_bot": user_id == BOT_USER["id"], "first_name": f"u{user_id}"}


async def _params(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        body = await request.json()
        return dict(body) if isinstance(body, dict) else {}
    return dict(await request.post())


def _error(code: int, description: str, parameters: dict[str, Any] | None = None) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": code, "description": description}
    if parameters:
        body["parameters"] = parameters
    return web.json_response(body, status=code)
