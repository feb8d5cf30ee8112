"""The one feature path for training and live trading.

``TradingEnv`` and the live strategy both turn bars into observations through
``FeatureProcessor``; nothing else computes features. A model records
``feature_hash()`` and refuses to run where the hash differs, so a model never
sees features computed differently from the ones it was trained on.

Two steps, because position features depend on fills and fills happen
between bars:

1. ``update_market(symbol, bar)`` — every bar, in order. Updates the market
   and regime state; returns the market part, or ``None`` during warm-up.
2. ``observation(symbol, position)`` — the market part of the last bar plus the
   position part computed from a ``PositionView`` (quantity, average_price,
   bars_held, peak_unrealized).

``update(symbol, bar, position)`` does both. Callers must build the
``PositionView`` the same way: apply the fills executed at this bar's open,
mark the position at this bar's close (``bars_held += 1`` while holding;
``peak_unrealized = max(peak, unrealized)`` in account currency, starting at
0 when a position opens from flat), then ask for the observation. The daemon's
``Portfolio.view`` and ``TradingEnv`` follow exactly that order.

Feature definitions (default windows; all windows are configurable and part
of the hash). Every market feature is a finite-window function of the last
``warmup_bars`` bars, so a live symbol re-warmed from recent history produces
the same observation as training did on the same bars:

* ``ret_k``        log(close_t / close_{t-k}), k = 1, 4, 24;
* ``vol_w``        sample std (ddof=1) of 1-bar log returns over w = 24, 96;
* ``rsi_14``       (RSI - 50) / 50 with simple averages of gains and losses,
                   which equals Σ Δclose / Σ |Δclose| over 14 changes (0 if flat);
* ``atr_14``       mean true range over 14 bars / close;
* ``zsma_w``       (close - SMA_w) / std_w(close) (ddof=1; 0 if the window is flat);
* ``range``        (high - low) / close of this bar;
* ``tod_*``        sin/cos of 2π · (seconds since UTC midnight of ``Bar.ts``) / 86400;
* ``dow_*``        sin/cos of 2π · weekday / 7 (Monday = 0) of ``Bar.ts``;
* ``regime_*``     the detector's three z-scores and score (see ``strategies.regime``);
* ``pos_side``     -1 / 0 / +1;
* ``pos_bars_held`` bars held;
* ``pos_unrealized`` unrealized P&L / entry notional (|qty| · average_price);
* ``pos_drawdown`` (peak_unrealized - unrealized) / entry notional, >= 0.

Scaling to a range a neural net likes: every value ends in [-1, 1].
Unbounded quantities use squash(x, s) = (2/π)·arctan(x/s), which is linear
(slope 2/(π·s)) around 0 and saturates smoothly instead of clipping. Returns use
s = return_scale·√k so every horizon has a similar spread; volatility, ATR,
range and the position quantities are non-negative and land in [0, 1).
RSI is already in [-1, 1]; time encodings are sin/cos. Regime z-scores and
score are clipped to [-regime_clamp, regime_clamp] and divided by it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

import numpy as np

from brokers.base import Bar
from strategies.base import FLAT, PositionView
from strategies.regime import NEUTRAL_REGIME, MarketRegimeDetector, RegimeState, RollingStats
from strategies.rolling import RollingSum

FEATURE_SCHEMA_VERSION = 1

_K = 2.0 / math.pi
_TAU = 2.0 * math.pi
_DAY = 86_400
# 1970-01-01 was a Thursday; with Monday = 0 that is weekday 3.
_EPOCH_WEEKDAY = 3
# Σ|Δclose| below this fraction of the price is rounding residue of a flat window.
_FLAT_EPS = 1e-12


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Every parameter that changes a feature's value. All of it goes into the hash."""

    return_windows: tuple[int, ...] = (1, 4, 24)
    vol_windows: tuple[int, ...] = (24, 96)
    sma_windows: tuple[int, ...] = (24, 96)
    rsi_window: int = 14
    atr_window: int = 14
    regime_window: int = 96
    regime_weights: tuple[float, float, float] = (0.4, 0.3, 0.3)  # momentum, volatility, divergence
    regime_clamp: float = 3.0  # the score's clamp; z-scores are clipped to it too, then divided by it
    return_scale: float = 0.001  # per √bar; EUR/USD 1h std of 1-bar log returns ≈ 0.0009
    vol_scale: float = 0.001
    atr_scale: float = 0.001
    range_scale: float = 0.001
    z_scale: float = 2.0
    bars_held_scale: float = 24.0
    pnl_scale: float = 0.005

    def __post_init__(self) -> None:
        for name in ("return_windows", "vol_windows", "sma_windows"):
            windows = getattr(self, name)
            if not windows or list(windows) != sorted(set(windows)):
                raise ValueError(f"{name} must be non-empty, strictly increasing: {windows}")
        if self.return_windows[0] < 1:
            raise ValueError("return windows must be >= 1")
        if self.vol_windows[0] < 2 or self.sma_windows[0] < 2 or len(self.sma_windows) < 2:
            raise ValueError("volatility/SMA windows must be >= 2, and at least two SMA windows")
        if self.rsi_window < 1 or self.atr_window < 1 or self.regime_window < 2:
            raise ValueError("rsi/atr windows must be >= 1 and the regime window >= 2")
        scales = (
            self.return_scale, self.vol_scale, self.atr_scale, self.range_scale,
            self.z_scale, self.regime_clamp, self.bars_held_scale, self.pnl_scale,
        )  # fmt: skip
        if min(scales) <= 0:
            raise ValueError("scales must be positive")

    @property
    def market_names(self) -> tuple[str, ...]:
        return (
            *(f"ret_{k}" for k in self.return_windows),
            *(f"vol_{w}" for w in self.vol_windows),
            f"rsi_{self.rsi_window}",
            f"atr_{self.atr_window}",
            *(f"zsma_{w}" for w in self.sma_windows),
            "range",
            "tod_sin",
            "tod_cos",
            "dow_sin",
            "dow_cos",
            "regime_momentum_z",
            "regime_volatility_z",
            "regime_divergence_z",
            "regime_score",
        )

    @property
    def names(self) -> tuple[str, ...]:
        return (*self.market_names, *POSITION_FEATURE_NAMES)

    @property
    def market_warmup(self) -> int:
        """Bars until every market window is full (the regime detector starts then)."""
        return max(
            self.return_windows[-1] + 1,
            self.vol_windows[-1] + 1,
            self.sma_windows[-1],
            self.rsi_window + 1,
            self.atr_window + 1,
        )

    @property
    def warmup_bars(self) -> int:
        """The first bar that yields an observation is the ``warmup_bars``-th one."""
        return self.market_warmup + self.regime_window - 1

    def hash(self) -> str:
        """sha256 over schema version, feature names and every value-changing parameter."""
        payload = {"version": FEATURE_SCHEMA_VERSION, "names": list(self.names), "params": asdict(self)}
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()


POSITION_FEATURE_NAMES: tuple[str, ...] = ("pos_side", "pos_bars_held", "pos_unrealized", "pos_drawdown")
DEFAULT_FEATURE_CONFIG = FeatureConfig()
FEATURE_NAMES: tuple[str, ...] = DEFAULT_FEATURE_CONFIG.names


def feature_hash(config: FeatureConfig = DEFAULT_FEATURE_CONFIG) -> str:
    """The hash every model records in its metadata and is checked against at load time."""
    return config.hash()


def squash(x: float, scale: float) -> float:
    """(2/π)·arctan(x/scale): bounded to (-1, 1), linear near 0, monotone."""
    return _K * math.atan(x / scale)


class _SymbolState:
    """Everything one symbol needs between bars. Created fresh on reset."""

    __slots__ = (
        "atr",
        "bars",
        "close",
        "closes",
        "closes_idx",
        "detector",
        "last_ts",
        "market",
        "moves",
        "ready",
        "regime",
        "smas",
        "vol_rest",
        "vol_short",
    )

    def __init__(self, config: FeatureConfig) -> None:
        self.bars = 0
        self.last_ts = -(2**62)
        self.close = math.nan
        # Holds close_{t-k} for every return window and close_{t-rsi} for the RSI.
        self.closes = [0.0] * (max(config.return_windows[-1], config.rsi_window) + 1)
        self.closes_idx = 0
        vols = [RollingStats(w) for w in config.vol_windows]
        self.vol_short = vols[0]  # also the regime's volatility measure
        self.vol_rest = tuple(vols[1:])
        self.smas = tuple(RollingStats(w) for w in config.sma_windows)
        self.moves = RollingSum(config.rsi_window)
        self.atr = RollingSum(config.atr_window)
        self.detector = MarketRegimeDetector(
            window=config.regime_window, weights=config.regime_weights, clamp=config.regime_clamp
        )
        self.regime: RegimeState = NEUTRAL_REGIME
        self.ready = False
        # The market part of the last bar's observation, as Python floats: the per-bar work is
        # scalar math, and one np.array() per observation is cheaper than writing into an array.
        self.market: list[float] = []


_FLAT_POSITION = (0.0, 0.0, 0.0, 0.0)
# Seconds of the day -> (sin, cos) of the time-of-day angle; bars repeat a handful of times of
# day, so the trigonometry is done once per distinct time. Bounded for second-stamped data.
_TOD_CACHE_MAX = 4096


class FeatureProcessor:
    """Incremental features for any number of symbols, O(1) per bar per symbol.

    Arrays returned by ``update_market``, ``observation`` and ``update`` are
    fresh float64 arrays: callers may keep them (rollout buffers, decision
    logs) without seeing them change on the next bar.
    """

    def __init__(self, config: FeatureConfig = DEFAULT_FEATURE_CONFIG) -> None:
        self.config = config
        self.names: tuple[str, ...] = config.names
        self.n_features = len(self.names)
        self.n_market = len(config.market_names)
        self.warmup_bars = config.warmup_bars
        self.feature_hash = config.hash()
        self._market_warmup = config.market_warmup
        self._states: dict[str, _SymbolState] = {}
        c = config
        self._ret = tuple((k, 1.0 / (c.return_scale * math.sqrt(k))) for k in c.return_windows)
        self._inv_vol = 1.0 / c.vol_scale
        self._inv_atr = 1.0 / c.atr_scale
        self._inv_range = 1.0 / c.range_scale
        self._inv_z = 1.0 / c.z_scale
        self._clip = c.regime_clamp
        self._inv_bars = 1.0 / c.bars_held_scale
        self._inv_pnl = 1.0 / c.pnl_scale
        self._tod: dict[int, tuple[float, float]] = {}
        dow = [_TAU * weekday / 7 for weekday in range(7)]
        self._dow = tuple((math.sin(angle), math.cos(angle)) for angle in dow)

    def describe(self) -> dict[str, object]:
        """The schema facts a model records at training time and is checked against at load time."""
        return {
            "feature_schema_version": FEATURE_SCHEMA_VERSION,
            "feature_hash": self.feature_hash,
            "feature_names": list(self.names),
            "feature_config": asdict(self.config),
            "warmup_bars": self.warmup_bars,
        }

    # ------------------------------------------------------------------ state
    def reset(self, symbol: str | None = None) -> None:
        """Forget a symbol (after a data gap: warm-up restarts), or every symbol."""
        if symbol is None:
            self._states.clear()
        else:
            self._states.pop(symbol, None)

    def ready(self, symbol: str) -> bool:
        state = self._states.get(symbol)
        return state is not None and state.ready

    def bars_seen(self, symbol: str) -> int:
        state = self._states.get(symbol)
        return 0 if state is None else state.bars

    def regime(self, symbol: str) -> RegimeState:
        """The latest regime reading (neutral until the detector has bootstrapped)."""
        state = self._states.get(symbol)
        return NEUTRAL_REGIME if state is None else state.regime

    def last_close(self, symbol: str) -> float:
        state = self._states.get(symbol)
        return math.nan if state is None else state.close

    # ------------------------------------------------------------------ bars
    def update_market(self, symbol: str, bar: Bar) -> np.ndarray | None:
        """Feed one bar; returns a copy of the market part, or None during warm-up."""
        state = self._advance(symbol, bar)
        if not state.ready:
            return None
        return np.array(state.market, dtype=np.float64)

    def observation(self, symbol: str, position: PositionView = FLAT) -> np.ndarray:
        """Market part of the symbol's last bar plus the position part, as a fresh array."""
        state = self._states.get(symbol)
        if state is None or not state.ready:
            raise RuntimeError(f"{symbol}: no observation before warm-up completes")
        return np.array([*state.market, *self._position(state, position)], dtype=np.float64)

    def update(self, symbol: str, bar: Bar, position: PositionView = FLAT) -> np.ndarray | None:
        """``update_market`` + ``observation`` in one call; None during warm-up."""
        state = self._advance(symbol, bar)
        if not state.ready:
            return None
        return np.array([*state.market, *self._position(state, position)], dtype=np.float64)

    # ------------------------------------------------------------------ internals
    def _advance(self, symbol: str, bar: Bar) -> _SymbolState:
        state = self._states.get(symbol)
        if state is None:
            state = self._states[symbol] = _SymbolState(self.config)
        c = bar.close
        h = bar.high
        lo = bar.low
        ts = bar.ts
        # Cheap guard: NaN fails every comparison. The daemon's bar guard should
        # already have rejected such bars; this keeps NaN out of a model anyway.
        if not (c > 0.0 and lo > 0.0 and h >= lo):
            raise ValueError(f"{symbol}: invalid bar prices {bar!r}")
        if ts <= state.last_ts:
            raise ValueError(f"{symbol}: bar ts {ts} not after previous {state.last_ts}")
        state.last_ts = ts

        prev = state.close
        n = state.bars + 1
        state.bars = n
        state.close = c

        closes = state.closes
        idx = state.closes_idx
        closes[idx] = c
        state.closes_idx = idx + 1 if idx + 1 < len(closes) else 0

        if n >= self._market_warmup:  # >= 2: there is a previous close
            self._write_market(state, c, h - lo, abs(h - prev), abs(lo - prev), prev, ts, idx)
            return state
        # Warm-up: fill the windows; nothing is read from them yet.
        for sma in state.smas:
            sma.push(c)
        if n == 1:
            return state  # everything else needs a previous close
        r1 = math.log(c / prev)
        state.vol_short.push(r1)
        for vol in state.vol_rest:
            vol.push(r1)
        state.moves.push(abs(c - prev))
        hl = h - lo
        hc = abs(h - prev)
        lc = abs(lo - prev)
        state.atr.push(hl if hl >= hc and hl >= lc else (hc if hc >= lc else lc))
        return state

    def _write_market(
        self, state: _SymbolState, c: float, hl: float, hc: float, lc: float, prev: float, ts: int, idx: int
    ) -> None:
        """Push this bar into every window and compute the market features from them.

        Each window is pushed and read in one call (``push_std``/``push_zscore``):
        the values are those of ``push`` followed by the read, with fewer calls.
        """
        K = _K
        atan = math.atan
        log = math.log
        closes = state.closes
        out: list[float] = []
        append = out.append
        ret_long = 0.0
        for k, inv in self._ret:
            ret_long = log(c / closes[idx - k])  # negative index wraps the ring
            append(K * atan(ret_long * inv))
        r1 = log(c / prev)
        inv_vol = self._inv_vol
        vol_short = state.vol_short.push_std(r1)
        append(K * atan(vol_short * inv_vol))
        for vol in state.vol_rest:
            append(K * atan(vol.push_std(r1) * inv_vol))

        moves = state.moves
        moves.push(abs(c - prev))
        total = moves.total
        # Σ Δclose telescopes to close_t - close_{t-n}: exact, no running sum needed.
        drift = c - closes[idx - moves.window]
        append(drift / total if total > _FLAT_EPS * c else 0.0)
        atr = state.atr
        atr.push(hl if hl >= hc and hl >= lc else (hc if hc >= lc else lc))
        append(K * atan(atr.total / atr.window / c * self._inv_atr))

        inv_z = self._inv_z
        smas = state.smas
        for sma in smas:
            append(K * atan(sma.push_zscore(c) * inv_z))
        append(K * atan(hl / c * self._inv_range))

        second = ts % _DAY
        tod = self._tod.get(second)
        if tod is None:
            if len(self._tod) >= _TOD_CACHE_MAX:
                self._tod.clear()
            angle = _TAU * second / _DAY
            tod = self._tod[second] = (math.sin(angle), math.cos(angle))
        out += tod
        out += self._dow[(ts // _DAY + _EPOCH_WEEKDAY) % 7]

        long_mean = smas[-1].mean
        detector = state.detector
        regime = detector.update(ret_long, vol_short, (smas[0].mean - long_mean) / long_mean)
        state.regime = regime
        clip = self._clip
        for z in (regime.momentum_z, regime.volatility_z, regime.divergence_z, regime.score):
            append((clip if z > clip else (-clip if z < -clip else z)) / clip)

        state.market = out
        if not state.ready and not detector.bootstrapping:
            state.ready = True

    def _position(self, state: _SymbolState, position: PositionView) -> tuple[float, float, float, float]:
        """The four position features of ``position`` marked at the symbol's last close."""
        qty = position.quantity
        if not qty:
            return _FLAT_POSITION
        q = float(qty)
        avg = position.average_price
        notional = abs(q) * avg
        unrealized = q * (state.close - avg)
        if notional > 0.0:
            frac = unrealized / notional
            dd = (position.peak_unrealized - unrealized) / notional
        else:
            frac = dd = 0.0
        inv = self._inv_pnl
        return (
            1.0 if q > 0 else -1.0,
            _K * math.atan(position.bars_held * self._inv_bars),
            _K * math.atan(frac * inv),
            _K * math.atan(dd * inv) if dd > 0.0 else 0.0,
        )
