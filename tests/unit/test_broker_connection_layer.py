"""The broker-connection layer on contexts (no loop, no venue): entries stop while the venue reports its streams
down, exits, reductions and flatten orders pass, a flip keeps its closing part, and a replay is never blocked."""

from __future__ import annotations

from decimal import Decimal

import pytest

from brokers.base import OrderRequest, Side
from risk.config import BrokerConnectionConfig, RiskConfig
from risk.governor import RiskContext, RiskGovernor, TradingState, Verdict, VerdictKind
from risk.layers import FLATTEN, BrokerConnectionLayer, FeedLink, build_layers

D = Decimal
T0 = 1_488_369_600  # 2017-03-01 12:00 UTC, a Wednesday: every market is open


def _ctx(position: int, connected: bool | None, **extras: object) -> RiskContext:
    return RiskContext(state=TradingState.ACTIVE, ts=T0, position=D(position), last_price=1.0, equity=100_000.0,
                       day_start_equity=100_000.0, peak_equity=100_000.0, extras=dict(extras),
                       feed_connected=connected)


def _judge(side: Side, qty: int, ctx: RiskContext) -> tuple[RiskGovernor, BrokerConnectionLayer, Verdict]:
    layer = BrokerConnectionLayer(BrokerConnectionConfig())
    governor = RiskGovernor([layer])
    return governor, layer, governor.check(OrderRequest("SPY", side, D(qty)), ctx)


@pytest.mark.parametrize(("position", "side", "qty"), [(0, Side.BUY, 10), (0, Side.SELL, 10), (10, Side.BUY, 5)],
                         ids=["long-entry", "short-entry", "add"])
def test_new_exposure_is_blocked_while_the_venue_is_disconnected(position: int, side: Side, qty: int) -> None:
    governor, layer, verdict = _judge(side, qty, _ctx(position, connected=False))
    assert verdict.kind is VerdictKind.BLOCK
    assert (verdict.layer, verdict.reason) == ("broker_connection", "broker_disconnected")
    assert governor.counts == {"broker_connection:block:broker_disconnected": 1}
    assert layer.link is FeedLink.DISCONNECTED
    assert layer.figures() == {"value": "disconnected", "limit": "connected"}


@pytest.mark.parametrize(("position", "side", "qty"), [(10, Side.SELL, 10), (10, Side.SELL, 4), (-6, Side.BUY, 6)],
                         ids=["exit", "reduction", "short-cover"])
def test_exits_and_reductions_pass_while_disconnected(position: int, side: Side, qty: int) -> None:
    governor, _, verdict = _judge(side, qty, _ctx(position, connected=False))
    assert verdict.kind is VerdictKind.ALLOW and verdict.quantity == D(qty)
    assert governor.counts == {}


def test_a_flip_while_disconnected_keeps_only_its_closing_part() -> None:
    governor, _, verdict = _judge(Side.SELL, 20, _ctx(10, connected=False))
    assert verdict.kind is VerdictKind.RESIZE and verdict.quantity == D(10)
    assert verdict.reason == "broker_disconnected"
    assert governor.counts == {"broker_connection:resize:broker_disconnected": 1}


def test_entries_pass_when_connected_and_when_the_venue_reports_no_connection() -> None:
    _, layer, verdict = _judge(Side.BUY, 10, _ctx(0, connected=True))
    assert verdict.kind is VerdictKind.ALLOW and layer.link is FeedLink.CONNECTED
    _, layer, verdict = _judge(Side.BUY, 10, _ctx(0, connected=None))
    assert verdict.kind is VerdictKind.ALLOW and layer.link is FeedLink.UNREPORTED
    assert BrokerConnectionLayer(BrokerConnectionConfig()).figures()["value"] == "unseen"


def test_the_default_stack_lets_a_flatten_out_while_disconnected_and_blocks_the_entry() -> None:
    governor = RiskGovernor(build_layers(RiskConfig()))
    out = governor.check(OrderRequest("SPY", Side.SELL, D(10)), _ctx(10, connected=False, bar_ts=T0, **{FLATTEN: True}))
    assert out.allowed and out.quantity == D(10)
    entry = governor.check(OrderRequest("SPY", Side.BUY, D(10)), _ctx(0, connected=False, bar_ts=T0))
    assert (entry.kind, entry.layer, entry.reason) == (VerdictKind.BLOCK, "broker_connection", "broker_disconnected")
    assert "broker_connection" in governor.figures()


def test_the_layer_can_be_switched_off() -> None:
    names = [layer.name for layer in build_layers(RiskConfig(broker_connection={"enabled": False}))]
    assert "broker_connection" not in names and "stale_data" in names
