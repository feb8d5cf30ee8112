"""The trade bootstrap against a plain, loop-by-loop computation and against exact probabilities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from strategies.evaluation.montecarlo import bootstrap_trades, resample_indices

TRADES = [120.0, -80.0, 45.5, -30.0, 0.0, 210.0, -95.25, 60.0, -15.0, 33.0, -140.0, 75.0]
START = 10_000.0


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), written out."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _plain(trades: list[float], runs: int, seed: int, years: float, loss_pct: float) -> dict[str, float]:
    """The same draws, every other step in plain Python."""
    draws = resample_indices(len(trades), runs, len(trades), seed).tolist()
    cars, drawdowns, losses = [], [], 0
    for row in draws:
        equity = peak = START
        worst = 0.0
        for index in row:
            equity = max(equity + trades[index], 0.0) if equity > 0 else 0.0
            peak = max(peak, equity)
            worst = max(worst, (peak - equity) / peak)
        cars.append((equity / START) ** (1 / years) - 1)
        drawdowns.append(worst)
        losses += equity <= START * (1 - loss_pct / 100)
    return {
        "car25": _percentile(cars, 25) * 100,
        "car50": _percentile(cars, 50) * 100,
        "dd95": _percentile(drawdowns, 95) * 100,
        "loss": losses / runs,
    }


def test_matches_a_plain_computation_on_a_fixed_trade_list() -> None:
    result = bootstrap_trades(TRADES, starting_equity=START, years=0.5, runs=2_000, seed=42, loss_pct=1.0)
    plain = _plain(TRADES, 2_000, 42, 0.5, 1.0)
    assert result.runs == 2_000 and result.trades_per_run == len(TRADES)
    assert result.car25_pct == pytest.approx(plain["car25"], rel=1e-9, abs=1e-12)
    assert result.car50_pct == pytest.approx(plain["car50"], rel=1e-9, abs=1e-12)
    assert result.max_drawdown_p95_pct == pytest.approx(plain["dd95"], rel=1e-9)
    assert result.loss_probability == plain["loss"]
    assert result.car25_pct < result.car50_pct  # CAR25 is the pessimistic one


def test_draws_are_uniform_with_replacement() -> None:
    draws = resample_indices(4, 5_000, 4, seed=1)
    counts = np.bincount(draws.ravel(), minlength=4) / draws.size
    assert counts == pytest.approx([0.25] * 4, abs=0.01)
    assert any(len(set(row)) < 4 for row in draws.tolist())  # a trade can be drawn twice in one run


def test_probability_of_a_loss_matches_the_binomial() -> None:
    """+1/-1 trades, 11 per run: a run loses when at most 5 of 11 draws win, probability exactly 1/2."""
    result = bootstrap_trades([1.0, -1.0], starting_equity=100.0, years=1.0, runs=20_000, trades_per_run=11, seed=3)
    assert result.loss_probability == pytest.approx(0.5, abs=0.015)
    # P(at least a 3 % loss) = P(wins <= 4 of 11) = sum C(11, k) / 2^11 for k <= 4
    exact = sum(math.comb(11, k) for k in range(5)) / 2**11
    deep = bootstrap_trades(
        [1.0, -1.0], starting_equity=100.0, years=1.0, runs=20_000, trades_per_run=11, seed=3, loss_pct=3.0
    )
    assert deep.loss_probability == pytest.approx(exact, abs=0.015)


def test_identical_trades_give_exact_figures() -> None:
    result = bootstrap_trades([50.0] * 4, starting_equity=1_000.0, years=2.0, runs=1_000, seed=0)
    car = ((1_000 + 4 * 50) / 1_000) ** 0.5 - 1
    assert result.car25_pct == pytest.approx(car * 100) and result.car50_pct == pytest.approx(car * 100)
    assert result.max_drawdown_p95_pct == 0.0 and result.loss_probability == 0.0


def test_ruined_runs_stay_ruined() -> None:
    result = bootstrap_trades(
        [-600.0, 500.0], starting_equity=1_000.0, years=1.0, runs=2_000, trades_per_run=3, seed=5, loss_pct=100.0
    )
    # two losses first ruin the account (1/4 of runs); the win that may follow cannot revive it
    assert result.ruin_probability == pytest.approx(0.25, abs=0.03)
    assert result.loss_probability == result.ruin_probability  # ended with everything lost
    assert result.max_drawdown_p95_pct == pytest.approx(100.0)


def test_seeded_and_reproducible() -> None:
    a = bootstrap_trades(TRADES, starting_equity=START, years=1.0, runs=1_000, seed=9)
    b = bootstrap_trades(TRADES, starting_equity=START, years=1.0, runs=1_000, seed=9)
    c = bootstrap_trades(TRADES, starting_equity=START, years=1.0, runs=1_000, seed=10)
    assert a == b
    assert a != c


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pnls": []}, "at least one closed trade"),
        ({"runs": 999}, "at least 1000"),
        ({"years": 0.0}, "positive"),
        ({"pnls": [1.0, float("nan")]}, "NaN"),
        ({"loss_pct": -1.0}, "loss"),
    ],
)
def test_refuses_what_cannot_be_resampled_honestly(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"pnls": TRADES, "starting_equity": START, "years": 1.0, "runs": 1_000}
    args.update(kwargs)
    with pytest.raises(ValueError, match=message):
        bootstrap_trades(**args)  # type: ignore[arg-type]
