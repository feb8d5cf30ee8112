"""Judging a trained model: statistics that do not flatter, Monte Carlo, walk-forward folds, gates.

Every module here is pure computation on numbers a run produced (an equity
curve, a trade list, decision counts): none of them trades. How a model is
made to trade for evaluation is the business of the one pipeline
(``daemon.runners.BacktestRunner``, see ``daemon.validate``) or of the
training environment, so a gate can never judge a second, different copy of
the trading logic.

* ``stats`` — Sharpe, Sortino, max drawdown, SQN with Van Tharp's classes,
  expectancy, profit factor, win rate.
* ``montecarlo`` — bootstrap over the trade list: CAR25/CAR50, the 95th
  percentile max drawdown, the probability of a given loss.
* ``walkforward`` — rolling and anchored folds, stitched out-of-sample equity,
  walk-forward efficiency.
* ``gates`` — named pass/fail checks with their figure and limit, and their
  configuration (the ``validation:`` section).

This ``__init__`` imports nothing, so the CLI can import a submodule cheaply.
"""
