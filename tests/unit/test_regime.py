"""MarketRegimeDetector and RollingStats: bootstrap, degenerate windows, weights, clamp."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.regime import MarketRegimeDetector, RollingStats


def test_bootstrap_yields_exactly_neutral() -> None:
    det = MarketRegimeDetector(window=10, bootstrap=5)
    for i in range(4):
        state = det.update(float(i), float(i * i), float(-i))
        assert state.momentum_z == 0.0
        assert state.volatility_z == 0.0
        assert state.divergence_z == 0.0
        assert state.score == 0.0
        assert state.target_hold_rate == 0.55
    assert det.bootstrapping
    state = det.update(4.0, 16.0, -4.0)
    assert not det.bootstrapping
    assert state.momentum_z != 0.0


def test_zero_variance_yields_zero_without_nan() -> None:
    det = MarketRegimeDetector(window=8, bootstrap=3)
    for _ in range(50):
        # 0.1 is not exactly representable: the window mean carries rounding residue.
        state = det.update(0.1, 1.05, 0.0)
        assert state == (0.0, 0.0, 0.0, 0.0, 0.55)


def test_weights_on_a_hand_computed_series() -> None:
    det = MarketRegimeDetector(window=3, bootstrap=3)
    det.update(1.0, 3.0, 0.0)
    det.update(2.0, 2.0, 0.0)
    state = det.update(3.0, 1.0, 3.0)
    # momentum [1,2,3]: mean 2, sample std 1 -> z = 1
    # volatility [3,2,1]: z = -1
    # divergence [0,0,3]: mean 1, sample var (1+1+4)/2 = 3 -> z = 2/sqrt(3)
    assert state.momentum_z == pytest.approx(1.0, abs=1e-12)
    assert state.volatility_z == pytest.approx(-1.0, abs=1e-12)
    assert state.divergence_z == pytest.approx(2 / math.sqrt(3), abs=1e-12)
    expected = 0.4 * 1.0 + 0.3 * -1.0 + 0.3 * 2 / math.sqrt(3)
    assert state.score == pytest.approx(expected, abs=1e-12)
    assert state.target_hold_rate == pytest.approx(0.55 + 0.1 * expected, abs=1e-12)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_score_saturates_on_an_extreme_series(sign: float) -> None:
    det = MarketRegimeDetector(window=20)
    for _ in range(19):
        det.update(0.0, 0.0, 0.0)
    # One spike after 19 flat values: z = 19/sqrt(20) ≈ 4.25 for each measure.
    state = det.update(sign * 100.0, sign * 100.0, sign * 100.0)
    assert state.momentum_z == pytest.approx(sign * 19 / math.sqrt(20))
    assert state.score == sign * 3.0
    assert state.target_hold_rate == pytest.approx(0.55 + sign * 0.3)


def test_target_hold_rate_follows_score() -> None:
    det = MarketRegimeDetector(window=4, bootstrap=2, base_hold_rate=0.5, hold_rate_slope=0.2)
    for x in (1.0, -2.0, 0.5, 4.0, -1.0, 2.5):
        state = det.update(x, x * 0.5, -x)
        assert state.target_hold_rate == pytest.approx(0.5 + 0.2 * state.score, abs=1e-15)
        assert -3.0 <= state.score <= 3.0


def test_reset_returns_to_bootstrap() -> None:
    det = MarketRegimeDetector(window=3)
    for x in (1.0, 2.0, 4.0):
        det.update(x, x, x)
    assert det.state.score != 0.0
    det.reset()
    assert det.state.score == 0.0 and det.count == 0
    assert det.update(5.0, 5.0, 5.0).score == 0.0


def test_rolling_stats_match_numpy_over_many_wraps() -> None:
    window = 7
    stats = RollingStats(window)
    values = [math.sin(i * 0.37) * 1e-3 + 1.1 + (i % 5) * 1e-4 for i in range(500)]
    for i, x in enumerate(values):
        stats.push(x)
        tail = np.array(values[max(0, i - window + 1) : i + 1])
        assert stats.mean == pytest.approx(tail.mean(), abs=1e-13)
        if len(tail) > 1:
            assert stats.variance == pytest.approx(tail.var(ddof=1), rel=1e-9, abs=1e-20)
            assert stats.zscore(x) == pytest.approx((x - tail.mean()) / tail.std(ddof=1), abs=1e-8)


def test_invalid_parameters_are_rejected() -> None:
    with pytest.raises(ValueError):
        RollingStats(1)
    with pytest.raises(ValueError):
        MarketRegimeDetector(window=5, bootstrap=6)


def test_fused_push_and_read_equal_push_then_read_exactly() -> None:
    """push_std / push_zscore (the feature path's one-call forms) give push + std / zscore bit for bit,
    through warm-up, wraps and a constant stretch."""
    values = [math.sin(i * 0.37) * 1e-3 + 1.1 + (i % 5) * 1e-4 for i in range(300)] + [0.7] * 30
    plain, fused_std, fused_z = RollingStats(9), RollingStats(9), RollingStats(9)
    for x in values:
        plain.push(x)
        assert fused_std.push_std(x) == plain.std
        assert fused_z.push_zscore(x) == plain.zscore(x)
        assert (fused_std.mean, fused_z.mean) == (plain.mean, plain.mean)
