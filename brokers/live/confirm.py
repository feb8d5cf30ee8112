"""Live trading's second key: the operator types the account's own id into ``TRADECTL_LIVE_CONFIRM``.

A configuration that says "live" is one key; the environment variable naming the very account the venue
reports is the other. Every live adapter checks it with this one rule when it connects, before any order,
so a paper config pointed at a live login (or a live config at the wrong account) stops at start-up.
"""

from __future__ import annotations

from brokers.errors import BrokerError

__all__ = ["confirm_live_account"]


def confirm_live_account(venue: str, account: str, confirm: str | None, *, noun: str = "number") -> None:
    """Refuse (one line) unless ``confirm`` (TRADECTL_LIVE_CONFIRM) equals the ``account`` the venue reports."""
    if not confirm:
        raise BrokerError(f"{venue} live trading: set TRADECTL_LIVE_CONFIRM to the account {noun} to confirm")
    if confirm != account:
        raise BrokerError(f"{venue} live trading: TRADECTL_LIVE_CONFIRM does not match this account's {noun}")
