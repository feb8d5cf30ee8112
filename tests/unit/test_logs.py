from __future__ import annotations

import io
import json
import logging
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
import structlog

from brokers.errors import ConfigError
from daemon.logs import REDACTED, configure_logging


class _TtyStream(io.StringIO):
    """A real in-memory stream that reports itself as a terminal."""

    def isatty(self) -> bool:
        return True


pytestmark = pytest.mark.usefixtures("restore_logging")


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_lines_carry_event_level_and_utc_timestamp() -> None:
    out = io.StringIO()
    configure_logging("info", stream=out)  # not a TTY, so JSON
    structlog.get_logger("tradectl.test").info("bar accepted", symbol="EURUSD", price=Decimal("1.05123"))

    (line,) = _lines(out)
    assert line["event"] == "bar accepted"
    assert line["level"] == "info"
    assert line["symbol"] == "EURUSD"
    assert line["price"] == "1.05123"
    assert line["logger"] == "tradectl.test"
    stamp = datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() is not None and stamp.utcoffset().total_seconds() == 0


def test_level_filters_lower_levels() -> None:
    out = io.StringIO()
    configure_logging("warning", stream=out)
    log = structlog.get_logger("tradectl.test")
    log.info("quiet")
    log.warning("loud")
    assert [line["event"] for line in _lines(out)] == ["loud"]


def test_secrets_are_redacted_in_fields_context_and_nested_dicts() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    structlog.contextvars.bind_contextvars(api_token="ctx-secret-1")
    structlog.get_logger("tradectl.test").info(
        "connecting",
        token="tok-123",
        client_secret="s3cret",
        Password="hunter2",
        alpaca_key_id="AKIA-ID",
        headers={"Authorization": "Bearer abc", "Accept": "application/json"},
        account="DU123",
    )

    text = out.getvalue()
    for secret in ("ctx-secret-1", "tok-123", "s3cret", "hunter2", "AKIA-ID", "Bearer abc"):
        assert secret not in text
    (line,) = _lines(out)
    assert line["token"] == line["client_secret"] == line["Password"] == REDACTED
    assert line["alpaca_key_id"] == line["api_token"] == REDACTED
    assert line["headers"] == {"Authorization": REDACTED, "Accept": "application/json"}
    assert line["account"] == "DU123"


def test_stdlib_records_get_the_same_format() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    logging.getLogger("aiohttp.server").warning("client went away after %d bytes", 42)

    (line,) = _lines(out)
    assert line["event"] == "client went away after 42 bytes"
    assert line["level"] == "warning"
    assert line["logger"] == "aiohttp.server"
    assert "timestamp" in line


def test_exceptions_are_rendered_into_the_json_line() -> None:
    out = io.StringIO()
    configure_logging(stream=out)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("tradectl.test").exception("handler failed")
        logging.getLogger("asyncio").exception("task failed")

    first, second = _lines(out)
    assert "ValueError: boom" in first["exception"]
    assert "ValueError: boom" in second["exception"]
    assert first["level"] == second["level"] == "error"


def test_calling_twice_does_not_duplicate_lines() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging(stream=first)
    configure_logging(stream=second)
    structlog.get_logger("tradectl.test").info("once")
    logging.getLogger("aiohttp.access").warning("once too")

    assert first.getvalue() == ""
    assert [line["event"] for line in _lines(second)] == ["once", "once too"]


def test_terminal_gets_console_output_unless_json_is_forced() -> None:
    tty = _TtyStream()
    configure_logging(stream=tty)
    structlog.get_logger("tradectl.test").info("hello console", token="tok-9")
    text = tty.getvalue()
    assert "hello console" in text
    assert "tok-9" not in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)

    forced = _TtyStream()
    configure_logging(json=True, stream=forced)
    structlog.get_logger("tradectl.test").info("hello json")
    assert _lines(forced)[0]["event"] == "hello json"


def test_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="verbose"):
        configure_logging("verbose", stream=io.StringIO())
