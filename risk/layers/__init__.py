"""The risk layers, one module per family, and the hooks that feed them.

* ``base``: ``Layer`` (scope, declared hooks, ``deny``/``scale``/``allow_at_most``,
  state requests and events), the context-extras keys, ``RiskEvent``.
* ``state``: the kill switch. ``latches``: fill guard, reconciliation.
* ``timing``: trading window, drip. ``staleness``: stale data, broker connection.
* ``activity``: confidence, cooldown, trade counts, submit rate.
* ``exposure``: position limit, gross exposure, fat finger.
* ``equity``: daily loss, drawdown tiers, volatility regime, loss streak.
* ``hooks``: ``RiskHooks``. ``build``: ``build_layers``.
"""

from risk.layers.activity import ConfidenceLayer, CooldownLayer, SubmitRateLayer, TradeCountLayer
from risk.layers.base import BAR_TS, FLATTEN, SEVERITY, VOLATILITY_Z, Hook, Layer, RiskEvent
from risk.layers.build import build_layers
from risk.layers.equity import (
    DailyLossLimitLayer,
    DrawdownLayer,
    DrawdownTier,
    LossStreakLayer,
    VolatilityRegimeLayer,
)
from risk.layers.exposure import FatFingerLayer, GrossExposureLayer, PositionLimitLayer
from risk.layers.hooks import RiskHooks
from risk.layers.latches import FillGuardLayer, ReconciliationLayer
from risk.layers.staleness import BrokerConnectionLayer, FeedLink, StaleDataLayer
from risk.layers.state import KillSwitchLayer
from risk.layers.timing import DripLayer, TradingWindowLayer

__all__ = [
    "BAR_TS",
    "FLATTEN",
    "SEVERITY",
    "VOLATILITY_Z",
    "BrokerConnectionLayer",
    "ConfidenceLayer",
    "CooldownLayer",
    "DailyLossLimitLayer",
    "DrawdownLayer",
    "DrawdownTier",
    "DripLayer",
    "FatFingerLayer",
    "FeedLink",
    "FillGuardLayer",
    "GrossExposureLayer",
    "Hook",
    "KillSwitchLayer",
    "Layer",
    "LossStreakLayer",
    "PositionLimitLayer",
    "ReconciliationLayer",
    "RiskEvent",
    "RiskHooks",
    "StaleDataLayer",
    "SubmitRateLayer",
    "TradeCountLayer",
    "TradingWindowLayer",
    "VolatilityRegimeLayer",
    "build_layers",
]
