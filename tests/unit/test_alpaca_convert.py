"""Alpaca wire messages → tradectl's vocabulary: exact decimals, close-stamped bars, one fill id per execution."""

from __future__ import annotations

from decimal import Decimal

import msgpack
import pytest

from brokers.alpaca.convert import (
    WireError,
    activity_fill,
    epoch_seconds,
    order_update,
    position,
    rest_bar,
    stream_bar,
    trade_update,
)
from brokers.alpaca.rest import classify_submit
from brokers.base import OrderStatus, Side
from brokers.live import ForwardOnly, SubmitFailure

D = Decimal
OPEN = 1790861400  # 2026-10-01T13:30:00Z

ORDER = {
    "id": "ord-1", "client_order_id": "tc1-00000001", "symbol": "SPY", "side": "buy", "type": "market",
    "qty": "10", "filled_qty": "4", "filled_avg_price": "571.235", "status": "partially_filled",
    "created_at": "2026-10-01T13:30:00.123456Z", "updated_at": "2026-10-01T13:31:00.000000Z",
}


def test_times_read_rfc3339_with_nanoseconds_offsets_and_msgpack_timestamps() -> None:
    assert epoch_seconds("2026-10-01T13:30:00Z") == OPEN
    assert epoch_seconds("2026-10-01T13:30:00.123456789Z") == OPEN
    assert epoch_seconds("2026-10-01T09:30:00-04:00") == OPEN
    assert epoch_seconds(msgpack.Timestamp.from_unix_nano(OPEN * 10**9 + 5)) == OPEN
    with pytest.raises(WireError, match="RFC 3339"):
        epoch_seconds("yesterday")


def test_bars_are_stamped_at_their_close() -> None:
    msg = {"T": "b", "S": "SPY", "o": 571.1, "h": 571.9, "l": 570.8, "c": 571.5, "v": 1200,
           "t": msgpack.Timestamp.from_unix_nano(OPEN * 10**9), "n": 40, "vw": 571.3}
    bar = stream_bar(msg, 60)
    assert (bar.symbol, bar.ts, bar.open, bar.close, bar.volume) == ("SPY", OPEN + 60, 571.1, 571.5, 1200.0)
    rest = rest_bar("SPY", {"t": "2026-10-01T13:30:00Z", "o": 1, "h": 2, "l": 0.5, "c": 1.5, "v": 3}, 60)
    assert rest.ts == OPEN + 60
    with pytest.raises(WireError):
        stream_bar({"T": "b", "S": "SPY", "t": msg["t"], "o": 1}, 60)


def test_orders_keep_exact_decimals_and_map_statuses() -> None:
    update = order_update(ORDER)
    assert update.status is OrderStatus.PARTIALLY_FILLED
    assert update.filled_quantity == D("4") and update.average_price == D("571.235")
    assert (update.broker_order_id, update.ts) == ("ord-1", OPEN + 60)
    assert order_update({**ORDER, "status": "new", "filled_qty": "0"}).status is OrderStatus.ACCEPTED
    assert order_update({**ORDER, "status": "pending_new"}).status is OrderStatus.SUBMITTED
    assert order_update({**ORDER, "status": "done_for_day"}).status is OrderStatus.PARTIALLY_FILLED
    assert order_update({**ORDER, "status": "calculated", "filled_qty": "10"}).status is OrderStatus.FILLED
    replaced = order_update({**ORDER, "status": "replaced", "replaced_by": "ord-2"})
    assert replaced.status is OrderStatus.CANCELLED and "ord-2" in replaced.message
    with pytest.raises(WireError, match="unknown Alpaca order status"):
        order_update({**ORDER, "status": "teleported"})


def test_a_fill_event_and_its_activity_name_the_same_execution() -> None:
    data = {"event": "partial_fill", "timestamp": "2026-10-01T13:31:00Z", "execution_id": "ex-9",
            "price": "571.20", "qty": "4", "position_qty": "4", "order": ORDER}
    update, execution_id = trade_update(data)
    fill = update.fill
    assert fill is not None and execution_id == "ex-9"
    assert (fill.quantity, fill.price, fill.fee, fill.side) == (D(4), D("571.20"), D(0), Side.BUY)
    activity = {"id": "20261001::x", "activity_type": "FILL", "order_id": "ord-1", "cum_qty": "4.0",
                "qty": "4", "price": "571.20", "side": "buy", "symbol": "SPY",
                "transaction_time": "2026-10-01T13:31:00Z"}
    assert activity_fill(activity, "tc1-00000001") == fill, "the stream and REST agree on the fill, id included"
    rejected, _ = trade_update({"event": "rejected", "timestamp": "2026-10-01T13:31:00Z",
                                "order": {**ORDER, "status": "rejected"}, "reason": "insufficient buying power"})
    assert rejected.status is OrderStatus.REJECTED and "insufficient buying power" in rejected.message


def test_short_positions_are_negative() -> None:
    raw = {"symbol": "SPY", "qty": "5", "side": "short", "avg_entry_price": "570.5"}
    assert position(raw).quantity == D(-5)
    assert position({**raw, "qty": "-5"}).quantity == D(-5)


def test_updates_never_move_back() -> None:
    forward = ForwardOnly()
    done, _ = trade_update({"event": "fill", "timestamp": "2026-10-01T13:32:00Z", "execution_id": "b",
                            "price": "1", "qty": "6", "order": {**ORDER, "status": "filled", "filled_qty": "10"}})
    late, _ = trade_update({"event": "partial_fill", "timestamp": "2026-10-01T13:31:00Z", "execution_id": "a",
                            "price": "1", "qty": "4", "order": ORDER})
    assert forward(done).status is OrderStatus.FILLED
    raised = forward(late)
    assert raised.fill is not None and raised.fill.quantity == D(4), "the late fill is still delivered"
    assert (raised.status, raised.filled_quantity, raised.ts) == (OrderStatus.FILLED, D(10), done.ts)


def test_submit_failures_are_classified_for_the_send_once_rule() -> None:
    from brokers.alpaca.rest import AlpacaError

    assert classify_submit(AlpacaError("x", status=422, code=40010001))[0] is SubmitFailure.DUPLICATE
    assert classify_submit(AlpacaError("x", status=403, code=40310000, venue_message="insufficient buying power")) \
        == (SubmitFailure.REJECTED, "insufficient buying power")
    assert classify_submit(AlpacaError("x", status=500))[0] is SubmitFailure.AMBIGUOUS
    assert classify_submit(AlpacaError("x", status=None))[0] is SubmitFailure.AMBIGUOUS
    assert classify_submit(ConnectionResetError())[0] is SubmitFailure.AMBIGUOUS
