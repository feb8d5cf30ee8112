"""Walk-forward folds, the stitched out-of-sample curve and walk-forward efficiency, by hand."""

from __future__ import annotations

import pytest

from strategies.evaluation.walkforward import Fold, FoldResult, folds, stitch_equity, walk_forward_efficiency


def test_rolling_folds_slide_a_fixed_training_window() -> None:
    got = folds(100, train_bars=40, test_bars=20, mode="rolling")
    assert [(f.train_start, f.train_end, f.test_end) for f in got] == [(0, 40, 60), (20, 60, 80), (40, 80, 100)]
    assert [f.index for f in got] == [0, 1, 2]


def test_anchored_folds_grow_from_the_first_bar() -> None:
    got = folds(105, train_bars=40, test_bars=20, mode="anchored")  # 5 bars left over: no partial fold
    assert [(f.train_start, f.train_end, f.test_end) for f in got] == [(0, 40, 60), (0, 60, 80), (0, 80, 100)]


@pytest.mark.parametrize("mode", ["rolling", "anchored"])
def test_test_windows_tile_the_out_of_sample_bars_once(mode: str) -> None:
    got = folds(1_000, train_bars=300, test_bars=70, mode=mode)  # type: ignore[arg-type]
    tested = [i for f in got for i in range(f.test_start, f.test_end)]
    assert tested == list(range(300, 300 + 70 * len(got)))  # contiguous, no bar twice
    assert all(f.test_start >= f.train_end for f in got)  # never tested on a bar it trained on
    assert 1_000 - tested[-1] - 1 < 70


def test_too_little_data_or_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="one fold"):
        folds(50, train_bars=40, test_bars=20)
    with pytest.raises(ValueError, match=">= 1"):
        folds(50, train_bars=0, test_bars=20)
    with pytest.raises(ValueError, match="mode"):
        folds(100, train_bars=40, test_bars=20, mode="expanding")  # type: ignore[arg-type]


def test_stitched_curve_adds_each_folds_pnl_to_where_the_last_ended() -> None:
    curves = [[1_000.0, 1_010.0, 990.0], [1_000.0, 1_050.0], [1_000.0, 980.0, 1_000.0, 1_030.0]]
    stitched = stitch_equity(curves, 5_000.0)
    assert stitched.tolist() == [5_000.0, 5_010.0, 4_990.0, 5_040.0, 5_020.0, 5_040.0, 5_070.0]
    with pytest.raises(ValueError, match="starting point"):
        stitch_equity([[]], 1.0)


def _result(is_ret: float, is_years: float, oos_ret: float, oos_years: float) -> FoldResult:
    return FoldResult(Fold(0, 0, 1, 2), is_ret, is_years, oos_ret, oos_years)


def test_walk_forward_efficiency_by_hand() -> None:
    # in sample 10 % over 2 years = 5 %/year; out of sample 1 % over 0.5 years = 2 %/year: WFE 0.4
    assert _result(10.0, 2.0, 1.0, 0.5).efficiency == pytest.approx(0.4)
    pooled = [_result(10.0, 2.0, 1.0, 0.5), _result(2.0, 2.0, -0.5, 0.5)]
    # pooled: in sample 12 % / 4 y = 3 %/y; out of sample 0.5 % / 1 y = 0.5 %/y
    assert walk_forward_efficiency(pooled) == pytest.approx(0.5 / 3.0)
    assert _result(-1.0, 1.0, 5.0, 1.0).efficiency is None  # nothing in sample to be efficient about
    assert walk_forward_efficiency([]) is None
