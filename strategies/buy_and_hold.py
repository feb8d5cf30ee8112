"""Buy-and-hold: the benchmark every trading model must beat after costs.

It says BUY on every bar. Sizing turns the first BUY into the configured
position and every later one into nothing (an open position is not re-sized
unless ``sizing.resize_open``), so through the pipeline it is one entry,
paid at the simulated broker's prices and costs, held to the end. Running it
through the same pipeline as the model (rather than taking last close over
first close) makes the comparison fair: same sizing, same costs, same risk
layers, same bars.
"""

from __future__ import annotations

from collections.abc import Sequence

from brokers.base import Bar
from strategies.base import Action, Decision, PositionView


class BuyAndHoldStrategy:
    name = "buy_and_hold"
    model_sha256: str | None = None  # rule-based: no model
    warmup_bars = 1  # decides on the first bar it sees

    def reset(self, symbol: str) -> None:
        """Nothing to forget: the decision does not depend on history."""

    def decide(self, bars: Sequence[Bar], positions: Sequence[PositionView]) -> list[Decision]:
        return [Decision(bar.symbol, bar.ts, Action.BUY, None, None, "buy_and_hold") for bar in bars]

    def describe(self) -> dict[str, object]:
        return {"name": self.name}
