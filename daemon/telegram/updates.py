"""getUpdates with a quarantine: an update the library cannot parse is cut down to its id, not allowed to jam polling.

python-telegram-bot parses a getUpdates answer as a whole; one malformed
update fails the batch and the same batch is fetched again, forever, so no
later command would ever be answered. This request class rewrites such an
update to ``{"update_id": n}`` (logged): the batch parses, the offset moves
past it, and the guard drops the empty update as one without a chat.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from telegram import Update
from telegram.request import HTTPXRequest, RequestData

log = structlog.get_logger(__name__)


class QuarantiningRequest(HTTPXRequest):
    async def do_request(self, url: str, method: str, request_data: RequestData | None = None,
                         *args: Any, **kwargs: Any) -> tuple[int, bytes]:
        code, payload = await super().do_request(url, method, request_data, *args, **kwargs)
        if code != 200 or not url.endswith("/getUpdates"):
            return code, payload
        return code, quarantine(payload)


def quarantine(payload: bytes) -> bytes:
    """The getUpdates answer with every unparseable update reduced to its id (unchanged when all parse)."""
    try:
        doc = json.loads(payload)
        updates = doc["result"]
    except (ValueError, KeyError, TypeError):
        return payload  # not ours to judge: the library reports a broken answer itself
    if not isinstance(updates, list):
        return payload
    changed = False
    for i, update in enumerate(updates):
        try:
            Update.de_json(update, None)
        except Exception as exc:  # anything the parser trips on
            update_id = update.get("update_id") if isinstance(update, dict) else None
            if not isinstance(update_id, int):
                continue  # without an id there is nothing to skip past; the library will complain
            log.warning("malformed telegram update quarantined", update_id=update_id, error=repr(exc))
            updates[i] = {"update_id": update_id}
            changed = True
    return json.dumps(doc).encode() if changed else payload
