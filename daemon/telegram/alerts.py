"""Daemon events as alerts: which ones an operator hears about, in a line or two readable on a phone.

Risk denials can repeat every bar; ``Coalescer`` lets the first of a layer
and reason through and folds the rest of its interval into one message with
a count, so a stuck limit is one message a minute, not one per bar.
"""

from __future__ import annotations

from dataclasses import dataclass

from daemon.events import Event

# kind -> the line's prefix; kinds not listed here and not matched below are not alerted
_PREFIX = {
    "start": "▶️ started",
    "stop": "⏹ stopped",
    "entry": "📥 order",
    "exit": "📤 exit",
    "order_rejected": "⛔ order rejected",
    "state": "🚦 state",
    "halt": "🛑 HALT",
    "flatten": "🧹 flatten",
    "risk_event": "⚠️ risk",
    "broker_disconnected": "🔌 broker disconnected",
    "broker_reconnected": "🔌 broker reconnected",
    "model_rollback": "↩️ model rollback",
    "model_switch": "🔁 model switched",
    "model_drift": "📐 parameter drift",
    "error": "❗ error",
    "overfill": "❗ overfill",
    "unknown_order": "❓ unknown order",
    "malformed_update": "❓ malformed update",
}
_MAX_TEXT = 600  # a few lines on a phone; Telegram itself allows 4096


def is_denial(event: Event) -> bool:
    """Risk verdicts that refused an order (coalesced); ``risk_event`` (a layer's warning) is alerted as is."""
    return event.kind.startswith("risk_") and event.kind != "risk_event"


def is_repeating(event: Event) -> bool:
    """Events that can come every bar: risk denials, and logged errors (a failing store, a stuck lookup)."""
    return is_denial(event) or event.kind == "error"


def format_event(event: Event) -> str | None:
    """The alert's text, or None when the event is not one an operator is told about."""
    if event.kind.startswith("reconciliation_"):
        prefix = "⚖️ reconciliation " + event.kind.removeprefix("reconciliation_")
    elif is_denial(event) or event.kind in _PREFIX:
        prefix = _prefix(event)
    else:
        return None
    return clip(f"{prefix}: {event.message}")


def _prefix(event: Event) -> str:
    return "🚫 risk " + event.kind.removeprefix("risk_") if is_denial(event) else _PREFIX.get(event.kind, event.kind)


def clip(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1] + "…"


@dataclass
class _Window:
    opened: float
    prefix: str
    noun: str  # what was folded: "denials", "errors"
    extra: int = 0
    last_message: str = ""


class Coalescer:
    """One message per (kind, layer, reason) per ``interval``: the first at once, the rest counted."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def offer(self, event: Event, now: float) -> bool:
        """True when this event is to be sent now; False when it was folded into its window's count."""
        key = (event.kind, str(event.data.get("layer", "")), str(event.data.get("reason", "")))
        window = self._windows.get(key)
        if window is None or now - window.opened >= self.interval:
            self._windows[key] = _Window(now, _prefix(event), "denials" if is_denial(event) else f"{event.kind}s")
            return True
        window.extra += 1
        window.last_message = event.message
        return False

    def due(self, now: float) -> list[str]:
        """Summaries of windows that closed with folded events (and forget closed windows)."""
        out = []
        for key, window in list(self._windows.items()):
            if now - window.opened < self.interval:
                continue
            del self._windows[key]
            if window.extra:
                _, layer, reason = key
                what = f"{layer}/{reason}" if layer else reason
                out.append(clip(f"{window.prefix} {what}: {window.extra} more {window.noun} in"
                                f" {self.interval:.0f} s (last: {window.last_message})"))
        return out
