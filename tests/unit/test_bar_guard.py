"""Every kind of bad bar is rejected with its reason; good bars pass."""

from __future__ import annotations

import math

import pytest

from brokers.base import Bar
from daemon.bar_guard import REJECTION_REASONS, BarGuard

H = 3600


def _bar(ts: int, o: float = 1.0, h: float = 1.2, low: float = 0.9, c: float = 1.1, v: float = 10.0) -> Bar:
    return Bar("EURUSD", ts, o, h, low, c, v)


BAD_VALUES = [
    ("not_finite", _bar(2 * H, o=math.nan)),
    ("not_finite", _bar(2 * H, c=math.inf)),
    ("not_finite", _bar(2 * H, v=-math.inf)),
    ("non_positive_price", _bar(2 * H, o=0.0, low=0.0)),
    ("non_positive_price", _bar(2 * H, o=-1.0, low=-2.0)),
    ("high_below_low", _bar(2 * H, h=0.8, low=0.9)),
    ("open_outside_range", _bar(2 * H, o=1.3)),
    ("close_outside_range", _bar(2 * H, c=0.5)),
    ("negative_volume", _bar(2 * H, v=-1.0)),
]


@pytest.mark.parametrize(("reason", "bar"), BAD_VALUES)
def test_bad_values_are_rejected_with_their_reason(reason: str, bar: Bar) -> None:
    guard = BarGuard(max_gap_seconds=10 * H)
    assert guard.check(_bar(H)).accepted
    result = guard.check(bar)
    assert not result.accepted
    assert result.reason == reason
    assert result.detail
    assert guard.rejected[reason] == 1
    # the guard keeps going: the next good bar is accepted
    assert guard.check(_bar(3 * H)).accepted


def test_sequence_problems() -> None:
    guard = BarGuard(max_gap_seconds=10 * H)
    first = guard.check(_bar(5 * H))
    assert first.accepted and first.episode_start
    assert guard.check(_bar(5 * H)).reason == "duplicate"
    assert guard.check(_bar(4 * H)).reason == "out_of_order"
    ok = guard.check(_bar(6 * H))
    assert ok.accepted and not ok.episode_start
    gap = guard.check(_bar(20 * H))
    assert not gap.accepted and gap.reason == "gap"
    restart = guard.check(_bar(21 * H))
    assert restart.accepted and restart.episode_start


def test_stale_bars_in_live_trading() -> None:
    guard = BarGuard(max_gap_seconds=10 * H, max_age_seconds=120)
    assert guard.check(_bar(H), now=H + 60).accepted
    result = guard.check(_bar(2 * H), now=2 * H + 600)
    assert result.reason == "stale"


def test_every_reason_is_documented() -> None:
    reasons = {r for r, _ in BAD_VALUES} | {"duplicate", "out_of_order", "gap", "stale"}
    assert reasons == set(REJECTION_REASONS)
