"""TradingEnv: gymnasium contract, exact execution P&L, gap-free windows, determinism, feature parity."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_EVEN, Decimal

import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from brokers.base import Bar, Fill, OrderRequest, Side
from brokers.costs import CostModel
from brokers.history import load_bundled
from brokers.sim import SimBroker
from brokers.sim.replay import ReplayFeed
from daemon.portfolio import Portfolio
from strategies.base import ACTION_MAP, FLAT, Action
from strategies.features import DEFAULT_FEATURE_CONFIG, FEATURE_NAMES, FeatureProcessor, feature_hash
from strategies.training.env import TradingEnv, gap_free_segments

WARMUP = DEFAULT_FEATURE_CONFIG.warmup_bars
HOUR = 3600
T0 = 1_483_315_200  # 2017-01-02 00:00 UTC


def _series(n: int, start_ts: int = T0, symbol: str = "TEST") -> list[Bar]:
    """A small deterministic, gap-free series; opens on a 1e-5 grid so fills are easy to hand-compute."""
    bars = []
    for i in range(n):
        close = round(1.1 + 0.01 * math.sin(i / 7.0) + 0.002 * math.cos(i / 2.3), 5)
        open_ = round(1.1 + 0.01 * math.sin((i - 0.5) / 7.0), 5)
        high = max(open_, close) + 0.0004
        low = min(open_, close) - 0.0003
        bars.append(Bar(symbol, start_ts + i * HOUR, open_, high, low, close, 1000.0))
    return bars


@pytest.fixture(scope="module")
def bundled() -> list[Bar]:
    return load_bundled()


def test_check_env_passes(bundled: list[Bar]) -> None:
    env = TradingEnv(bundled, episode_bars=64)
    check_env(env, skip_render_check=True)


def test_spaces_and_metadata() -> None:
    env = TradingEnv(_series(WARMUP + 20), episode_bars=10)
    assert env.action_space.n == 4 == len(ACTION_MAP)
    assert env.observation_space.shape == (len(FEATURE_NAMES),)
    assert env.observation_space.dtype == np.float32
    meta = env.describe()
    assert meta["feature_hash"] == feature_hash()
    assert meta["action_map"] == ["HOLD", "BUY", "SELL", "CLOSE"]
    assert meta["warmup_bars"] == WARMUP


def _hand_buy(open_: float) -> Decimal:
    # spread 1 bp / 2 + slippage 0.5 bp = 1 bp adverse, rounded up to the 1e-5 tick
    return (Decimal(repr(open_)) * Decimal("1.0001")).quantize(Decimal("0.00001"), rounding=ROUND_CEILING)


def _hand_sell(open_: float) -> Decimal:
    return (Decimal(repr(open_)) * Decimal("0.9999")).quantize(Decimal("0.00001"), rounding=ROUND_FLOOR)


def _hand_fee(quantity: Decimal, price: Decimal) -> Decimal:
    return (quantity * price * Decimal("0.00002")).quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN)


def test_buy_then_close_books_the_hand_computed_pnl() -> None:
    bars = _series(WARMUP + 10)
    # Exact opens for the two execution bars.
    bars[WARMUP] = replace(bars[WARMUP], open=1.1, high=max(bars[WARMUP].high, 1.1), low=min(bars[WARMUP].low, 1.1))
    b = bars[WARMUP + 3]
    bars[WARMUP + 3] = replace(b, open=1.105, high=max(b.high, 1.105), low=min(b.low, 1.105))
    units = Decimal(100_000)
    env = TradingEnv(bars, episode_bars=10, trade_units=units, initial_equity=100_000, drawdown_coef=0.0,
                     base_bonus=0.0)  # fmt: skip
    _, info = env.reset(options={"start": 0})
    assert info["bar_index"] == WARMUP - 1 and info["position"] == 0.0

    # decided on bar WARMUP-1's close, filled at bar WARMUP's open
    _, r_buy, *_, info = env.step(Action.BUY)
    buy = _hand_buy(1.1)
    assert buy == Decimal("1.10011") == env.cost_model.fill_price(Side.BUY, 1.1)
    assert info["fill_price"] == float(buy) and info["position"] == 100_000
    pnl_rewards = [info["reward_pnl"]]
    for _ in range(2):
        _, _, _, _, info = env.step(Action.HOLD)
        assert info["fill_price"] is None
        pnl_rewards.append(info["reward_pnl"])
    _, _, _, _, info = env.step(Action.CLOSE)  # filled at bar WARMUP+3's open
    pnl_rewards.append(info["reward_pnl"])
    sell = _hand_sell(1.105)
    assert sell == Decimal("1.10488") and info["fill_price"] == float(sell)

    fees = _hand_fee(units, buy) + _hand_fee(units, sell)
    assert fees == Decimal("2.20") + Decimal("2.21")
    pnl = units * (sell - buy) - fees
    assert pnl == Decimal("472.59")
    assert info["position"] == 0.0
    assert env._book.cash == Decimal(100_000) + pnl
    assert env._book.realized == units * (sell - buy)
    assert env._book.fees == fees
    assert info["equity"] == float(Decimal(100_000) + pnl)
    # the per-step P&L rewards add up to the round trip in % of starting equity
    assert sum(pnl_rewards) == pytest.approx(float(pnl) / 1000.0, abs=1e-12)
    assert r_buy == pytest.approx(pnl_rewards[0])


def test_flip_is_one_order_for_the_difference() -> None:
    bars = _series(WARMUP + 6)
    env = TradingEnv(bars, episode_bars=5, trade_units=1000, drawdown_coef=0.0, base_bonus=0.0)
    env.reset(options={"start": 0})
    env.step(Action.BUY)
    _, _, _, _, info = env.step(Action.SELL)
    assert info["position"] == -1000
    open_ = bars[WARMUP + 1].open
    sell = _hand_sell(open_)
    assert info["fill_price"] == float(sell)
    buy = _hand_buy(bars[WARMUP].open)
    expected_fees = _hand_fee(Decimal(1000), buy) + _hand_fee(Decimal(2000), sell)
    assert env._book.fees == expected_fees
    assert env._book.realized == Decimal(1000) * (sell - buy)
    view = info["position_view"]
    assert view.average_price == float(sell) and view.bars_held == 1


def test_drawdown_penalty_and_hold_bonus_enter_the_reward() -> None:
    bars = _series(WARMUP + 40)
    env = TradingEnv(bars, episode_bars=30, drawdown_coef=2.0, base_bonus=0.01)
    env.reset(options={"start": 0})
    _, reward, _, _, info = env.step(Action.HOLD)
    assert reward == pytest.approx(info["reward_pnl"] + info["reward_drawdown"] + info["bonus"])
    assert 0.0 <= info["bonus"] <= 0.02
    env.step(Action.BUY)
    saw_penalty = False
    for _ in range(20):
        _, reward, _, _, info = env.step(Action.BUY)  # already long: no order, no bonus
        assert info["fill_price"] is None
        assert reward == pytest.approx(info["reward_pnl"] + info["reward_drawdown"])
        saw_penalty |= info["reward_drawdown"] < 0
        assert info["reward_drawdown"] <= 0
    assert saw_penalty


def test_windows_never_cross_a_gap() -> None:
    first = _series(WARMUP + 30, symbol="GAP")
    # a 4-day hole, then a segment too short for a window, another hole, then a long segment
    second = _series(WARMUP, start_ts=first[-1].ts + 4 * 86_400, symbol="GAP")
    third = _series(WARMUP + 50, start_ts=second[-1].ts + 5 * 86_400, symbol="GAP")
    bars = first + second + third
    segments = gap_free_segments(bars, 3 * 86_400)
    assert segments == [(0, len(first) - 1), (len(first), len(first) + len(second) - 1),
                        (len(first) + len(second), len(bars) - 1)]  # fmt: skip
    env = TradingEnv(bars, episode_bars=20)
    assert env.valid_starts == [(0, 11), (len(first) + len(second), 31)]
    for seed in range(40):
        _, info = env.reset(seed=seed)
        start = info["bar_index"] - WARMUP + 1
        window = bars[start : start + WARMUP + 20]
        assert len(window) == WARMUP + 20
        assert max(b.ts - a.ts for a, b in itertools.pairwise(window)) == HOUR
        done = False
        while not done:
            _, _, terminated, truncated, info = env.step(Action.HOLD)
            done = terminated or truncated
        assert info["bar_index"] == start + WARMUP + 20 - 1
    with pytest.raises(ValueError):
        env.reset(options={"start": len(first) + 1})  # would run into the 4-day hole
    with pytest.raises(ValueError):
        TradingEnv(second, episode_bars=1)  # one bar short of warm-up + 1 step


def test_weekend_gaps_are_not_data_gaps(bundled: list[Bar]) -> None:
    assert gap_free_segments(bundled, 3 * 86_400) == [(0, len(bundled) - 1)]


def _rollout(env: TradingEnv, seed: int, actions: list[int]) -> tuple[list[np.ndarray], list[float], list[int]]:
    obs, info = env.reset(seed=seed)
    observations, rewards, indices = [obs], [], [info["bar_index"]]
    for a in actions:
        obs, reward, terminated, truncated, info = env.step(a)
        observations.append(obs)
        rewards.append(reward)
        indices.append(info["bar_index"])
        if terminated or truncated:
            break
    return observations, rewards, indices


def _scripted_actions(n: int) -> list[int]:
    """A fixed, non-random action script that buys, sells, flips, closes and holds."""
    pattern = [1, 0, 0, 0, 2, 0, 0, 1, 3, 0, 0, 2, 2, 3, 0, 1]
    return [pattern[(i * 5 + i // 7) % len(pattern)] for i in range(n)]


def test_seeded_resets_are_deterministic(bundled: list[Bar]) -> None:
    actions = _scripted_actions(50)
    a = _rollout(TradingEnv(bundled, episode_bars=50), 123, actions)
    b = _rollout(TradingEnv(bundled, episode_bars=50), 123, actions)
    assert a[2] == b[2]
    assert a[1] == b[1]
    for x, y in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(x, y)
    starts = {_rollout(TradingEnv(bundled, episode_bars=50), s, [])[2][0] for s in range(5)}
    assert len(starts) > 1


def test_observations_equal_feature_processor_fed_the_live_way(bundled: list[Bar]) -> None:
    """Parity with the live pipeline: fills booked by the daemon's Portfolio, features by a fresh processor."""
    env = TradingEnv(bundled, episode_bars=300)
    obs, info = env.reset(seed=7)
    start = info["bar_index"] - WARMUP + 1
    symbol = bundled[0].symbol
    cm = CostModel()

    live = FeatureProcessor()
    portfolio = Portfolio(Decimal(100_000))
    for bar in bundled[start : start + WARMUP]:
        portfolio.mark(symbol, bar.close, bar.ts)
        live_obs = live.update(symbol, bar, portfolio.view(symbol))
    np.testing.assert_array_equal(obs, live_obs.astype(np.float32))

    fills = 0
    for step, action in enumerate(_scripted_actions(300)):
        obs, _, terminated, truncated, info = env.step(action)
        bar = bundled[info["bar_index"]]
        # the live side: sizing -> market order for (target - position), sim fill at this bar's open
        held = portfolio.quantity(symbol)
        target = {Action.BUY: Decimal(100_000), Action.SELL: Decimal(-100_000), Action.CLOSE: Decimal(0)}.get(
            Action(action), held
        )
        if target != held:
            side = Side.BUY if target > held else Side.SELL
            price = cm.fill_price(side, bar.open)
            qty = abs(target - held)
            portfolio.apply_fill(Fill(f"f{step}", f"c{step}", symbol, side, qty, price, cm.commission(qty, price),
                                      bar.ts))  # fmt: skip
            fills += 1
        portfolio.mark(symbol, bar.close, bar.ts)
        view = portfolio.view(symbol)
        assert info["position_view"] == view, step
        live_obs = live.update(symbol, bar, view)
        np.testing.assert_array_equal(obs, live_obs.astype(np.float32), err_msg=f"step {step}")
        assert portfolio.cash == env._book.cash
        assert portfolio.realized == env._book.realized  # one accounting rule: brokers.accounting's FIFO lots
        assert info["equity"] == pytest.approx(portfolio.equity(), abs=1e-6)
        if terminated or truncated:
            break
    assert fills > 20 and truncated


def test_obs_bounded_and_info_complete(bundled: list[Bar]) -> None:
    env = TradingEnv(bundled, episode_bars=200)
    obs, info = env.reset(seed=1)
    for action in _scripted_actions(200):
        assert env.observation_space.contains(obs)
        obs, reward, terminated, truncated, info = env.step(action)
        assert math.isfinite(reward)
        if terminated or truncated:
            break
    for key in ("equity", "position", "hold_rate", "regime_score", "target_hold_rate", "bonus"):
        assert key in info
    assert 0.0 <= info["hold_rate"] <= 1.0
    assert info["position_view"] != FLAT or info["position"] == 0.0


async def test_execution_matches_the_sim_broker_bar_for_bar(bundled: list[Bar]) -> None:
    """Training and backtest agree: the same decisions through SimBroker give the same fills, cash and equity."""
    episode = 200
    env = TradingEnv(bundled, episode_bars=episode)
    _, info = env.reset(seed=11)
    start = info["bar_index"] - WARMUP + 1
    window = bundled[start : start + WARMUP + episode]
    symbol = window[0].symbol
    feed = ReplayFeed(window)
    broker = SimBroker(feed, CostModel(), starting_cash=Decimal(100_000))
    actions = _scripted_actions(episode)
    units = Decimal(100_000)
    infos: list[dict[str, object]] = []
    fills = 0
    async for bar in broker.bars():
        j = feed.position - 1
        fills += sum(1 for u in broker.drain_updates() if u.fill is not None)
        if j >= WARMUP:  # the decision taken on bar j-1 has just executed at bar j's open in both
            step_info = infos[j - WARMUP]
            assert step_info["bar_index"] == start + j
            held = broker.state.positions.get(symbol)
            assert env._book.quantity == (held.quantity if held else 0)
            assert env._book.average == (held.average_price if held else 0)
            assert env._book.cash == broker.state.cash
            assert env._book.equity(bar.close) == (await broker.account()).equity
        k = j - WARMUP + 1
        if 0 <= k < episode:
            action = Action(actions[k])
            held_qty = broker.state.positions[symbol].quantity if symbol in broker.state.positions else Decimal(0)
            target = {Action.BUY: units, Action.SELL: -units, Action.CLOSE: Decimal(0)}.get(action, held_qty)
            if target != held_qty:
                side = Side.BUY if target > held_qty else Side.SELL
                await broker.submit(f"c{j}", OrderRequest(symbol, side, abs(target - held_qty)))
            infos.append(env.step(action)[4])
    assert len(infos) == episode and fills > 20
