"""OANDA pieces without a network: bars from ticks, wire conversion, order bodies, submit classification, config."""

from __future__ import annotations

from decimal import Decimal

import pytest

from brokers.base import Bar, OrderRequest, OrderType, Side, TimeInForce
from brokers.errors import ConfigError
from brokers.live import SubmitFailure
from brokers.live.wire import WireError
from brokers.oanda import convert
from brokers.oanda.bars import BarBuilder
from brokers.oanda.rest import OandaError, classify_submit, order_body
from daemon.config import TradectlConfig, load_config

D = Decimal
T = 1483344000  # Monday 08:00 UTC


def _builder(session: object = None) -> tuple[BarBuilder, list[Bar]]:
    out: list[Bar] = []
    return BarBuilder("EURUSD", 60, out.append, session), out  # type: ignore[arg-type]


def test_ticks_make_close_stamped_bars_completed_by_the_venue_clock() -> None:
    b, out = _builder()
    for ts, price in ((T + 1, 1.0), (T + 10, 1.3), (T + 20, 0.9), (T + 59, 1.1)):
        b.tick(ts, price)
    assert out == []
    b.advance(T + 59)
    assert out == [], "not complete before its close"
    b.advance(T + 60)  # a heartbeat at the close
    assert out == [Bar("EURUSD", T + 60, 1.0, 1.3, 0.9, 1.1, 4.0)]
    b.tick(T + 61, 1.2)
    b.tick(T + 185, 1.4)  # a tick two intervals later completes the forming bar; the empty interval makes none
    b.tick(T + 30, 5.0)  # late: its bar was handed on
    b.advance(T + 240)
    assert [x.ts for x in out] == [T + 60, T + 120, T + 240] and b.late_ticks == 1


def test_a_seeded_bar_is_finished_by_live_ticks_and_nothing_is_built_twice() -> None:
    b, out = _builder()
    b.delivered(T + 60)
    b.seed(T, 9, 9, 9, 9, 1)  # a candle already delivered: ignored
    b.seed(T + 60, 1.0, 1.2, 0.95, 1.1, 3)
    b.tick(T + 100, 0.9)
    b.advance(T + 120)
    assert out == [Bar("EURUSD", T + 120, 1.0, 1.2, 0.9, 0.9, 4.0)]


def test_ticks_outside_the_session_make_no_bar() -> None:
    b, out = _builder(lambda ts: ts < T + 60)
    b.tick(T + 1, 1.0)
    b.tick(T + 61, 2.0)
    b.advance(T + 600)
    assert [x.close for x in out] == [1.0] and b.closed_ticks == 1


def test_mid_is_the_exact_midpoint_of_the_wire_strings() -> None:
    msg = {"type": "PRICE", "instrument": "EUR_USD", "time": "2017-01-02T08:00:01.123456789Z",
           "bids": [{"price": "1.10001"}], "asks": [{"price": "1.10004"}]}
    assert convert.price_tick(msg, "mid") == ("EUR_USD", T + 1, float(D("1.100025")))
    assert convert.price_tick(msg, "bid")[2] == 1.10001 and convert.price_tick(msg, "ask")[2] == 1.10004
    with pytest.raises(WireError, match="bids"):
        convert.price_tick({**msg, "bids": [{"price": "x"}]}, "mid")
    with pytest.raises(WireError, match="no usable"):
        convert.price_tick({**msg, "asks": []}, "mid")


def test_fill_fee_is_commission_plus_guaranteed_fee_less_financing() -> None:
    tx = {"id": "42", "units": "-250", "price": "1.2345", "commission": "0.30", "guaranteedExecutionFee": "0.05",
          "financing": "-0.12", "time": "2017-01-02T08:00:05Z"}
    fill = convert.transaction_fill(tx, "tc1-1", "EURUSD")
    assert (fill.fill_id, fill.side, fill.quantity, fill.price, fill.fee) == ("42", Side.SELL, D(250), D("1.2345"),
                                                                             D("0.47"))
    with pytest.raises(WireError, match="units: zero"):
        convert.transaction_fill({**tx, "units": "0"}, "tc1-1", "EURUSD")


def test_positions_net_the_two_sides_and_reasons_map_to_codes() -> None:
    raw = {"instrument": "EUR_USD", "long": {"units": "0"}, "short": {"units": "-300", "averagePrice": "1.2"}}
    assert convert.position(raw, "EURUSD").quantity == D(-300)
    assert convert.position({"long": {"units": "0"}, "short": {"units": "0"}}, "EURUSD") is None
    assert convert.reason_code("INSUFFICIENT_MARGIN") == "insufficient_margin"
    assert convert.reason_code("MARKET_HALTED") == "market_closed"
    assert convert.reason_code("SOMETHING_NEW") == "venue_rejected"


def test_order_bodies_sign_units_and_carry_our_client_id() -> None:
    sell = order_body("tc1-7", "EUR_USD", OrderRequest("EURUSD", Side.SELL, D("1500")))["order"]
    assert (sell["units"], sell["type"], sell["timeInForce"], sell["clientExtensions"]["id"]) == (
        "-1500", "MARKET", "FOK", "tc1-7")
    limit = order_body("tc1-8", "EUR_USD", OrderRequest("EURUSD", Side.BUY, D("10.0"), OrderType.LIMIT,
                                                        D("1.05000"), TimeInForce.DAY))["order"]
    assert (limit["units"], limit["price"], limit["timeInForce"]) == ("10", "1.05", "GFD")


def test_a_failed_create_is_refused_duplicate_or_ambiguous() -> None:
    margin = OandaError("x", status=400, code="INSUFFICIENT_MARGIN", venue_message="no margin")
    assert classify_submit(margin) == (SubmitFailure.REJECTED, "insufficient_margin: OANDA INSUFFICIENT_MARGIN: "
                                                               "no margin")
    assert classify_submit(OandaError("x", status=400, code="CLIENT_ORDER_ID_ALREADY_EXISTS"))[0] is \
        SubmitFailure.DUPLICATE
    assert classify_submit(OandaError("x", status=201, code="INSUFFICIENT_MARGIN"))[0] is SubmitFailure.REJECTED
    assert classify_submit(OandaError("x", status=503))[0] is SubmitFailure.AMBIGUOUS
    assert classify_submit(OandaError("timed out"))[0] is SubmitFailure.AMBIGUOUS
    assert classify_submit(ConnectionResetError())[0] is SubmitFailure.AMBIGUOUS


def test_the_token_is_a_secret_and_the_sections_must_agree(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    path = Path(str(tmp_path)) / "c.yaml"
    path.write_text("oanda: {token: abc}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"oanda\.token"):
        load_config(path)
    monkeypatch.setenv("TRADECTL_OANDA__TOKEN", "s3cret-token")
    config = TradectlConfig(broker={"kind": "oanda", "oanda": {"account_id": "1-2"}})
    assert "s3cret-token" not in str(config.public_dict()) and "s3cret-token" not in repr(config)
    with pytest.raises(ValueError, match=r"data\.bar_seconds is 60; broker\.oanda\.granularity H1"):
        TradectlConfig(broker={"kind": "oanda", "oanda": {"account_id": "1-2"}}, data={"bar_seconds": 60})
    monkeypatch.delenv("TRADECTL_OANDA__TOKEN")
    with pytest.raises(ValueError, match="TRADECTL_OANDA__TOKEN"):
        TradectlConfig(broker={"kind": "oanda", "oanda": {"account_id": "1-2"}})


def test_the_practice_example_config_loads_once_the_account_id_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "config" / "oanda-practice.yaml"
    monkeypatch.setenv("TRADECTL_OANDA__TOKEN", "t")
    with pytest.raises(ConfigError, match="account_id is empty"):
        load_config(path)
    monkeypatch.setenv("TRADECTL_BROKER__OANDA__ACCOUNT_ID", "101-004-1234567-001")
    config = load_config(path)
    assert (config.broker.kind, config.broker.oanda.practice, config.data.symbol) == ("oanda", True, "EURUSD")
