"""The texts the bot answers with: a few short lines each, readable on a phone.

Pure functions over the same documents the API serves (``Daemon.status``,
``Daemon.risk_report``) and the store's rows, so the bot never says
something the API would not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from daemon.store import ModelEntry, StoredTrade

HELP = "\n".join([
    "/status — state, equity, P&L",
    "/positions — open positions",
    "/pnl — realised, unrealised, today",
    "/trades [n] — last n closed trades",
    "/risk — risk layers and state",
    "/pause — no new entries",
    "/resume — trade again",
    "/flatten — close everything (asks to confirm)",
    "/models — registered models",
])


def status(doc: Mapping[str, Any]) -> str:
    positions = doc.get("positions") or []
    last = doc.get("last_decision") or {}
    lines = [
        f"State: {doc.get('state')}",
        f"Equity: {doc.get('equity')}  today: {doc.get('pnl_today')}",
        f"Positions: {len(positions)}",
    ]
    if last:
        lines.append(f"Last: {last.get('action')} {last.get('symbol')} ({last.get('verdict')})")
    uptime = doc.get("uptime_seconds")
    if uptime is not None:
        lines.append(f"Up {float(uptime) / 3600:.1f} h on {doc.get('broker')}")
    return "\n".join(lines)


def positions(doc: Mapping[str, Any]) -> str:
    rows = doc.get("positions") or []
    if not rows:
        return "No open positions."
    return "\n".join(
        f"{r['symbol']} {r['quantity']} @ {r['average_price']}  uPnL {r['unrealized_pnl']}" for r in rows
    )


def pnl(doc: Mapping[str, Any]) -> str:
    return "\n".join([
        f"Realised (net): {doc.get('realized_pnl')}",
        f"Unrealised: {doc.get('unrealized_pnl')}",
        f"Today: {doc.get('pnl_today')}",
        f"Fees: {doc.get('fees')}",
    ])


def trades(rows: Sequence[StoredTrade]) -> str:
    if not rows:
        return "No closed trades yet."
    return "\n".join(
        f"{_when(t.exit_ts)} {t.symbol} {'long' if t.direction > 0 else 'short'} {t.quantity}"
        f" {t.entry_price}→{t.exit_price}  P&L {t.pnl}"
        for t in rows
    )


def risk(doc: Mapping[str, Any]) -> str:
    lines = [f"State: {doc.get('state')}"]
    for layer in doc.get("layers") or []:
        figures = layer.get("figures") or {}
        shown = ", ".join(f"{k} {v}" for k, v in list(figures.items())[:3])
        lines.append(f"• {layer.get('name')}: {shown}" if shown else f"• {layer.get('name')}")
    counts = doc.get("verdict_counts") or {}
    if counts:
        lines.append("Verdicts: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return "\n".join(lines)


def models(rows: Sequence[ModelEntry], current: str | None) -> str:
    lines = [f"Trading: {current[:12] if current else 'no model (rule-based strategy)'}"]
    for m in rows[-5:]:
        tags = [t for t, on in (("gold", m.gold), ("production", m.production)) if on]
        lines.append(f"• {m.sha256[:12]} {m.path.name}{' (' + ', '.join(tags) + ')' if tags else ''}")
    if not rows:
        lines.append("No registered models.")
    return "\n".join(lines)


def state_change(verb: str, result: Mapping[str, Any]) -> str:
    if result.get("changed"):
        return f"{verb}. State: {result.get('state')}"
    return f"Nothing changed. State: {result.get('state')}"


def daily(doc: Mapping[str, Any]) -> str:
    return "\n".join([
        "📊 Daily summary",
        f"State: {doc.get('state')}  equity {doc.get('equity')}",
        f"Today: {doc.get('pnl_today')}  realised {doc.get('realized_pnl')}",
        f"Trades: {(doc.get('counts') or {}).get('trades')}  open positions: {len(doc.get('positions') or [])}",
    ])


def _when(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%m-%d %H:%M")
