"""Market regime: how unusual are momentum, volatility and divergence right now?

The detector does not look at prices itself. It is fed three *raw measures*
per bar and z-scores each against its own recent history; the feature
processor computes the raw measures from closes so that training and live
share one definition. The raw measures the processor feeds (see
``strategies.features``) are:

* momentum   = log(close_t / close_{t-N}), N = the longest return window (24 bars);
* volatility = sample std (ddof=1) of 1-bar log returns over the shortest
  volatility window (24 bars);
* divergence = (SMA_short - SMA_long) / SMA_long over the short and long SMA
  windows (24 and 96 bars): where price sits against its long average minus
  where it sits against its short one, in price-relative units so it does not
  depend on the instrument's price level.

A z-score needs history to mean anything, so during the bootstrap period
(fewer than ``bootstrap`` samples) every z is exactly 0 — a neutral regime —
rather than a noisy number from three samples. A window with (numerically)
zero variance also yields 0: nothing is unusual when nothing moves, and it
keeps NaN and inf out of the observation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

# A variance this small relative to the mean (std <= 1e-12 * |mean|), or this
# small absolutely (std <= ~3e-16), is rounding residue of a constant window,
# not signal: its z-score would be noise divided by noise.
_REL_VAR_EPS = 1e-24
_ABS_VAR_EPS = 1e-30


class RollingStats:
    """Mean and sample variance over the last ``window`` values, O(1) per push.

    Windowed Welford update (add the new value and drop the oldest in one
    step), which is far less prone to cancellation than running sums of x and
    x². Rounding still accumulates slowly, so mean and M2 are recomputed from
    the ring buffer every time it wraps: O(window) once per ``window`` pushes,
    O(1) amortized, and it bounds drift to one window's worth of updates. That
    also makes values independent (to rounding) of where processing started,
    which is what lets live re-warm-up reproduce training features.
    """

    __slots__ = ("_buf", "_idx", "_m2", "count", "mean", "window")

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"window must be >= 2, got {window}")
        self.window = window
        self._buf = [0.0] * window
        self._idx = 0
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    def reset(self) -> None:
        self._idx = 0
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0

    @property
    def full(self) -> bool:
        return self.count == self.window

    def push(self, x: float) -> None:
        n = self.count
        w = self.window
        if n < w:
            self._buf[n] = x
            n += 1
            self.count = n
            delta = x - self.mean
            self.mean += delta / n
            self._m2 += delta * (x - self.mean)
            if n == w:
                self._recompute()
            return
        i = self._idx
        old = self._buf[i]
        self._buf[i] = x
        i += 1
        if i == w:
            self._idx = 0
            self._recompute()
            return
        self._idx = i
        mean_old = self.mean
        mean = mean_old + (x - old) / w
        self._m2 += (x - old) * (x - mean + old - mean_old)
        self.mean = mean

    # The feature path reads every window right after pushing to it, on every bar: these do
    # both in one call, with the arithmetic of ``push`` followed by ``std`` / ``zscore``
    # (equal bit for bit), minus the property and method calls in between.
    def push_std(self, x: float) -> float:
        """``push(x)``, then return ``std``."""
        self.push(x)
        n = self.count
        if n < 2:
            return 0.0
        m2 = self._m2
        return math.sqrt(m2 / (n - 1)) if m2 > 0.0 else 0.0

    def push_zscore(self, x: float) -> float:
        """``push(x)``, then return ``zscore(x)``."""
        self.push(x)
        n = self.count
        m2 = self._m2
        var = m2 / (n - 1) if n >= 2 and m2 > 0.0 else 0.0
        mean = self.mean
        if var <= _REL_VAR_EPS * mean * mean + _ABS_VAR_EPS:
            return 0.0
        return (x - mean) / math.sqrt(var)

    def _recompute(self) -> None:
        # Only ever called with a full buffer.
        buf = self._buf
        mean = sum(buf) / self.window
        m2 = 0.0
        for v in buf:
            d = v - mean
            m2 += d * d
        self.mean = mean
        self._m2 = m2

    @property
    def variance(self) -> float:
        """Sample variance (ddof=1, like pandas' rolling std); 0 with fewer than 2 values."""
        n = self.count
        if n < 2:
            return 0.0
        m2 = self._m2
        return m2 / (n - 1) if m2 > 0.0 else 0.0

    @property
    def std(self) -> float:
        return math.sqrt(self.variance)

    def zscore(self, x: float) -> float:
        """(x - mean) / std, or 0 when the window is (numerically) constant."""
        var = self.variance
        mean = self.mean
        if var <= _REL_VAR_EPS * mean * mean + _ABS_VAR_EPS:
            return 0.0
        return (x - mean) / math.sqrt(var)


class RegimeState(NamedTuple):
    """One regime reading. A tuple so it is cheap to create on every bar."""

    momentum_z: float
    volatility_z: float
    divergence_z: float
    score: float
    target_hold_rate: float


NEUTRAL_REGIME = RegimeState(0.0, 0.0, 0.0, 0.0, 0.55)


class MarketRegimeDetector:
    """Rolling z-scores of three raw measures, blended into a clamped score.

    score = w_m·momentum_z + w_v·volatility_z + w_d·divergence_z, clamped to
    [-clamp, clamp]; target_hold_rate = base_hold_rate + hold_rate_slope·score.
    A high score (strong, volatile, stretched market) asks the policy to sit
    out more often; a low one lets it trade more.
    """

    __slots__ = (
        "_div",
        "_mom",
        "_vol",
        "base_hold_rate",
        "bootstrap",
        "clamp",
        "hold_rate_slope",
        "state",
        "weights",
        "window",
    )

    def __init__(
        self,
        window: int = 96,
        bootstrap: int | None = None,
        weights: tuple[float, float, float] = (0.4, 0.3, 0.3),
        clamp: float = 3.0,
        base_hold_rate: float = 0.55,
        hold_rate_slope: float = 0.1,
    ) -> None:
        bootstrap = window if bootstrap is None else bootstrap
        if not 2 <= bootstrap <= window:
            raise ValueError(f"bootstrap must be in [2, window={window}], got {bootstrap}")
        self.window = window
        self.bootstrap = bootstrap
        self.weights = weights
        self.clamp = clamp
        self.base_hold_rate = base_hold_rate
        self.hold_rate_slope = hold_rate_slope
        self._mom = RollingStats(window)
        self._vol = RollingStats(window)
        self._div = RollingStats(window)
        self.state = self._neutral()

    def _neutral(self) -> RegimeState:
        return RegimeState(0.0, 0.0, 0.0, 0.0, self.base_hold_rate)

    @property
    def count(self) -> int:
        """Samples seen, capped at ``window``."""
        return self._mom.count

    @property
    def bootstrapping(self) -> bool:
        return self._mom.count < self.bootstrap

    def reset(self) -> None:
        self._mom.reset()
        self._vol.reset()
        self._div.reset()
        self.state = self._neutral()

    def update(self, momentum: float, volatility: float, divergence: float) -> RegimeState:
        """Add one bar's raw measures; returns (and keeps in ``state``) the new reading."""
        mom, vol, div = self._mom, self._vol, self._div
        # After this push the count is min(count + 1, window), and bootstrap <= window.
        if mom.count + 1 < self.bootstrap:
            mom.push(momentum)
            vol.push(volatility)
            div.push(divergence)
            state = self._neutral()
        else:
            mz = mom.push_zscore(momentum)
            vz = vol.push_zscore(volatility)
            dz = div.push_zscore(divergence)
            wm, wv, wd = self.weights
            score = wm * mz + wv * vz + wd * dz
            c = self.clamp
            score = c if score > c else (-c if score < -c else score)
            state = RegimeState(mz, vz, dz, score, self.base_hold_rate + self.hold_rate_slope * score)
        self.state = state
        return state
