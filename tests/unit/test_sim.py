"""The simulated broker: exact fills and cash on a hand-checked series, order lifecycle, determinism, persistence.

Prices below are worked out by hand from ``COSTS``: a market order loses
(2 / 2 + 1) bps = 0.0002 of the reference price, rounded to the 0.0001 tick
against the trader, and pays 1 bp of notional in commission, rounded half-even
to the cent.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest

from brokers.base import (
    AccountSnapshot,
    Bar,
    Broker,
    Fill,
    OrderRequest,
    OrderStatus,
    OrderType,
    OrderUpdate,
    Position,
    Side,
    TimeInForce,
)
from brokers.costs import CostModel
from brokers.errors import BrokerError, DataError, OrderRejected
from brokers.history import load_bundled
from brokers.sim import SimBroker, SimState
from brokers.sim.replay import ReplayFeed

D = Decimal
SYM = "EURUSD"
T0 = 1483344000  # 2017-01-02T08:00:00Z, a Monday
H = 3600
COSTS = CostModel(
    spread_bps=D(2),
    slippage_bps=D(1),
    commission_bps=D(1),
    price_increment=D("0.0001"),
    fee_increment=D("0.01"),
)

# (open, high, low, close)
_OHLC = [
    (1.1000, 1.1050, 1.0950, 1.1010),
    (1.1020, 1.1100, 1.1000, 1.1080),
    (1.1090, 1.1120, 1.1040, 1.1050),
    (1.1060, 1.1080, 1.1030, 1.1070),
    (1.1070, 1.1090, 1.1060, 1.1065),
]
SERIES = [Bar(SYM, T0 + i * H, o, h, lo, c, 100.0) for i, (o, h, lo, c) in enumerate(_OHLC)]


def _broker(bars: list[Bar] | None = None, **kwargs: object) -> SimBroker:
    return SimBroker(ReplayFeed(SERIES if bars is None else bars), COSTS, **kwargs)  # type: ignore[arg-type]


def _buy(qty: str, **kwargs: object) -> OrderRequest:
    return OrderRequest(SYM, Side.BUY, D(qty), **kwargs)  # type: ignore[arg-type]


def _sell(qty: str, **kwargs: object) -> OrderRequest:
    return OrderRequest(SYM, Side.SELL, D(qty), **kwargs)  # type: ignore[arg-type]


def _limit(side: Side, qty: str, price: str, **kwargs: object) -> OrderRequest:
    return OrderRequest(SYM, side, D(qty), OrderType.LIMIT, D(price), **kwargs)  # type: ignore[arg-type]


async def _run(broker: SimBroker, plan: dict[int, Callable[[SimBroker], object]]) -> list[list[OrderUpdate]]:
    """Replay all bars; after bar i is yielded, await ``plan[i](broker)``. Returns each bar's drained updates."""
    drained: list[list[OrderUpdate]] = []
    i = 0
    async for _ in broker.bars():
        drained.append(broker.drain_updates())
        if i in plan:
            await plan[i](broker)  # type: ignore[misc]
        i += 1
    return drained


# --- protocol -----------------------------------------------------------------------------------


def test_sim_broker_implements_the_protocol() -> None:
    assert isinstance(_broker(), Broker)


# --- market orders, cash and positions ------------------------------------------------------------


async def test_market_buy_then_sell_fill_at_next_open_with_exact_cash() -> None:
    broker = _broker()
    bars = broker.bars()

    await anext(bars)  # bar 0
    accepted = await broker.submit("c1", _buy("10000"))
    assert accepted == OrderUpdate("c1", OrderStatus.ACCEPTED, T0, "sim-1", SYM)
    assert broker.drain_updates() == []  # nothing executes before the next bar

    await anext(bars)  # bar 1: buy fills at 1.1020 * 1.0002 = 1.10222040 -> 1.1023
    (fill_update,) = broker.drain_updates()
    fill = Fill("sim-1-1", "c1", SYM, Side.BUY, D(10000), D("1.1023"), D("1.10"), T0 + H)  # 11023 * 0.0001
    assert fill_update == OrderUpdate("c1", OrderStatus.FILLED, T0 + H, "sim-1", SYM, D(10000), D("1.1023"), fill=fill)
    assert await broker.positions() == [Position(SYM, D(10000), D("1.1023"))]
    # cash 100000 - 11023 - 1.10; equity marks 10000 at the 1.1080 close
    assert await broker.account() == AccountSnapshot(D("88975.90"), D("100055.90"), "USD", T0 + H)

    await broker.submit("c2", _sell("10000"))
    await anext(bars)  # bar 2: sell fills at 1.1090 * 0.9998 = 1.10877820 -> 1.1087, fee 1.1087 -> 1.11
    (sold,) = broker.drain_updates()
    assert sold.fill == Fill("sim-2-1", "c2", SYM, Side.SELL, D(10000), D("1.1087"), D("1.11"), T0 + 2 * H)
    assert await broker.positions() == []
    account = await broker.account()
    assert account.cash == account.equity == D("100061.79")  # 88975.90 + 11087 - 1.11


async def test_fill_at_close_fills_inside_submit() -> None:
    broker = _broker(fill_at="close")
    bars = broker.bars()
    await anext(bars)  # bar 0, close 1.1010
    accepted = await broker.submit("c1", _buy("10000"))
    assert accepted.status is OrderStatus.ACCEPTED and accepted.filled_quantity == 0
    (filled,) = broker.drain_updates()
    # 1.1010 * 1.0002 = 1.10122020 -> 1.1013; fee 11013 * 0.0001 = 1.1013 -> 1.10
    assert filled.status is OrderStatus.FILLED
    assert filled.fill == Fill("sim-1-1", "c1", SYM, Side.BUY, D(10000), D("1.1013"), D("1.10"), T0)
    assert (await broker.account()).cash == D("88985.90")
    await anext(bars)
    assert broker.drain_updates() == []  # nothing left to execute at the next bar


async def test_average_price_adds_reduces_and_flips() -> None:
    free = CostModel(spread_bps=D(0), slippage_bps=D(0), commission_bps=D(0), price_increment=D("0.0001"))
    broker = SimBroker(ReplayFeed(SERIES), free, fill_at="close")
    bars = broker.bars()
    await anext(bars)  # close 1.1010
    await broker.submit("a", _buy("10000"))
    await anext(bars)  # close 1.1080
    await broker.submit("b", _buy("30000"))
    # (10000 * 1.1010 + 30000 * 1.1080) / 40000 = 1.10625
    assert await broker.positions() == [Position(SYM, D(40000), D("1.10625"))]
    await anext(bars)  # close 1.1050
    await broker.submit("c", _sell("15000"))  # reducing keeps the entry price
    assert await broker.positions() == [Position(SYM, D(25000), D("1.10625"))]
    await anext(bars)  # close 1.1070
    await broker.submit("d", _sell("35000"))  # flips through zero: short 10000 at the fill price
    assert await broker.positions() == [Position(SYM, D(-10000), D("1.1070"))]
    await broker.submit("e", _buy("10000"))
    assert await broker.positions() == []
    # Without costs cash is the realised P&L against the average: 15000 * (1.1050 - 1.10625) = -18.75,
    # 25000 * (1.1070 - 1.10625) = +18.75, and the short opened and closed at 1.1070: 0.
    cash = D(100000) - D("11010") - D("33240") + D("16575") + D("38745") - D("11070")
    assert (await broker.account()).cash == cash == D(100000) - D("18.75") + D("18.75")


async def test_short_sale_credits_cash_and_marks_negative() -> None:
    broker = _broker()
    bars = broker.bars()
    await anext(bars)
    await broker.submit("s", _sell("10000"))
    await anext(bars)  # 1.1020 * 0.9998 = 1.10177960 -> 1.1017; fee 1.1017 -> 1.10
    assert await broker.positions() == [Position(SYM, D(-10000), D("1.1017"))]
    account = await broker.account()
    assert account.cash == D("111015.90")  # 100000 + 11017 - 1.10
    assert account.equity == D("111015.90") - D("11080")  # short 10000 marked at 1.1080


# --- limit orders -------------------------------------------------------------------------------


async def test_limit_orders_fill_when_touched_and_wait_otherwise() -> None:
    broker = _broker()
    bars = broker.bars()
    await anext(bars)
    await broker.submit("buy-touch", _limit(Side.BUY, "1000", "1.1000"))  # bar 1 low is 1.1000
    await broker.submit("buy-miss", _limit(Side.BUY, "1000", "1.0990"))  # never reached
    await broker.submit("sell-touch", _limit(Side.SELL, "1000", "1.1100"))  # bar 1 high is 1.1100
    await anext(bars)
    updates = {u.client_order_id: u for u in broker.drain_updates()}
    assert set(updates) == {"buy-touch", "sell-touch"}
    assert updates["buy-touch"].fill == Fill(
        "sim-1-1", "buy-touch", SYM, Side.BUY, D(1000), D("1.1000"), D("0.11"), T0 + H
    )
    assert updates["sell-touch"].fill is not None and updates["sell-touch"].fill.price == D("1.1100")
    assert [u.client_order_id for u in await broker.open_orders()] == ["buy-miss"]
    assert (await broker.get_order("buy-miss")).status is OrderStatus.ACCEPTED  # type: ignore[union-attr]


async def test_limit_order_gapped_through_fills_at_the_better_open() -> None:
    broker = _broker()
    bars = broker.bars()
    await anext(bars)
    await anext(bars)
    await broker.submit("b", _limit(Side.BUY, "1000", "1.1100"))  # bar 2 opens at 1.1090, below the limit
    await broker.submit("s", _limit(Side.SELL, "1000", "1.1000"))  # ... and above this one
    await anext(bars)
    prices = {u.client_order_id: u.fill.price for u in broker.drain_updates() if u.fill}
    assert prices == {"b": D("1.1090"), "s": D("1.1090")}


async def test_limit_orders_wait_in_close_mode_too() -> None:
    broker = _broker(fill_at="close")
    bars = broker.bars()
    await anext(bars)
    await broker.submit("b", _limit(Side.BUY, "1000", "1.1000"))
    assert broker.drain_updates() == []
    await anext(bars)
    (update,) = broker.drain_updates()
    assert update.status is OrderStatus.FILLED and update.average_price == D("1.1000")


# --- partial fills ------------------------------------------------------------------------------


async def test_max_fill_quantity_splits_an_order_across_bars() -> None:
    broker = _broker(max_fill_quantity=D(4000))
    drained = await _run(broker, {0: lambda b: b.submit("big", _buy("10000"))})
    fills = [u for bar_updates in drained for u in bar_updates]
    assert [(u.status, u.filled_quantity) for u in fills] == [
        (OrderStatus.PARTIALLY_FILLED, D(4000)),
        (OrderStatus.PARTIALLY_FILLED, D(8000)),
        (OrderStatus.FILLED, D(10000)),
    ]
    assert [u.fill.fill_id for u in fills if u.fill] == ["sim-1-1", "sim-1-2", "sim-1-3"]
    # opens 1.1020, 1.1090, 1.1060 -> 1.1023, 1.1093 (1.10922180), 1.1063 (1.10622120)
    assert [u.fill.price for u in fills if u.fill] == [D("1.1023"), D("1.1093"), D("1.1063")]
    assert [u.fill.ts for u in fills if u.fill] == [T0 + H, T0 + 2 * H, T0 + 3 * H]
    average = (4000 * D("1.1023") + 4000 * D("1.1093") + 2000 * D("1.1063")) / 10000
    assert fills[-1].average_price == average == D("1.1059")
    assert await broker.positions() == [Position(SYM, D(10000), D("1.1059"))]


async def test_cancel_stops_a_partially_filled_order() -> None:
    broker = _broker(max_fill_quantity=D(4000))
    bars = broker.bars()
    await anext(bars)
    await broker.submit("big", _buy("10000"))
    await anext(bars)
    broker.drain_updates()
    cancelled = await broker.cancel("big")
    assert (cancelled.status, cancelled.filled_quantity) == (OrderStatus.CANCELLED, D(4000))
    assert broker.drain_updates() == [cancelled]
    await anext(bars)
    assert broker.drain_updates() == []
    assert await broker.positions() == [Position(SYM, D(4000), D("1.1023"))]


# --- rejections ---------------------------------------------------------------------------------


async def test_rejections_name_the_problem() -> None:
    broker = _broker()
    with pytest.raises(OrderRejected, match="no price known yet for 'EURUSD'"):
        await broker.submit("early", _buy("1"))
    bars = broker.bars()
    await anext(bars)
    with pytest.raises(OrderRejected, match="quantity must be a positive Decimal"):
        await broker.submit("zero", _buy("0"))
    with pytest.raises(OrderRejected, match="quantity must be a positive Decimal"):
        await broker.submit("neg", _buy("-5"))
    with pytest.raises(OrderRejected, match="limit order without a limit_price"):
        await broker.submit("nolimit", OrderRequest(SYM, Side.BUY, D(1), OrderType.LIMIT))
    with pytest.raises(OrderRejected, match="no price known yet for 'GBPUSD'"):
        await broker.submit("other", OrderRequest("GBPUSD", Side.BUY, D(1)))
    await broker.submit("dup", _buy("1"))
    with pytest.raises(OrderRejected, match="duplicate client_order_id 'dup': already used by order sim-1"):
        await broker.submit("dup", _buy("1"))
    # rejected submissions consume neither an id nor a sequence number
    assert (await broker.submit("zero", _buy("1"))).broker_order_id == "sim-2"


async def test_duplicate_id_is_rejected_after_the_order_filled() -> None:
    broker = _broker()
    bars = broker.bars()
    await anext(bars)
    await broker.submit("once", _buy("1"))
    await anext(bars)
    with pytest.raises(OrderRejected, match="duplicate"):
        await broker.submit("once", _buy("1"))


# --- cancel, queries -----------------------------------------------------------------------------


async def test_cancel_working_unknown_and_terminal_orders() -> None:
    broker = _broker()
    bars = broker.bars()
    await anext(bars)
    await broker.submit("w", _limit(Side.BUY, "1000", "1.0000"))
    cancelled = await broker.cancel("w")
    assert cancelled == OrderUpdate("w", OrderStatus.CANCELLED, T0, "sim-1", SYM, message="cancelled by client")
    assert broker.drain_updates() == [cancelled]
    assert await broker.cancel("w") == cancelled  # idempotent, and no second update
    assert broker.drain_updates() == []
    assert await broker.open_orders() == []
    with pytest.raises(BrokerError, match="unknown client_order_id 'nope'"):
        await broker.cancel("nope")

    await broker.submit("m", _buy("1000"))
    await anext(bars)
    broker.drain_updates()
    done = await broker.cancel("m")
    assert done.status is OrderStatus.FILLED and done.fill is None
    assert broker.drain_updates() == []


async def test_get_order_reports_cumulative_state() -> None:
    broker = _broker(max_fill_quantity=D(600))
    bars = broker.bars()
    await anext(bars)
    assert await broker.get_order("x") is None
    await broker.submit("x", _buy("1000"))
    await anext(bars)
    await anext(bars)
    state = await broker.get_order("x")
    assert state is not None
    assert (state.status, state.filled_quantity, state.fill, state.ts) == (
        OrderStatus.FILLED,
        D(1000),
        None,
        T0 + 2 * H,
    )
    # (600 * 1.1023 + 400 * 1.1093) / 1000
    assert state.average_price == D("1.1051")


async def test_next_update_waits_for_a_fill() -> None:
    broker = _broker()
    bars = broker.bars()
    await anext(bars)
    await broker.submit("n", _buy("1"))
    await anext(bars)
    update = await broker.next_update()
    assert update.status is OrderStatus.FILLED
    assert broker.drain_updates() == []


async def test_historical_bars_never_look_ahead() -> None:
    feed = ReplayFeed(SERIES, start_index=2)
    broker = SimBroker(feed, COSTS)
    assert await broker.historical_bars(SYM, 0, 2**40) == SERIES[:2]
    bars = broker.bars()
    await anext(bars)
    assert await broker.historical_bars(SYM, 0, 2**40) == SERIES[:3]
    assert await broker.historical_bars(SYM, T0 + H, T0 + H) == [SERIES[1]]
    assert await broker.historical_bars("GBPUSD", 0, 2**40) == []


async def test_orders_only_match_bars_of_their_symbol() -> None:
    other = [Bar("GBPUSD", b.ts, b.open * 1.1, b.high * 1.1, b.low * 1.1, b.close * 1.1) for b in SERIES]
    mixed = [bar for pair in zip(SERIES, other, strict=True) for bar in pair]
    broker = _broker(mixed)
    bars = broker.bars()
    await anext(bars)  # EURUSD bar 0
    await broker.submit("e", _buy("1"))
    await anext(bars)  # GBPUSD bar 0
    assert broker.drain_updates() == []
    await anext(bars)  # EURUSD bar 1
    (update,) = broker.drain_updates()
    assert update.fill is not None and update.fill.price == D("1.1023")


async def test_bad_bars_do_not_trade_or_move_the_account() -> None:
    nan_bar = Bar(SYM, T0 + H, float("nan"), 1.2, 1.0, 1.1)
    stale_bar = Bar(SYM, T0, 1.5, 1.6, 1.4, 1.5)  # out of order
    bars_in = [SERIES[0], nan_bar, stale_bar, SERIES[2]]
    broker = _broker(bars_in)
    bars = broker.bars()
    await anext(bars)
    await broker.submit("m", _buy("1000"))
    assert await anext(bars) is nan_bar  # still delivered: the daemon's guard counts it
    assert await anext(bars) is stale_bar
    assert broker.drain_updates() == []
    assert (await broker.account()).equity == D(100000)
    await anext(bars)
    (update,) = broker.drain_updates()
    assert update.fill is not None and update.fill.price == D("1.1093")  # bar 2's open 1.1090


async def test_ioc_and_day_orders_expire() -> None:
    day_bars = [Bar(SYM, T0 + i * 8 * H, 1.1, 1.1, 1.1, 1.1) for i in range(4)]  # 08:00, 16:00, 00:00, 08:00
    broker = _broker(day_bars)
    bars = broker.bars()
    await anext(bars)
    await broker.submit("ioc", _limit(Side.BUY, "1", "1.0", time_in_force=TimeInForce.IOC))
    await broker.submit("day", _limit(Side.BUY, "1", "1.0", time_in_force=TimeInForce.DAY))
    await anext(bars)  # 16:00
    (ioc,) = broker.drain_updates()
    assert (ioc.client_order_id, ioc.status) == ("ioc", OrderStatus.EXPIRED)
    await anext(bars)  # 00:00 closes the bar that covers 16:00-24:00, still the order's day
    assert broker.drain_updates() == []
    await anext(bars)  # 08:00 next day
    (day,) = broker.drain_updates()
    assert (day.client_order_id, day.status, day.ts) == ("day", OrderStatus.EXPIRED, T0 + 24 * H)


async def test_close_stops_the_feed() -> None:
    broker = _broker()
    await broker.connect()
    seen = []
    async for bar in broker.bars():
        seen.append(bar)
        await broker.close()
    assert seen == SERIES[:1]


# --- determinism and persistence -----------------------------------------------------------------


async def _scripted(broker: SimBroker, bars_from: int = 0, stop_after: int | None = None) -> list[OrderUpdate]:
    """A busy, data-independent trading script: every update the broker emits, in order."""
    out: list[OrderUpdate] = []
    async for bar in broker.bars():
        i = broker.feed.position - 1
        out.extend(broker.drain_updates())
        if i % 7 == 0:
            side = Side.BUY if i % 14 == 0 else Side.SELL
            out.append(await broker.submit(f"m{i}", OrderRequest(SYM, side, D(25000))))
        if i % 11 == 0:
            limit = broker.cost_model.round_price(bar.close * 0.999)
            out.append(await broker.submit(f"l{i}", OrderRequest(SYM, Side.BUY, D(10000), OrderType.LIMIT, limit)))
        if i % 11 == 5 and await broker.get_order(f"l{i - 5}") is not None:
            out.append(await broker.cancel(f"l{i - 5}"))
        if stop_after is not None and broker.feed.position == stop_after:
            break
    out.extend(broker.drain_updates())
    return out


@pytest.mark.parametrize("fill_at", ["next_open", "close"])
async def test_two_identical_runs_produce_identical_updates(fill_at: str) -> None:
    data = load_bundled()[:400]
    runs = []
    for _ in range(2):
        broker = SimBroker(ReplayFeed(data), CostModel(), fill_at=fill_at, max_fill_quantity=D(10000))  # type: ignore[arg-type]
        runs.append((await _scripted(broker), await broker.account(), broker.state.to_json()))
    assert runs[0] == runs[1]
    updates = runs[0][0]
    assert sum(1 for u in updates if u.fill) > 100
    assert {u.status for u in updates} >= {OrderStatus.PARTIALLY_FILLED, OrderStatus.FILLED, OrderStatus.CANCELLED}


@pytest.mark.parametrize("fill_at", ["next_open", "close"])
async def test_saved_state_continues_identically(tmp_path: Path, fill_at: str) -> None:
    data = load_bundled()[:400]
    straight = SimBroker(ReplayFeed(data), CostModel(), fill_at=fill_at, max_fill_quantity=D(10000))  # type: ignore[arg-type]
    expected = await _scripted(straight)

    first = SimBroker(ReplayFeed(data), CostModel(), fill_at=fill_at, max_fill_quantity=D(10000))  # type: ignore[arg-type]
    head = await _scripted(first, stop_after=155)  # bar 154 submits orders that are still working
    assert await first.open_orders()
    path = tmp_path / "state" / "sim.json"
    first.save_state(path)
    assert [p.name for p in path.parent.iterdir()] == ["sim.json"]  # no temp file left behind

    second = SimBroker(ReplayFeed(data), CostModel(), fill_at=fill_at, max_fill_quantity=D(10000))  # type: ignore[arg-type]
    second.load_state(path)
    assert second.feed.position == 155
    assert await second.open_orders() == await first.open_orders()
    tail = await _scripted(second)
    assert head + tail == expected
    assert await second.account() == await straight.account()
    assert second.state.to_json() == straight.state.to_json()


def test_state_json_roundtrip_is_exact() -> None:
    state = SimState(
        cash=D("99999.123456789"),
        clock_ts=T0,
        order_seq=3,
        feed_position=2,
        feed_last_ts=T0 + H,
        fills=[Fill("sim-1-1", "c", SYM, Side.SELL, D("1.5"), D("1.10001"), D("0.01"), T0)],
        positions={SYM: Position(SYM, D("-1.5"), D("1.100010000000000000000000001"))},
        last_prices={SYM: D("1.1080")},
        last_bar_ts={SYM: T0 + H},
    )
    text = state.to_json()
    assert json.loads(text)["cash"] == "99999.123456789"
    assert SimState.from_json(text) == state


def test_malformed_state_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="malformed sim state"):
        SimState.from_json('{"version": 1}')
    with pytest.raises(DataError, match="unsupported sim state version"):
        SimState.from_json('{"version": 99}')
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    with pytest.raises(DataError, match=r"bad\.json: malformed sim state"):
        _broker().load_state(path)
    with pytest.raises(DataError, match="cannot read sim state"):
        _broker().load_state(tmp_path / "missing.json")


async def test_state_from_another_feed_is_refused(tmp_path: Path) -> None:
    broker = _broker()
    bars = broker.bars()
    await anext(bars)
    await anext(bars)
    broker.save_state(tmp_path / "s.json")
    shifted = [Bar(b.symbol, b.ts + 60, b.open, b.high, b.low, b.close) for b in SERIES]
    with pytest.raises(DataError, match="does not match this feed"):
        _broker(shifted).load_state(tmp_path / "s.json")
    with pytest.raises(DataError, match="feed has only 1 bars"):
        _broker(SERIES[:1]).load_state(tmp_path / "s.json")


# --- bounded memory ------------------------------------------------------------------------------


async def test_without_a_state_file_only_the_latest_finished_orders_are_remembered() -> None:
    broker = _broker(retain_finished=2)
    bars = broker.bars()
    await anext(bars)
    for i in range(4):
        await broker.submit(f"c{i}", _buy("10") if i % 2 == 0 else _sell("10"))
        await anext(bars)  # fills at this bar's open
    assert [u.client_order_id for u in broker.drain_updates()] == ["c0", "c1", "c2", "c3"]
    assert sorted(broker.state.orders) == ["c2", "c3"], "older finished orders are forgotten"
    assert await broker.get_order("c0") is None and await broker.fills_for("c0") == []
    assert [f.client_order_id for f in await broker.fills_for("c3")] == ["c3"]
    with pytest.raises(OrderRejected, match="duplicate client_order_id 'c3'"):
        await broker.submit("c3", _buy("10"))
    assert broker.state.cash == D(100000) - sum(
        (f.signed_quantity * f.price + f.fee for f in broker.state.fills), D(0)
    ), "what is forgotten is history, not money"


async def test_a_state_file_keeps_the_whole_history(tmp_path: Path) -> None:
    broker = _broker(retain_finished=1, state_file=tmp_path / "sim.json", state_fsync=False)
    await broker.connect()
    bars = broker.bars()
    await anext(bars)
    for i in range(3):
        await broker.submit(f"c{i}", _buy("10"))
        await anext(bars)
    assert sorted(broker.state.orders) == ["c0", "c1", "c2"]
    await broker.close()
