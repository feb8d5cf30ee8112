"""Walk-forward analysis: train on one stretch of bars, trade the next, move on; judge only what was traded unseen.

A single train/test split is one draw: a model may look good on one held-out
quarter by luck. Walk-forward repeats the split through the data:

* ``rolling`` folds train on a window of fixed length that slides forward by
  one test window each fold (old data drops out: the market changes);
* ``anchored`` folds always train from the first bar, so the training window
  grows (nothing is forgotten).

Each fold's test window follows its training window directly and test
windows never overlap, so every out-of-sample bar is traded exactly once and
the folds' out-of-sample equity curves can be stitched into one curve that
no model has seen in training. The stitch adds each fold's P&L to where the
previous fold ended (the pipeline sizes positions in units, so P&L does not
compound with equity; see ``montecarlo``).

Walk-forward efficiency (Pardo): the annualised out-of-sample return over the
annualised in-sample return. Near 1 the model trades unseen data about as
well as the data it was fitted on; near 0 (or negative) the in-sample figures
were fitted noise. It is undefined when the in-sample return is not positive.

This module cuts folds and combines results; training a model per fold and
trading its test window is the caller's (``tradectl walkforward``, to come).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Fold", "FoldResult", "folds", "stitch_equity", "walk_forward_efficiency"]

Mode = Literal["rolling", "anchored"]


@dataclass(frozen=True, slots=True)
class Fold:
    """Bar index ranges, half-open: train [train_start, train_end), test [train_end, test_end)."""

    index: int
    train_start: int
    train_end: int
    test_end: int

    @property
    def test_start(self) -> int:
        return self.train_end


def folds(n_bars: int, *, train_bars: int, test_bars: int, mode: Mode = "rolling") -> list[Fold]:
    """Every complete fold that fits in ``n_bars``: the first trains on ``train_bars`` bars, each
    test window is ``test_bars`` long, and folds advance by one test window."""
    if train_bars < 1 or test_bars < 1:
        raise ValueError("train_bars and test_bars must be >= 1")
    if mode not in ("rolling", "anchored"):
        raise ValueError(f"mode must be 'rolling' or 'anchored', not {mode!r}")
    if n_bars < train_bars + test_bars:
        raise ValueError(f"{n_bars} bars cannot hold one fold of {train_bars} training + {test_bars} test bars")
    out = []
    train_end = train_bars
    while train_end + test_bars <= n_bars:
        start = 0 if mode == "anchored" else train_end - train_bars
        out.append(Fold(len(out), start, train_end, train_end + test_bars))
        train_end += test_bars
    return out


def stitch_equity(
    curves: Sequence[Sequence[float] | npt.NDArray[np.float64]], starting_equity: float
) -> npt.NDArray[np.float64]:
    """One out-of-sample curve from the folds' curves, each continuing where the previous ended.

    Every fold curve starts at its own starting equity (a fresh account per
    fold); its P&L relative to that start is added to the stitched curve's
    last value. The result starts with ``starting_equity``.
    """
    out = [np.array([starting_equity], dtype=np.float64)]
    level = starting_equity
    for curve in curves:
        c = np.asarray(curve, dtype=np.float64)
        if c.ndim != 1 or len(c) == 0:
            raise ValueError("every fold curve needs at least its starting point")
        pnl = c[1:] - c[0]
        out.append(level + pnl)
        if len(pnl):
            level += float(pnl[-1])
    return np.concatenate(out)


@dataclass(frozen=True, slots=True)
class FoldResult:
    """One fold's returns: on the bars it trained on and on the bars it traded after."""

    fold: Fold
    in_sample_return_pct: float
    in_sample_years: float
    out_of_sample_return_pct: float
    out_of_sample_years: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    @property
    def efficiency(self) -> float | None:
        return walk_forward_efficiency([self])


def walk_forward_efficiency(results: Sequence[FoldResult]) -> float | None:
    """Annualised out-of-sample return over annualised in-sample return, pooled over the folds
    (total return over total years on each side), or None when in-sample did not make money."""
    if not results:
        return None
    is_years = sum(r.in_sample_years for r in results)
    oos_years = sum(r.out_of_sample_years for r in results)
    if is_years <= 0 or oos_years <= 0:
        raise ValueError("every fold needs a positive span in and out of sample")
    is_rate = sum(r.in_sample_return_pct for r in results) / is_years
    if is_rate <= 0:
        return None
    return sum(r.out_of_sample_return_pct for r in results) / oos_years / is_rate
