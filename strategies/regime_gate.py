"""The regime-gated features extractor: a sigmoid gate from the regime features over the price features.

The master plan's optional architecture. The same price pattern means
different things in a calm trend and in a volatile reversal; rather than
leave the LSTM to discover that interaction, a gate computed from the regime
detector's four features scales each price feature before the LSTM sees it:

    g = sigmoid(W · regime + b)            (one gate per price feature, in (0, 1))
    features = [price ⊙ g, time, regime, position]   (the observation's own order)

so the policy can turn a price feature down in one regime and up in another.
Price features are the bar-derived market features (``ret_*``, ``vol_*``,
``rsi_*``, ``atr_*``, ``zsma_*``, ``range``); regime features are
``regime_*`` (see ``strategies.features``). Each group must be contiguous in
the observation, which the feature schema guarantees.

This module is the torch definition that sb3-contrib trains and that
``RecurrentPPO.load`` needs to rebuild a saved regime-gated model; live
inference does not run it: ``strategies.policy_network.read_actor`` reads the
gate's weights and ``strategies.policy`` applies the gate as one step of the
same numpy inference path as every other model.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

__all__ = ["PRICE_PREFIXES", "REGIME_PREFIX", "RegimeGatedExtractor", "gate_slices"]

PRICE_PREFIXES = ("ret_", "vol_", "rsi_", "atr_", "zsma_", "range")
REGIME_PREFIX = "regime_"


def _span(names: Sequence[str], indexes: list[int], what: str) -> tuple[int, int]:
    if not indexes:
        raise ValueError(f"the feature schema has no {what} features to gate")
    start, stop = indexes[0], indexes[-1] + 1
    if indexes != list(range(start, stop)):
        raise ValueError(f"{what} features are not contiguous in the observation: {[names[i] for i in indexes]}")
    return start, stop


def gate_slices(names: Sequence[str]) -> tuple[tuple[int, int], tuple[int, int]]:
    """(price start, stop) and (regime start, stop) in an observation with these feature names."""
    price = [i for i, n in enumerate(names) if n.startswith(PRICE_PREFIXES)]
    regime = [i for i, n in enumerate(names) if n.startswith(REGIME_PREFIX)]
    return _span(names, price, "price"), _span(names, regime, "regime")


class RegimeGatedExtractor(BaseFeaturesExtractor):
    """Flattened observation with its price features multiplied by a sigmoid gate of its regime features."""

    def __init__(self, observation_space: spaces.Box, price: tuple[int, int], regime: tuple[int, int]) -> None:
        size = int(spaces.flatdim(observation_space))
        super().__init__(observation_space, features_dim=size)
        (p0, p1), (r0, r1) = (int(price[0]), int(price[1])), (int(regime[0]), int(regime[1]))
        if not (0 <= p0 < p1 <= size and 0 <= r0 < r1 <= size) or (p0 < r1 and r0 < p1):
            raise ValueError(f"gate slices price {price} and regime {regime} do not fit {size} features apart")
        self.price = (p0, p1)
        self.regime = (r0, r1)
        self.flatten = nn.Flatten()
        self.gate = nn.Linear(r1 - r0, p1 - p0)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        x = self.flatten(observations)
        (p0, p1), (r0, r1) = self.price, self.regime
        gate = torch.sigmoid(self.gate(x[:, r0:r1]))
        return torch.cat([x[:, :p0], x[:, p0:p1] * gate, x[:, p1:]], dim=1)
