"""One logging pipeline for the whole process.

Our own code logs through structlog; aiohttp, asyncio and ``warnings`` log
through the standard library. Both end in the same handler and formatter, so
an operator reads one format (JSON lines for machines, coloured console for a
terminal) and every line carries the same level, timestamp and redaction.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, TextIO

import structlog
from structlog.types import EventDict, Processor, WrappedLogger

from brokers.errors import ConfigError

__all__ = ["REDACTED", "SECRET_KEY_PARTS", "configure_logging", "redact_secrets"]

REDACTED = "***"

# A key containing any of these (case-insensitive) never reaches a log line with
# its value. "authorization" is here because an HTTP header dict is the easiest
# way to leak the API bearer token into a log.
SECRET_KEY_PARTS: tuple[str, ...] = ("token", "secret", "password", "key_id", "authorization")

_LEVELS = ("debug", "info", "warning", "error", "critical")

# Marks the root handler we install so a second call replaces it instead of
# stacking a duplicate (every line twice) next to it.
_HANDLER_MARK = "_tradectl_handler"


def _is_secret_key(key: object) -> bool:
    lowered = str(key).lower()
    return any(part in lowered for part in SECRET_KEY_PARTS)


def _redact(value: Any) -> Any:
    """Nested mappings are redacted too: a config or header dict is logged whole."""
    if isinstance(value, Mapping):
        return {k: REDACTED if _is_secret_key(k) else _redact(v) for k, v in value.items()}
    return value


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Processor: replace the value of every secret-looking key with ``***``."""
    for key, value in event_dict.items():
        if key == "event":
            continue
        event_dict[key] = REDACTED if _is_secret_key(key) else _redact(value)
    return event_dict


def _json_default(obj: object) -> object:
    """Decimals stay exact (as strings) instead of the repr structlog would fall back to."""
    if isinstance(obj, Decimal):
        return str(obj)
    if isinstance(obj, datetime | date):
        return obj.isoformat()
    if isinstance(obj, Enum):
        return obj.value
    return repr(obj)


def _shared_processors() -> list[Processor]:
    """Applied to structlog events and stdlib records alike, before rendering."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]


def _render_processors(as_json: bool, colors: bool) -> list[Processor]:
    """The console renderer pretty-prints exceptions itself; JSON needs them as text first."""
    if as_json:
        return [
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(default=_json_default),
        ]
    return [structlog.dev.ConsoleRenderer(colors=colors)]


class _LevelCheckedLogger(structlog.stdlib.BoundLogger):
    """A stdlib ``BoundLogger`` that asks the stdlib logger's level first.

    ``filter_by_level`` drops a disabled event only after structlog has copied
    the context and raised and caught ``DropEvent``: about 5 µs, paid on the
    order path for every debug/info line a production level discards. The
    stdlib's ``isEnabledFor`` is cached and honours reconfiguration.
    """

    def debug(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.DEBUG):
            return None
        return super().debug(event, *args, **kw)

    def info(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.INFO):
            return None
        return super().info(event, *args, **kw)

    def warning(self, event: str | None = None, *args: Any, **kw: Any) -> Any:
        if not self._logger.isEnabledFor(logging.WARNING):
            return None
        return super().warning(event, *args, **kw)


def _is_tty(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def _level_number(level: str) -> int:
    name = level.strip().lower()
    if name not in _LEVELS:
        raise ConfigError(f"logging.level: unknown level {level!r}; use one of {', '.join(_LEVELS)}")
    return logging.getLevelNamesMapping()[name.upper()]


def _install_root_handler(handler: logging.Handler, level: int) -> None:
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
        old.close()
    setattr(handler, _HANDLER_MARK, True)
    root.addHandler(handler)
    root.setLevel(level)


def configure_logging(level: str = "info", json: bool | None = None, stream: TextIO | None = None) -> None:
    """Set up structlog and stdlib logging to write one format to ``stream``.

    ``json=None`` chooses by the stream: a terminal gets the console renderer,
    anything else (journald, Fly's log shipper, a file) gets JSON lines.
    Calling it again replaces the previous set-up, so tests and the CLI can
    reconfigure freely.
    """
    stream = sys.stderr if stream is None else stream
    level_no = _level_number(level)
    tty = _is_tty(stream)
    as_json = (not tty) if json is None else json

    shared = _shared_processors()
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *_render_processors(as_json, colors=tty and not as_json),
        ],
    )
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    _install_root_handler(handler, level_no)
    logging.captureWarnings(True)

    # The structlog half does not depend on the arguments (the renderer lives in
    # the stdlib formatter), so caching bound loggers stays correct across calls.
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=_LevelCheckedLogger,
        cache_logger_on_first_use=True,
    )
