"""FeatureProcessor: warm-up, parity with a plain pandas recomputation, bounds, schema hash."""

from __future__ import annotations

import math
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from brokers.base import Bar
from brokers.history import load_bundled
from strategies.base import FLAT, PositionView
from strategies.features import (
    DEFAULT_FEATURE_CONFIG,
    FEATURE_NAMES,
    FEATURE_SCHEMA_VERSION,
    POSITION_FEATURE_NAMES,
    FeatureConfig,
    FeatureProcessor,
    feature_hash,
    squash,
)

CFG = DEFAULT_FEATURE_CONFIG
IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}


@pytest.fixture(scope="module")
def bundled() -> list[Bar]:
    return load_bundled()


@pytest.fixture(scope="module")
def bundled_features(bundled: list[Bar]) -> np.ndarray:
    """One row per bar (NaN rows during warm-up), flat position."""
    fp = FeatureProcessor()
    rows = np.full((len(bundled), len(FEATURE_NAMES)), np.nan)
    for i, bar in enumerate(bundled):
        obs = fp.update("EURUSD", bar)
        if obs is not None:
            rows[i] = obs
    return rows


def _series(n: int, start_ts: int = 1_483_315_200, step: int = 3600) -> list[Bar]:
    """A small deterministic, gap-free series (no randomness)."""
    bars = []
    for i in range(n):
        close = 1.1 + 0.01 * math.sin(i / 7.0) + 0.002 * math.cos(i / 2.3)
        open_ = 1.1 + 0.01 * math.sin((i - 0.5) / 7.0)
        high = max(open_, close) + 0.0004 + 0.0001 * (i % 3)
        low = min(open_, close) - 0.0003
        bars.append(Bar("TEST", start_ts + i * step, open_, high, low, close, 1000.0))
    return bars


def test_schema_is_consistent() -> None:
    assert len(FEATURE_NAMES) == len(set(FEATURE_NAMES))
    assert FEATURE_NAMES[-4:] == POSITION_FEATURE_NAMES
    fp = FeatureProcessor()
    assert fp.names == FEATURE_NAMES
    assert fp.n_features == len(FEATURE_NAMES)
    assert fp.n_market == len(FEATURE_NAMES) - len(POSITION_FEATURE_NAMES)
    assert fp.feature_hash == feature_hash() and len(fp.feature_hash) == 64
    assert fp.warmup_bars == CFG.market_warmup + CFG.regime_window - 1 == 192
    assert FEATURE_SCHEMA_VERSION >= 1


def test_warmup_yields_none_then_a_full_vector() -> None:
    fp = FeatureProcessor()
    bars = _series(fp.warmup_bars + 3)
    for bar in bars[: fp.warmup_bars - 1]:
        assert fp.update_market("TEST", bar) is None
        assert not fp.ready("TEST")
    market = fp.update_market("TEST", bars[fp.warmup_bars - 1])
    assert market is not None and market.shape == (fp.n_market,) and market.dtype == np.float64
    obs = fp.observation("TEST", FLAT)
    assert obs.shape == (len(FEATURE_NAMES),) and obs.dtype == np.float64
    np.testing.assert_array_equal(obs[: fp.n_market], market)


def test_observation_before_warmup_raises() -> None:
    fp = FeatureProcessor()
    with pytest.raises(RuntimeError):
        fp.observation("TEST", FLAT)


def test_reset_restarts_warmup_and_symbols_are_independent() -> None:
    bars = _series(260)
    other = [replace(b, symbol="OTHER", close=b.close * 2, open=b.open * 2, high=b.high * 2, low=b.low * 2)
             for b in bars]  # fmt: skip
    alone = FeatureProcessor()
    expected = [alone.update("TEST", b) for b in bars]
    fp = FeatureProcessor()
    for i, (a, b) in enumerate(zip(bars, other, strict=True)):
        got = fp.update("TEST", a)
        fp.update("OTHER", b)
        if expected[i] is None:
            assert got is None
        else:
            np.testing.assert_array_equal(got, expected[i])
    fp.reset("TEST")
    assert not fp.ready("TEST") and fp.ready("OTHER")
    assert fp.update("TEST", replace(bars[-1], ts=bars[-1].ts + 3600)) is None


def test_returned_arrays_are_copies() -> None:
    fp = FeatureProcessor()
    bars = _series(fp.warmup_bars + 1)
    for bar in bars[:-1]:
        first = fp.update("TEST", bar)
    assert first is not None
    kept = first.copy()
    first[:] = 99.0
    np.testing.assert_array_equal(fp.observation("TEST"), kept)
    second = fp.update("TEST", bars[-1])
    assert not np.array_equal(second, kept)


def test_rejects_bad_and_out_of_order_bars() -> None:
    fp = FeatureProcessor()
    bars = _series(3)
    fp.update("TEST", bars[1])
    with pytest.raises(ValueError):
        fp.update("TEST", bars[0])
    with pytest.raises(ValueError):
        fp.update("TEST", replace(bars[2], close=float("nan")))
    with pytest.raises(ValueError):
        fp.update("TEST", replace(bars[2], high=bars[2].low - 0.01))


def _rolling_mean_std(x: pd.Series, w: int) -> tuple[pd.Series, pd.Series]:
    """Two-pass mean and sample std of every full window.

    numpy over explicit windows rather than pandas' ``rolling().std()``: pandas
    uses running sums, which on prices near 1.2 lose ~1e-9 of a z-score to
    cancellation — less accurate than the incremental code under test.
    """
    windows = np.lib.stride_tricks.sliding_window_view(x.to_numpy(), w)
    pad = np.full(w - 1, np.nan)
    mean = np.concatenate([pad, windows.mean(axis=1)])
    std = np.concatenate([pad, windows.std(axis=1, ddof=1)])
    return pd.Series(mean, index=x.index), pd.Series(std, index=x.index)


def _zscore(x: pd.Series, w: int) -> pd.Series:
    mean, std = _rolling_mean_std(x, w)
    return (x - mean) / std


def _pandas_features(bars: list[Bar]) -> dict[str, pd.Series]:
    """A straightforward, non-incremental recomputation of the raw market features."""
    close = pd.Series([b.close for b in bars])
    high = pd.Series([b.high for b in bars])
    low = pd.Series([b.low for b in bars])
    log_close = np.log(close)
    r1 = log_close.diff()
    out: dict[str, pd.Series] = {}
    for k in CFG.return_windows:
        out[f"ret_{k}"] = log_close.diff(k)
    for w in CFG.vol_windows:
        out[f"vol_{w}"] = _rolling_mean_std(r1, w)[1]
    for w in CFG.sma_windows:
        out[f"zsma_{w}"] = _zscore(close, w)
    diff = close.diff()
    gains = diff.clip(lower=0).rolling(CFG.rsi_window).mean()
    losses = (-diff.clip(upper=0)).rolling(CFG.rsi_window).mean()
    rsi = 100 * gains / (gains + losses)
    out[f"rsi_{CFG.rsi_window}"] = (rsi - 50) / 50
    prev = close.shift(1)
    true_range = pd.concat([high - low, (high - prev).abs(), (low - prev).abs()], axis=1).max(axis=1)
    out[f"atr_{CFG.atr_window}"] = true_range.rolling(CFG.atr_window).mean() / close
    out["range"] = (high - low) / close
    # regime raw measures, z-scored over the regime window
    sma_s = close.rolling(CFG.sma_windows[0]).mean()
    sma_l = close.rolling(CFG.sma_windows[-1]).mean()
    raw = {
        "momentum": out[f"ret_{CFG.return_windows[-1]}"],
        "volatility": out[f"vol_{CFG.vol_windows[0]}"],
        "divergence": (sma_s - sma_l) / sma_l,
    }
    w = CFG.regime_window
    zs = {k: _zscore(v, w) for k, v in raw.items()}
    for k, z in zs.items():
        out[f"regime_{k}_z"] = z
    out["regime_score"] = (0.4 * zs["momentum"] + 0.3 * zs["volatility"] + 0.3 * zs["divergence"]).clip(-3, 3)
    return out


def _scaled(name: str, raw: pd.Series) -> np.ndarray:
    """The documented scaling applied to a raw series."""
    values = raw.to_numpy()
    if name.startswith("ret_"):
        k = int(name.split("_")[1])
        return (2 / np.pi) * np.arctan(values / (CFG.return_scale * math.sqrt(k)))
    if name.startswith("vol_"):
        return (2 / np.pi) * np.arctan(values / CFG.vol_scale)
    if name.startswith("zsma_"):
        return (2 / np.pi) * np.arctan(values / CFG.z_scale)
    if name.startswith("atr_"):
        return (2 / np.pi) * np.arctan(values / CFG.atr_scale)
    if name == "range":
        return (2 / np.pi) * np.arctan(values / CFG.range_scale)
    if name.startswith("regime_"):
        return np.clip(values, -CFG.regime_clamp, CFG.regime_clamp) / CFG.regime_clamp
    return values  # rsi: already (RSI - 50) / 50


def test_incremental_features_equal_pandas_recomputation(bundled: list[Bar], bundled_features: np.ndarray) -> None:
    expected = _pandas_features(bundled)
    start = CFG.warmup_bars - 1
    assert np.isnan(bundled_features[:start]).all()
    assert np.isfinite(bundled_features[start:]).all()
    for name, raw in expected.items():
        want = _scaled(name, raw)[start:]
        got = bundled_features[start:, IDX[name]]
        assert np.isfinite(want).all(), name
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-9, err_msg=name)


def test_regime_reading_matches_the_observation(bundled: list[Bar]) -> None:
    fp = FeatureProcessor()
    for bar in bundled[:400]:
        obs = fp.update("EURUSD", bar)
    regime = fp.regime("EURUSD")
    assert obs[IDX["regime_score"]] == pytest.approx(regime.score / 3, abs=1e-15)
    assert regime.target_hold_rate == pytest.approx(0.55 + 0.1 * regime.score)


def test_all_values_finite_and_bounded_on_bundled_data(bundled: list[Bar], bundled_features: np.ndarray) -> None:
    rows = bundled_features[CFG.warmup_bars - 1 :]
    assert len(rows) == len(bundled) - CFG.warmup_bars + 1
    assert np.isfinite(rows).all()
    assert rows.min() >= -1.0 and rows.max() <= 1.0
    # and with an open position (long and short, deep in profit and loss)
    fp = FeatureProcessor()
    for i, bar in enumerate(bundled):
        market = fp.update_market("EURUSD", bar)
        if market is None:
            continue
        qty = Decimal(100_000) if (i // 50) % 2 else Decimal(-100_000)
        view = PositionView(quantity=qty, average_price=bundled[i - 40].close, bars_held=i % 500,
                            peak_unrealized=float(i % 7) * 300.0)  # fmt: skip
        obs = fp.observation("EURUSD", view)
        assert np.isfinite(obs).all() and obs.min() >= -1.0 and obs.max() <= 1.0


def test_flat_prices_give_zero_features_not_nan() -> None:
    fp = FeatureProcessor()
    bars = [Bar("FLAT", 1_483_315_200 + i * 3600, 1.1, 1.1, 1.1, 1.1) for i in range(fp.warmup_bars + 10)]
    for bar in bars:
        obs = fp.update("FLAT", bar)
    assert obs is not None and np.isfinite(obs).all()
    for name in ("ret_1", "ret_24", "vol_24", "vol_96", "rsi_14", "atr_14", "zsma_24", "zsma_96", "range",
                 "regime_momentum_z", "regime_volatility_z", "regime_divergence_z", "regime_score"):  # fmt: skip
        assert obs[IDX[name]] == 0.0, name


@pytest.mark.parametrize(
    "iso",
    ["2017-01-02T00:00:00Z", "2017-01-04T06:00:00Z", "2017-03-17T21:00:00Z", "2017-07-09T13:30:00Z"],
)
def test_time_encodings_exact_for_known_timestamps(iso: str) -> None:
    when = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    ts = int(when.timestamp())
    fp = FeatureProcessor()
    n = fp.warmup_bars
    bars = _series(n, start_ts=ts - (n - 1) * 3600)
    for bar in bars:
        obs = fp.update("TEST", bar)
    assert bars[-1].ts == ts and obs is not None
    seconds = when.hour * 3600 + when.minute * 60 + when.second
    assert obs[IDX["tod_sin"]] == pytest.approx(math.sin(2 * math.pi * seconds / 86400), abs=1e-15)
    assert obs[IDX["tod_cos"]] == pytest.approx(math.cos(2 * math.pi * seconds / 86400), abs=1e-15)
    weekday = when.astimezone(UTC).weekday()  # Monday = 0
    assert obs[IDX["dow_sin"]] == pytest.approx(math.sin(2 * math.pi * weekday / 7), abs=1e-15)
    assert obs[IDX["dow_cos"]] == pytest.approx(math.cos(2 * math.pi * weekday / 7), abs=1e-15)


def test_monday_midnight_is_angle_zero() -> None:
    fp = FeatureProcessor()
    ts = int(datetime(2017, 1, 2, tzinfo=UTC).timestamp())  # a Monday
    for bar in _series(fp.warmup_bars, start_ts=ts - (fp.warmup_bars - 1) * 3600):
        obs = fp.update("TEST", bar)
    assert (obs[IDX["tod_sin"]], obs[IDX["tod_cos"]], obs[IDX["dow_sin"]], obs[IDX["dow_cos"]]) == (
        0.0, 1.0, 0.0, 1.0,
    )  # fmt: skip


def test_position_features_hand_computed() -> None:
    fp = FeatureProcessor()
    for bar in _series(fp.warmup_bars):
        fp.update_market("TEST", bar)
    close = fp.last_close("TEST")
    assert fp.observation("TEST", FLAT)[-4:].tolist() == [0.0, 0.0, 0.0, 0.0]

    avg = close - 0.002
    qty = Decimal(10_000)
    unrealized = 10_000 * (close - avg)
    peak = unrealized + 5.0
    obs = fp.observation("TEST", PositionView(qty, avg, bars_held=12, peak_unrealized=peak))
    notional = 10_000 * avg
    assert obs[IDX["pos_side"]] == 1.0
    assert obs[IDX["pos_bars_held"]] == pytest.approx(squash(12, CFG.bars_held_scale), abs=1e-15)
    assert obs[IDX["pos_unrealized"]] == pytest.approx(squash(unrealized / notional, CFG.pnl_scale), abs=1e-12)
    assert obs[IDX["pos_drawdown"]] == pytest.approx(squash(5.0 / notional, CFG.pnl_scale), abs=1e-12)

    short = fp.observation("TEST", PositionView(-qty, avg, bars_held=3, peak_unrealized=0.0))
    assert short[IDX["pos_side"]] == -1.0
    assert short[IDX["pos_unrealized"]] == pytest.approx(squash(-0.002 / avg, CFG.pnl_scale), abs=1e-12)
    assert short[IDX["pos_drawdown"]] == pytest.approx(squash(0.002 / avg, CFG.pnl_scale), abs=1e-12)
    # market part is untouched by the position
    np.testing.assert_array_equal(obs[: fp.n_market], short[: fp.n_market])


def test_hash_changes_with_anything_that_changes_values() -> None:
    base = feature_hash()
    assert base == feature_hash(FeatureConfig())
    variants = [
        FeatureConfig(return_windows=(1, 4, 12)),
        FeatureConfig(vol_windows=(24, 120)),
        FeatureConfig(sma_windows=(20, 96)),
        FeatureConfig(rsi_window=10),
        FeatureConfig(atr_window=20),
        FeatureConfig(regime_window=48),
        FeatureConfig(regime_weights=(0.5, 0.25, 0.25)),
        FeatureConfig(regime_clamp=2.5),
        FeatureConfig(return_scale=0.002),
        FeatureConfig(pnl_scale=0.01),
    ]
    hashes = {feature_hash(v) for v in variants}
    assert len(hashes) == len(variants) and base not in hashes


def test_custom_config_names_and_warmup() -> None:
    cfg = FeatureConfig(return_windows=(1, 2), vol_windows=(5,), sma_windows=(3, 8), rsi_window=4,
                        atr_window=3, regime_window=6)  # fmt: skip
    fp = FeatureProcessor(cfg)
    assert fp.names[:3] == ("ret_1", "ret_2", "vol_5")
    assert fp.warmup_bars == 8 + 6 - 1
    outs = [fp.update("TEST", b) for b in _series(20)]
    assert all(o is None for o in outs[: fp.warmup_bars - 1])
    assert all(o is not None and o.shape == (len(fp.names),) for o in outs[fp.warmup_bars - 1 :])


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError):
        FeatureConfig(return_windows=(4, 1))
    with pytest.raises(ValueError):
        FeatureConfig(sma_windows=(24,))
    with pytest.raises(ValueError):
        FeatureConfig(vol_scale=0.0)
