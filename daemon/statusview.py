"""Plain-text rendering of the daemon's status document for ``tradectl status``.

The document comes over HTTP as JSON, so money arrives as Decimal strings or
numbers and any key may be missing (an older daemon, a daemon still starting).
Rendering never fails on such a document: an absent value shows as a dash.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = ["MISSING", "render_status"]

MISSING = "—"

_LABEL_WIDTH = 16
_POSITION_COLUMNS = (
    ("symbol", "symbol", "<"),
    ("quantity", "quantity", ">"),
    ("average_price", "avg price", ">"),
    ("last_price", "last price", ">"),
    ("unrealized_pnl", "unrealized", ">"),
)


def _section(doc: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = doc.get(key)
    return value if isinstance(value, Mapping) else {}


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _text(value: Any) -> str:
    """Prices and quantities are shown exactly as the daemon sent them."""
    if value is None or value == "":
        return MISSING
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    return str(value)


def _money(value: Any) -> str:
    number = _decimal(value)
    if number is None:
        return _text(value)
    return f"{number:,.2f}"


def _fixed(value: Any, digits: int, unit: str = "") -> str:
    number = _decimal(value)
    if number is None:
        return _text(value)
    return f"{number:,.{digits}f}{unit}"


def _count(value: Any) -> str:
    number = _decimal(value)
    if number is None:
        return _text(value)
    return f"{number:,.0f}"


def _duration(value: Any) -> str:
    number = _decimal(value)
    if number is None or number < 0:
        return _text(value)
    seconds = int(number)
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    clock = f"{hours:02d}:{minutes:02d}:{secs:02d}"
    return f"{days}d {clock}" if days else clock


def _row(label: str, value: str) -> str:
    return f"{label:<{_LABEL_WIDTH}}{value}"


def _header(doc: Mapping[str, Any]) -> list[str]:
    strategy = _section(doc, "strategy")
    return [
        _row("state", _text(doc.get("state"))),
        _row("mode", _text(doc.get("mode"))),
        _row("broker", _text(doc.get("broker"))),
        _row("strategy", _text(strategy.get("name"))),
        _row("model sha256", _text(strategy.get("model_sha256"))),
        _row("uptime", _duration(doc.get("uptime_seconds"))),
    ]


def _feed(doc: Mapping[str, Any]) -> list[str]:
    feed = _section(doc, "feed")
    position, total = _decimal(feed.get("position")), _decimal(feed.get("total"))
    progress = f"{_count(feed.get('position'))} / {_count(feed.get('total'))} bars"
    if position is not None and total:
        progress += f" ({position / total:.1%})"
    return [
        _row("feed", progress),
        _row("feed lag", _fixed(feed.get("lag_seconds"), 2, " s")),
        _row("last bar", _text(feed.get("last_bar_ts"))),
    ]


def _loop_lag(doc: Mapping[str, Any]) -> list[str]:
    lag = _section(doc, "loop_lag_ms")
    parts = [f"{name} {_fixed(lag.get(name), 2, ' ms')}" for name in ("p50", "p99", "max")]
    return [_row("loop lag", "  ".join(parts))]


def _money_block(doc: Mapping[str, Any]) -> list[str]:
    fields = (
        ("equity", "equity"),
        ("cash", "cash"),
        ("pnl_today", "P&L today"),
        ("realized_pnl", "realized P&L"),
        ("unrealized_pnl", "unrealized P&L"),
    )
    figures = [(label, _money(doc.get(key))) for key, label in fields]
    width = max(len(figure) for _, figure in figures)
    return [_row(label, f"{figure:>{width}}") for label, figure in figures]


def _position_cell(position: Mapping[str, Any], key: str) -> str:
    value = position.get(key)
    return _money(value) if key == "unrealized_pnl" else _text(value)


def _positions(doc: Mapping[str, Any]) -> list[str]:
    raw = doc.get("positions")
    rows = [p for p in raw if isinstance(p, Mapping)] if isinstance(raw, Sequence) else []
    if not rows:
        return [_row("positions", "none")]
    table = [[title for _, title, _ in _POSITION_COLUMNS]]
    table += [[_position_cell(p, key) for key, _, _ in _POSITION_COLUMNS] for p in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(_POSITION_COLUMNS))]
    aligns = [align for _, _, align in _POSITION_COLUMNS]
    rendered = [
        "  ".join(f"{cell:{align}{width}}" for cell, align, width in zip(line, aligns, widths, strict=True))
        for line in table
    ]
    return ["positions", *("  " + line.rstrip() for line in rendered)]


def _last_decision(doc: Mapping[str, Any]) -> list[str]:
    decision = _section(doc, "last_decision")
    if not decision:
        return [_row("last decision", MISSING)]
    summary = "  ".join(
        [
            _text(decision.get("symbol")),
            _text(decision.get("action")),
            f"confidence {_fixed(decision.get('confidence'), 2)}",
            f"verdict {_text(decision.get('verdict'))}",
        ]
    )
    return [_row("last decision", summary), _row("", f"at {_text(decision.get('ts'))}")]


def _counts(doc: Mapping[str, Any]) -> list[str]:
    counts = _section(doc, "counts")
    names = ("bars", "rejected_bars", "decisions", "orders", "fills")
    parts = [f"{name.replace('_', ' ')} {_count(counts.get(name))}" for name in names]
    return [_row("counts", "  ".join(parts))]


def render_status(doc: Mapping[str, Any] | None) -> str:
    """The status document as aligned plain text, sections separated by blank lines."""
    doc = doc if isinstance(doc, Mapping) else {}
    blocks = [
        _header(doc),
        _feed(doc) + _loop_lag(doc),
        _money_block(doc),
        _positions(doc),
        _last_decision(doc) + _counts(doc),
    ]
    return "\n\n".join("\n".join(block) for block in blocks)


def render_risk(doc: Mapping[str, Any] | None) -> str:
    """``tradectl risk``: the trading state, then one block per layer with its figures."""
    doc = doc or {}
    lines = [f"trading state   {doc.get('state', '—')}", ""]
    for layer in doc.get("layers") or []:
        figures = layer.get("figures") or {}
        lines.append(str(layer.get("name", "?")))
        if not figures:
            lines.append("  (no figures)")
        for key, value in figures.items():
            lines.append(f"  {key:<28} {_risk_value(value)}")
    counts = doc.get("verdict_counts") or {}
    if counts:
        lines += ["", "verdicts so far"]
        lines += [f"  {key:<40} {value}" for key, value in sorted(counts.items())]
    return "\n".join(lines)


def _risk_value(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.6g}"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_risk_value(v)}" for k, v in value.items()) or "—"
    if isinstance(value, list | tuple):
        return ", ".join(_risk_value(v) for v in value) or "—"
    return str(value)
