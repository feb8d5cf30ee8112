from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from daemon.statusview import MISSING, render_status

SHA = "3f" * 32


def _full_doc() -> dict[str, Any]:
    return {
        "state": "REDUCING",
        "mode": "paper",
        "broker": "alpaca",
        "strategy": {"name": "lstm-ppo-eurusd", "model_sha256": SHA},
        "feed": {"position": 1234, "total": 6225, "lag_seconds": 0.42, "last_bar_ts": "2017-03-01T10:00:00Z"},
        "equity": "100234.5678",
        "cash": 90000,
        "pnl_today": "-1234.5",
        "realized_pnl": Decimal("200"),
        "unrealized_pnl": 34.56,
        "positions": [
            {
                "symbol": "EURUSD",
                "quantity": "10000",
                "average_price": "1.05123",
                "last_price": "1.05200",
                "unrealized_pnl": "77.0",
            },
            {
                "symbol": "SPY",
                "quantity": "-3",
                "average_price": "512.10",
                "last_price": "510.00",
                "unrealized_pnl": "6.3",
            },
        ],
        "last_decision": {
            "symbol": "EURUSD",
            "ts": "2017-03-01T10:00:00Z",
            "action": "BUY",
            "confidence": 0.7312,
            "verdict": "resize",
        },
        "counts": {"bars": 1234, "rejected_bars": 2, "decisions": 1232, "orders": 17, "fills": 15},
        "uptime_seconds": 93784.2,
        "loop_lag_ms": {"p50": 0.12, "p99": 1.5, "max": 4},
    }


def test_full_document_shows_every_value() -> None:
    text = render_status(_full_doc())

    for expected in (
        "REDUCING",
        "paper",
        "alpaca",
        "lstm-ppo-eurusd",
        SHA,
        "1,234 / 6,225 bars (19.8%)",
        "0.42 s",
        "2017-03-01T10:00:00Z",
        "100,234.57",
        "90,000.00",
        "-1,234.50",
        "200.00",
        "34.56",
        "EURUSD",
        "10000",
        "1.05123",
        "1.05200",
        "77.00",
        "SPY",
        "512.10",
        "510.00",
        "6.30",
        "BUY",
        "confidence 0.73",
        "verdict resize",
        "bars 1,234",
        "rejected bars 2",
        "decisions 1,232",
        "orders 17",
        "fills 15",
        "1d 02:03:04",
        "p50 0.12 ms",
        "p99 1.50 ms",
        "max 4.00 ms",
    ):
        assert expected in text, expected
    assert MISSING not in text


def test_position_columns_are_aligned() -> None:
    lines = render_status(_full_doc()).splitlines()
    start = lines.index("positions") + 1
    header, eurusd, spy = lines[start : start + 3]
    # Right-aligned numeric columns end at the same offset in every row.
    for title in ("quantity", "avg price", "last price", "unrealized"):
        end = header.index(title) + len(title)
        assert eurusd[end - 1] != " " and spy[end - 1] != " ", title
        assert end == len(header) or eurusd[end] == " "


def test_money_block_right_aligns_figures() -> None:
    lines = render_status(_full_doc()).splitlines()
    money = [line for line in lines if line.split(" ")[0] in {"equity", "cash", "P&L", "realized", "unrealized"}]
    assert len(money) == 5
    assert len({len(line) for line in money}) == 1


@pytest.mark.parametrize("doc", [{}, None, {"state": "ACTIVE"}])
def test_empty_or_minimal_document_renders_dashes(doc: dict[str, Any] | None) -> None:
    text = render_status(doc)
    assert MISSING in text
    assert "positions" in text and "none" in text
    if doc:
        assert "ACTIVE" in text


def test_malformed_values_do_not_break_rendering() -> None:
    doc = {
        "strategy": "not a mapping",
        "feed": {"position": 5, "total": 0, "last_bar_ts": datetime(2024, 1, 2, 3, 4, tzinfo=UTC)},
        "equity": "n/a",
        "cash": None,
        "positions": [{"symbol": "AAPL"}, "garbage"],
        "last_decision": {"symbol": "AAPL"},
        "counts": {"bars": "many"},
        "uptime_seconds": -1,
        "loop_lag_ms": {"p50": float("nan")},
    }
    text = render_status(doc)
    assert "5 / 0 bars" in text
    assert "2024-01-02T03:04:00+00:00" in text
    assert "n/a" in text
    assert "AAPL" in text
    assert "bars many" in text
