"""The training environment: historical bars, the live feature path, the sim broker's execution.

Everything a policy learns from here must hold in the backtest and live, so
the environment owns no private definitions:

* observations come from ``strategies.features.FeatureProcessor`` fed the same
  bars and the same ``PositionView`` the live pipeline builds;
* execution is the simulated broker's: the action decided on bar t's close is
  a market order for (target - position), filled at bar t+1's OPEN at
  ``cost_model.fill_price(side, open)`` with fee
  ``cost_model.commission(quantity, price)``, booked with exact ``Decimal``
  cash, exactly like ``brokers.sim``;
* the position is booked and marked by ``brokers.accounting.FifoPosition``,
  the daemon portfolio's own rule: FIFO lots; at each bar's close
  ``bars_held`` +1 while holding and ``peak_unrealized`` = max of
  float(qty)·(close - average) since the position opened from flat.

Reward per step, in percent of the starting equity:

    100 · Δequity / initial_equity                   (marked at closes, net of spread, slippage, fees)
  - drawdown_coef · max(0, dd_t - dd_{t-1})          (dd = % below the episode's equity peak)
  + bonus                                            (only when the action is HOLD)

The bonus comes from ``DualLaneController`` with
``error = target_hold_rate - observed_hold_rate``: the regime detector's
target vs the share of HOLD over the last ``hold_window`` actions of the
episode. ``market_multiplier = 1 + |score| / regime_clamp`` (in [1, 2]): the further the regime is
from neutral, the faster the fast lane corrects. Cyclic training moves the target's base per cycle
(``set_hold_rate_target``); the regime's shift around it stays.

Episodes are random windows that never cross a data gap (consecutive bar
timestamps more than ``max_gap_seconds`` apart; weekends are not gaps under
the 3-day default). Each window first feeds ``warmup_bars`` bars to a freshly
reset processor; the first observation is the last warm-up bar's, then
``episode_bars`` steps follow, each consuming one bar.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from brokers.accounting import FifoPosition
from brokers.base import ZERO, Bar, Side
from brokers.costs import CostModel
from strategies.base import ACTION_MAP, FLAT, Action, PositionView
from strategies.controller import DualLaneController
from strategies.features import DEFAULT_FEATURE_CONFIG, FeatureConfig, FeatureProcessor
from strategies.regime import NEUTRAL_REGIME

DEFAULT_MAX_GAP_SECONDS = 3 * 86_400


@dataclass(slots=True)
class _Book(FifoPosition):
    """One symbol's account: cash booked like the sim broker, the position by the daemon
    portfolio's rule (``brokers.accounting``: FIFO lots) and marked like it."""

    cash: Decimal = ZERO
    realized: Decimal = ZERO  # price P&L realized, before fees
    fees: Decimal = ZERO

    def fill(self, side: Side, quantity: Decimal, price: Decimal, fee: Decimal) -> None:
        signed = quantity if side is Side.BUY else -quantity
        self.cash -= signed * price + fee
        self.fees += fee
        self.realized += self.book(signed, price).realized

    def equity(self, close: float) -> Decimal:
        return self.cash + self.quantity * Decimal(repr(close)) if self.quantity else self.cash

    def view(self) -> PositionView:
        if not self.quantity:
            return FLAT
        return PositionView(self.quantity, self.average_float, self.bars_held, self.peak_unrealized)


def gap_free_segments(bars: Sequence[Bar], max_gap_seconds: int) -> list[tuple[int, int]]:
    """Inclusive (first, last) index ranges with no step longer than ``max_gap_seconds``."""
    segments: list[tuple[int, int]] = []
    if not bars:
        return segments
    first = 0
    for i in range(1, len(bars)):
        step = bars[i].ts - bars[i - 1].ts
        if step <= 0:
            raise ValueError(f"bars must be strictly increasing in time (index {i})")
        if step > max_gap_seconds:
            segments.append((first, i - 1))
            first = i
    segments.append((first, len(bars) - 1))
    return segments


class TradingEnv(gym.Env[np.ndarray, int]):
    """One symbol's historical bars as a gymnasium environment with actions HOLD/BUY/SELL/CLOSE."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        bars: Sequence[Bar],
        *,
        cost_model: CostModel | None = None,
        feature_config: FeatureConfig = DEFAULT_FEATURE_CONFIG,
        episode_bars: int = 720,
        trade_units: Decimal | int | str = 100_000,
        initial_equity: Decimal | int | str = 100_000,
        max_gap_seconds: int = DEFAULT_MAX_GAP_SECONDS,
        drawdown_coef: float = 0.5,
        base_bonus: float = 0.005,
        hold_window: int = 96,
        fast_kp: float = 0.25,
        slow_kp: float = 0.05,
        slow_every: int = 25,
    ) -> None:
        super().__init__()
        if len({b.symbol for b in bars}) > 1:
            raise ValueError("TradingEnv takes the bars of exactly one symbol")
        if episode_bars < 1 or hold_window < 1:
            raise ValueError("episode_bars and hold_window must be >= 1")
        self.bars: list[Bar] = list(bars)
        self.symbol = self.bars[0].symbol if self.bars else ""
        self.cost_model = cost_model if cost_model is not None else CostModel()
        self.features = FeatureProcessor(feature_config)
        self.episode_bars = episode_bars
        self.trade_units = Decimal(trade_units)
        self.initial_equity = Decimal(initial_equity)
        if self.trade_units <= 0 or self.initial_equity <= 0:
            raise ValueError("trade_units and initial_equity must be positive")
        self.max_gap_seconds = max_gap_seconds
        self.drawdown_coef = drawdown_coef
        self.hold_window = hold_window
        self.controller = DualLaneController(base_bonus, fast_kp=fast_kp, slow_kp=slow_kp, slow_every=slow_every)
        self._reward_scale = 100.0 / float(self.initial_equity)
        self._clamp = feature_config.regime_clamp
        self._controller_params = {
            "base_bonus": base_bonus, "fast_kp": fast_kp, "slow_kp": slow_kp, "slow_every": slow_every,
        }  # fmt: skip

        self.observation_space = spaces.Box(-1.0, 1.0, shape=(self.features.n_features,), dtype=np.float32)
        self.action_space = spaces.Discrete(len(Action))

        self._window = self.features.warmup_bars + episode_bars
        self._starts = self._valid_starts()
        if not self._starts:
            raise ValueError(
                f"no gap-free window of {self._window} bars (warm-up {self.features.warmup_bars} + "
                f"episode {episode_bars}) in {len(self.bars)} bars"
            )
        self._n_starts = sum(count for _, count in self._starts)

        self._book = _Book(cash=self.initial_equity)
        self._i = 0
        self._end = 0
        self._steps = 0
        self._equity = self.initial_equity
        self._peak_equity = self.initial_equity
        self._drawdown = 0.0
        self._holds: deque[int] = deque(maxlen=hold_window)
        self._hold_count = 0
        self._hold_shift = 0.0  # scheduled base hold rate minus the regime's (cyclic training)

    def set_hold_rate_target(self, base: float | None) -> None:
        """Move the controller's target hold rate: ``base`` replaces the regime's neutral base rate (0.55)
        and the regime still shifts it by its score; None restores the regime's own target.

        Cyclic training calls it between cycles (a schedule such as 0.75 -> 0.25) so early cycles learn
        to wait and later ones to act, with the controller steering the hold bonus toward each target.
        """
        if base is not None and not 0.0 <= base <= 1.0:
            raise ValueError(f"hold-rate target must be in [0, 1], got {base}")
        self._hold_shift = 0.0 if base is None else base - NEUTRAL_REGIME.target_hold_rate

    # ------------------------------------------------------------------ metadata
    def describe(self) -> dict[str, Any]:
        """What a trained model must record to be refused where it does not fit."""
        cm = self.cost_model
        return {
            **self.features.describe(),
            "action_map": list(ACTION_MAP),
            "observation_shape": list(self.observation_space.shape),
            "cost_model": {k: str(getattr(cm, k)) for k in cm.__dataclass_fields__},
            "trade_units": str(self.trade_units),
            "initial_equity": str(self.initial_equity),
            "episode_bars": self.episode_bars,
            "max_gap_seconds": self.max_gap_seconds,
            "drawdown_coef": self.drawdown_coef,
            "hold_window": self.hold_window,
            "controller": dict(self._controller_params),
        }

    @property
    def valid_starts(self) -> list[tuple[int, int]]:
        """(first start index, how many consecutive starts) per gap-free segment."""
        return list(self._starts)

    def _valid_starts(self) -> list[tuple[int, int]]:
        starts = []
        for first, last in gap_free_segments(self.bars, self.max_gap_seconds):
            count = (last - first + 1) - self._window + 1
            if count > 0:
                starts.append((first, count))
        return starts

    def _is_valid_start(self, start: int) -> bool:
        return any(first <= start < first + count for first, count in self._starts)

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode at a random gap-free window, or at ``options["start"]`` (a bar index)."""
        super().reset(seed=seed)
        if options and options.get("start") is not None:
            start = int(options["start"])
            if not self._is_valid_start(start):
                raise ValueError(f"start {start} does not begin a gap-free window of {self._window} bars")
        else:
            start = self._pick_start(int(self.np_random.integers(self._n_starts)))

        fp = self.features
        fp.reset(self.symbol)
        warm_end = start + fp.warmup_bars
        for bar in self.bars[start:warm_end]:
            fp.update_market(self.symbol, bar)
        self._i = warm_end - 1
        self._end = start + self._window - 1
        self._steps = 0
        self._book = _Book(cash=self.initial_equity)
        self._equity = self._peak_equity = self.initial_equity
        self._drawdown = 0.0
        self._holds.clear()
        self._hold_count = 0
        self.controller.reset()
        obs = fp.observation(self.symbol, FLAT)
        return obs.astype(np.float32), self._info(bonus=self.controller.bonus, fill_price=None)

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        act = Action(int(action))
        book = self._book
        regime = self.features.regime(self.symbol)
        target = self._target_hold_rate(regime.target_hold_rate)
        observed = self._hold_count / len(self._holds) if self._holds else target
        bonus = self.controller.update(target - observed, 1.0 + abs(regime.score) / self._clamp)
        self._record(act is Action.HOLD)

        self._i += 1
        bar = self.bars[self._i]
        fill_price = self._execute(act, bar)
        book.mark(bar.close)
        obs = self.features.update_market(self.symbol, bar)
        assert obs is not None  # warm-up is complete and windows never cross gaps
        obs = self.features.observation(self.symbol, book.view())

        equity = book.equity(bar.close)
        pnl = float(equity - self._equity) * self._reward_scale
        self._equity = equity
        if equity > self._peak_equity:
            self._peak_equity = equity
        drawdown = float((self._peak_equity - equity) / self._peak_equity) * 100.0
        penalty = self.drawdown_coef * (drawdown - self._drawdown) if drawdown > self._drawdown else 0.0
        self._drawdown = drawdown
        reward = pnl - penalty + (bonus if act is Action.HOLD else 0.0)

        self._steps += 1
        terminated = equity <= 0
        truncated = not terminated and self._i >= self._end
        info = self._info(bonus=bonus, fill_price=fill_price)
        info.update(reward_pnl=pnl, reward_drawdown=-penalty, action=act.name)
        return obs.astype(np.float32), reward, terminated, truncated, info

    # ------------------------------------------------------------------ internals
    def _pick_start(self, k: int) -> int:
        for first, count in self._starts:
            if k < count:
                return first + k
            k -= count
        raise AssertionError("start index out of range")  # pragma: no cover

    def _target_hold_rate(self, regime_target: float) -> float:
        if not self._hold_shift:
            return regime_target
        return min(1.0, max(0.0, regime_target + self._hold_shift))

    def _record(self, held: bool) -> None:
        holds = self._holds
        if len(holds) == holds.maxlen:
            self._hold_count -= holds[0]
        holds.append(int(held))
        self._hold_count += int(held)

    def _target(self, act: Action) -> Decimal:
        if act is Action.BUY:
            return self.trade_units
        if act is Action.SELL:
            return -self.trade_units
        if act is Action.CLOSE:
            return ZERO
        return self._book.quantity

    def _execute(self, act: Action, bar: Bar) -> Decimal | None:
        """The sim broker's market order: (target - position) at this bar's open, through the cost model."""
        delta = self._target(act) - self._book.quantity
        if not delta:
            return None
        side = Side.BUY if delta > 0 else Side.SELL
        quantity = abs(delta)
        price = self.cost_model.fill_price(side, bar.open)
        self._book.fill(side, quantity, price, self.cost_model.commission(quantity, price))
        return price

    def _info(self, *, bonus: float, fill_price: Decimal | None) -> dict[str, Any]:
        book = self._book
        regime = self.features.regime(self.symbol)
        holds = self._holds
        return {
            "ts": self.bars[self._i].ts,
            "bar_index": self._i,
            "equity": float(self._equity),
            "cash": float(book.cash),
            "position": float(book.quantity),
            "position_view": book.view(),
            "realized": float(book.realized),
            "fees": float(book.fees),
            "fill_price": None if fill_price is None else float(fill_price),
            "hold_rate": self._hold_count / len(holds) if holds else 0.0,
            "target_hold_rate": self._target_hold_rate(regime.target_hold_rate),
            "regime_score": regime.score,
            "bonus": bonus,
            "drawdown_pct": self._drawdown,
        }
