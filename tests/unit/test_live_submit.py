"""An order is sent once: ambiguous failures are resolved by lookup, duplicates mean "already sent"."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from brokers.base import OrderRequest, OrderStatus, OrderUpdate, Side
from brokers.errors import OrderRejected, UnknownOrderOutcome
from brokers.live import Quarantine, SeenIds, SubmitFailure, submit_once

REQ = OrderRequest("SPY", Side.BUY, Decimal(5))
FOUND = OrderUpdate("c1", OrderStatus.ACCEPTED, 1, broker_order_id="b1", symbol="SPY")


class _Venue:
    def __init__(self, send_error: BaseException | None, lookups: list[OrderUpdate | BaseException | None]) -> None:
        self.send_error = send_error
        self.lookups = list(lookups)
        self.sends = 0
        self.asked = 0

    async def send(self) -> OrderUpdate:
        self.sends += 1
        if self.send_error is not None:
            raise self.send_error
        return FOUND

    async def lookup(self) -> OrderUpdate | None:
        self.asked += 1
        answer = self.lookups.pop(0) if self.lookups else None
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _classify(exc: BaseException) -> tuple[SubmitFailure, str]:
    if isinstance(exc, ValueError):
        return SubmitFailure.REJECTED, "insufficient buying power"
    if isinstance(exc, KeyError):
        return SubmitFailure.DUPLICATE, "client_order_id must be unique"
    return SubmitFailure.AMBIGUOUS, repr(exc)


async def _submit(venue: _Venue, deadline: float = 1.0, same=None) -> OrderUpdate:  # type: ignore[no-untyped-def]
    return await submit_once("c1", REQ, venue.send, venue.lookup, _classify, deadline=deadline, poll=0.01,
                             same_order=same)


async def test_a_clean_send_is_the_answer() -> None:
    venue = _Venue(None, [])
    assert await _submit(venue) is FOUND
    assert (venue.sends, venue.asked) == (1, 0)


async def test_a_lost_response_is_resolved_by_lookup_without_resending() -> None:
    venue = _Venue(ConnectionResetError("reset"), [None, ConnectionError("still down"), FOUND])
    assert await _submit(venue) is FOUND
    assert venue.sends == 1 and venue.asked == 3


async def test_an_order_the_venue_never_shows_is_unknown_after_the_deadline() -> None:
    venue = _Venue(TimeoutError("read timeout"), [])
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UnknownOrderOutcome, match=r"within 0\.1 s"):
        await _submit(venue, deadline=0.1)
    assert venue.sends == 1 and venue.asked >= 3
    assert loop.time() - started < 0.5


async def test_a_definite_rejection_carries_the_venue_reason_and_is_not_looked_up() -> None:
    venue = _Venue(ValueError("403"), [FOUND])
    with pytest.raises(OrderRejected, match="insufficient buying power"):
        await _submit(venue)
    assert venue.asked == 0


async def test_a_duplicate_id_is_the_order_already_sent_when_it_matches() -> None:
    venue = _Venue(KeyError("422"), [FOUND])
    assert await _submit(venue, same=lambda u, r: u.symbol == r.symbol) is FOUND
    assert venue.sends == 1


async def test_a_duplicate_id_holding_another_order_is_refused_and_an_unseen_one_is_unknown() -> None:
    with pytest.raises(OrderRejected, match="duplicate client_order_id 'c1'"):
        await _submit(_Venue(KeyError("422"), [FOUND]), same=lambda u, r: False)
    with pytest.raises(UnknownOrderOutcome, match="id as used"):
        await _submit(_Venue(KeyError("422"), [None]))


def test_seen_ids_deliver_each_execution_once_within_a_bounded_memory() -> None:
    seen = SeenIds(limit=3)
    assert [seen.add(k) for k in ("a", "b", "a", "c", "d")] == [True, True, False, True, True]
    assert seen.repeats == 1 and len(seen) == 3 and "a" not in seen


def test_quarantine_keeps_and_counts_what_could_not_be_used() -> None:
    q = Quarantine("trade_updates", keep=2)
    for i in range(3):
        q.put("missing order", {"n": i})
    assert q.count == 3 and len(q.latest) == 2
    assert q.status() == {"count": 3, "last_reason": "missing order"}
