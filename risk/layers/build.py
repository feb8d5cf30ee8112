"""build_layers: the configured layers in the order the governor runs them."""

from __future__ import annotations

from risk.config import RiskConfig
from risk.layers.activity import ConfidenceLayer, CooldownLayer, SubmitRateLayer, TradeCountLayer
from risk.layers.base import Layer
from risk.layers.equity import DailyLossLimitLayer, DrawdownLayer, LossStreakLayer, VolatilityRegimeLayer
from risk.layers.exposure import FatFingerLayer, GrossExposureLayer, PositionLimitLayer
from risk.layers.latches import FillGuardLayer, ReconciliationLayer
from risk.layers.staleness import BrokerConnectionLayer, StaleDataLayer
from risk.layers.state import KillSwitchLayer
from risk.layers.timing import DripLayer, TradingWindowLayer


def build_layers(cfg: RiskConfig, *, bar_seconds: int = 3600) -> list[Layer]:
    """The enabled layers in the order the governor must run them.

    The state guards come first and cannot be switched off. ``bar_seconds``
    converts the cooldown's bars into seconds (the data config's bar length).
    Disabled layers, and the drip without a deployment start, are left out
    rather than built idle.
    """
    lot = cfg.lot_size
    layers: list[Layer] = [
        KillSwitchLayer(cfg.kill_switch, lot),
        FillGuardLayer(lot),
        ReconciliationLayer(lot),
    ]
    if cfg.window.enabled:
        layers.append(TradingWindowLayer(cfg.window, lot))
    if cfg.drip.enabled and cfg.drip.deployment_start is not None and cfg.drip.schedule:
        layers.append(DripLayer(int(cfg.drip.deployment_start.timestamp()), cfg.drip.schedule, lot))
    if cfg.stale_data.enabled:
        layers.append(StaleDataLayer(cfg.stale_data, lot))
    if cfg.broker_connection.enabled:
        layers.append(BrokerConnectionLayer(cfg.broker_connection, lot))
    if cfg.confidence.enabled:
        layers.append(ConfidenceLayer(cfg.confidence, lot))
    if cfg.cooldown.enabled:
        layers.append(CooldownLayer(cfg.cooldown, bar_seconds, lot))
    if cfg.trade_count.enabled:
        layers.append(TradeCountLayer(cfg.trade_count, lot))
    if cfg.submit_rate.enabled:
        layers.append(SubmitRateLayer(cfg.submit_rate, lot))
    if cfg.position.enabled:
        layers.append(PositionLimitLayer(cfg.position, lot))
    if cfg.gross_exposure.enabled:
        layers.append(GrossExposureLayer(cfg.gross_exposure, lot))
    if cfg.fat_finger.enabled:
        layers.append(FatFingerLayer(cfg.fat_finger, lot))
    if cfg.daily_loss.enabled:
        layers.append(DailyLossLimitLayer(cfg.daily_loss, lot))
    if cfg.drawdown.enabled:
        layers.append(DrawdownLayer(cfg.drawdown, lot))
    if cfg.volatility.enabled:
        layers.append(VolatilityRegimeLayer(cfg.volatility, lot))
    if cfg.loss_streak.enabled:
        layers.append(LossStreakLayer(cfg.loss_streak, lot))
    return layers
