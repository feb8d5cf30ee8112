"""Configuration of the risk layers (``risk:``) and of position sizing (``sizing:``).

The defaults are the embedded default run: the simulated broker trading the
bundled EUR/USD hourly bars with a 100,000 USD account and fixed 10,000-unit
positions. Limits are chosen so that run trades normally while a runaway
strategy, a fat-fingered quantity or a losing streak is still stopped.

Fractions are plain fractions (0.02 = 2 %). Money is in the account currency.
Quantities are ``Decimal`` because they are counted, not observed.

Layers that guard the trading state itself (kill switch, fill validation,
reconciliation) have ``enabled: Literal[True]``: they exist so that nothing
can bypass the governor's state, so a config file may not switch them off.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

from risk.calendar import calendar_names


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------------- layers


class KillSwitchConfig(_Section):
    """Enforces the trading state (PAUSED, HALTED, REDUCING) on every order."""

    enabled: Literal[True] = Field(True, description="always on: the trading state must be enforced")
    allow_flatten: bool = Field(
        True,
        description="orders marked as flatten (context extras 'flatten') that shrink a position pass even "
        "when PAUSED or HALTED, so an operator or a drawdown halt can still get out of the market",
    )


class TradingWindowConfig(_Section):
    """No new entries outside the exchange session or shortly before its close."""

    enabled: bool = Field(True, description="check the session calendar for exposure-increasing orders")
    calendar: str | None = Field(
        None,
        description="exchange_calendars code such as 'XNYS' (holidays and early closes included); "
        "None = 24x5 FX week, closed from Friday weekend_close_hour_utc to Sunday weekend_open_hour_utc",
    )
    calendar_start: date | None = Field(
        None, description="first date the exchange calendar covers; None = the library default (~20 years back)"
    )
    entry_cutoff_minutes: int = Field(
        15, ge=0, description="no new entries this many minutes before the session (or FX week) closes"
    )
    weekend_close_hour_utc: int = Field(21, ge=0, le=23, description="FX week closes Friday at this UTC hour")
    weekend_open_hour_utc: int = Field(21, ge=0, le=23, description="FX week opens Sunday at this UTC hour")

    @field_validator("calendar")
    @classmethod
    def _known_calendar(cls, value: str | None) -> str | None:
        if value is not None and value not in calendar_names():
            raise ValueError(f"unknown exchange calendar {value!r} (exchange_calendars code such as 'XNYS')")
        return value


class DripConfig(_Section):
    """Staged position sizes for the first days of a new deployment."""

    enabled: bool = Field(True, description="scale entries during the first days after deployment_start")
    deployment_start: AwareDatetime | None = Field(
        None, description="when this model/strategy went live (timezone-aware); None = no drip"
    )
    schedule: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75],
        description="size factor for calendar day 1, 2, ... after deployment_start; full size afterwards. "
        "Times before deployment_start use the first factor",
    )

    @field_validator("schedule")
    @classmethod
    def _factors_in_unit_interval(cls, value: list[float]) -> list[float]:
        if any(not 0 < f <= 1 for f in value):
            raise ValueError("every drip factor must be in (0, 1]")
        return value


class StaleDataConfig(_Section):
    """Refuses to act on a bar that is old by the time the order is judged."""

    enabled: bool = Field(True, description="compare the context time with the bar time (extras 'bar_ts')")
    max_age_seconds: int = Field(300, gt=0, description="largest allowed age of the bar behind a decision")


class BrokerConnectionConfig(_Section):
    """No new exposure while the venue reports its market-data or order-update stream down."""

    enabled: bool = Field(
        True, description="block entries (reason broker_disconnected) while broker feed_status says "
        "connected: false; exits and flatten still go out. A venue that reports no connection (the replay) "
        "is never blocked",
    )


class ConfidenceConfig(_Section):
    """Skips entries the model itself is unsure about."""

    enabled: bool = Field(True, description="block entries below min_confidence (None = no confidence: allow)")
    min_confidence: float = Field(
        0.35, ge=0, le=1, description="probability of the chosen action; 0.35 is just above chance for 4 actions"
    )


class CooldownConfig(_Section):
    """Waits after an order in a symbol before another entry there (stops churn)."""

    enabled: bool = Field(True, description="block entries in a symbol shortly after its last order")
    bars: int = Field(1, ge=0, description="cooldown in bars (times the bar length given to build_layers)")
    seconds: int = Field(0, ge=0, description="cooldown in seconds; the longer of bars and seconds applies")


class TradeCountConfig(_Section):
    """Caps orders per UTC day; once reached only exits pass."""

    enabled: bool = Field(True, description="count orders sent per UTC day")
    max_per_symbol: int = Field(20, gt=0, description="orders per symbol per UTC day before entries stop")
    max_total: int = Field(50, gt=0, description="orders over all symbols per UTC day before entries stop")


class SubmitRateConfig(_Section):
    """A runaway-loop guard on orders per rolling window of (simulated) time."""

    enabled: bool = Field(True, description="limit orders per rolling window")
    max_orders: int = Field(20, gt=0, description="orders allowed within window_seconds")
    window_seconds: int = Field(60, gt=0, description="length of the rolling window")


class PositionLimitConfig(_Section):
    """Largest position per symbol; entries are resized to what still fits."""

    enabled: bool = Field(True, description="cap each symbol's position")
    max_units: Decimal | None = Field(Decimal(100_000), gt=0, description="largest |position| in units")
    max_notional: Decimal | None = Field(
        Decimal(150_000), gt=0, description="largest |position| x last price, account currency"
    )


class GrossExposureConfig(_Section):
    """Largest sum of |position| x price over all symbols, the order included."""

    enabled: bool = Field(True, description="cap gross exposure")
    max_notional: Decimal | None = Field(None, gt=0, description="absolute cap, account currency; None = off")
    max_leverage: float | None = Field(2.0, gt=0, description="cap as a multiple of equity; None = off")


class FatFingerConfig(_Section):
    """Catches absurd orders: too large a notional, or a limit price far from the market."""

    enabled: bool = Field(True, description="check order notional and limit price")
    max_order_notional: Decimal | None = Field(
        Decimal(50_000), gt=0, description="largest notional of one order that increases exposure; None = off"
    )
    price_band: float | None = Field(
        0.02, gt=0, description="largest |limit price / last price - 1| of a limit order; None = off"
    )


class DailyLossConfig(_Section):
    """Stops new exposure once today's equity loss reaches the limit."""

    enabled: bool = Field(True, description="compare equity with the UTC day's starting equity")
    limit: float = Field(0.02, gt=0, lt=1, description="HALT new exposure at equity <= day start x (1 - limit)")
    flatten: bool = Field(False, description="also ask the daemon to flatten every position at the limit")


class DrawdownConfig(_Section):
    """Tiers of drawdown from peak equity, each stricter than the one before."""

    enabled: bool = Field(True, description="apply the drawdown tiers")
    warn: float = Field(0.015, gt=0, lt=1, description="record a warning event; orders still pass")
    halve: float = Field(0.018, gt=0, lt=1, description="scale entries by halve_factor")
    reducing: float = Field(0.020, gt=0, lt=1, description="block entries and request the REDUCING state")
    halt: float = Field(0.025, gt=0, lt=1, description="HALT, request a flatten and a rollback to the gold model")
    halve_factor: float = Field(0.5, gt=0, le=1, description="size factor of the halve tier")
    rollback_to_gold: bool = Field(True, description="at the halt tier, ask the daemon to load the gold model")

    @model_validator(mode="after")
    def _tiers_ascend(self) -> DrawdownConfig:
        if not self.warn <= self.halve <= self.reducing <= self.halt:
            raise ValueError("drawdown tiers must satisfy warn <= halve <= reducing <= halt")
        return self


class VolatilityRegimeConfig(_Section):
    """Smaller or no entries while volatility is extreme (extras 'volatility_z')."""

    enabled: bool = Field(True, description="read the volatility z-score from the context extras")
    z_threshold: float = Field(2.5, gt=0, description="act when volatility_z is above this")
    action: Literal["resize", "block"] = Field("resize", description="scale entries by factor, or block them")
    factor: float = Field(0.5, gt=0, le=1, description="size factor when action is resize")


class LossStreakConfig(_Section):
    """A pause in entries after several losing round trips in a row."""

    enabled: bool = Field(True, description="count consecutive losing round trips over all symbols")
    max_consecutive: int = Field(4, gt=0, description="losing round trips in a row that start the cooldown")
    cooldown_seconds: int = Field(21_600, gt=0, description="entries blocked this long after the last loss")


class FillGuardConfig(_Section):
    """A fill beyond the ordered quantity means our books are wrong: HALT."""

    enabled: Literal[True] = Field(True, description="always on: an overfill always halts")


class ReconciliationGuardConfig(_Section):
    """A reconciliation mismatch the reconciler did not adopt: HALT."""

    enabled: Literal[True] = Field(True, description="always on: a mismatch always halts")


class RiskConfig(_Section):
    """Every risk layer, in the order the governor runs them."""

    lot_size: Decimal = Field(
        Decimal(1), gt=0, description="quantity increment resized orders are rounded down to (as sizing.lot_size)"
    )
    kill_switch: KillSwitchConfig = Field(default_factory=KillSwitchConfig)
    fill_guard: FillGuardConfig = Field(default_factory=FillGuardConfig)
    reconciliation: ReconciliationGuardConfig = Field(default_factory=ReconciliationGuardConfig)
    window: TradingWindowConfig = Field(default_factory=TradingWindowConfig)
    drip: DripConfig = Field(default_factory=DripConfig)
    stale_data: StaleDataConfig = Field(default_factory=StaleDataConfig)
    broker_connection: BrokerConnectionConfig = Field(default_factory=BrokerConnectionConfig)
    confidence: ConfidenceConfig = Field(default_factory=ConfidenceConfig)
    cooldown: CooldownConfig = Field(default_factory=CooldownConfig)
    trade_count: TradeCountConfig = Field(default_factory=TradeCountConfig)
    submit_rate: SubmitRateConfig = Field(default_factory=SubmitRateConfig)
    position: PositionLimitConfig = Field(default_factory=PositionLimitConfig)
    gross_exposure: GrossExposureConfig = Field(default_factory=GrossExposureConfig)
    fat_finger: FatFingerConfig = Field(default_factory=FatFingerConfig)
    daily_loss: DailyLossConfig = Field(default_factory=DailyLossConfig)
    drawdown: DrawdownConfig = Field(default_factory=DrawdownConfig)
    volatility: VolatilityRegimeConfig = Field(default_factory=VolatilityRegimeConfig)
    loss_streak: LossStreakConfig = Field(default_factory=LossStreakConfig)


# ---------------------------------------------------------------------------- sizing


class FixedSizingConfig(_Section):
    units: Decimal = Field(Decimal(10_000), gt=0, description="position size in units")


class RiskFractionSizingConfig(_Section):
    risk_fraction: float = Field(
        0.01, gt=0, le=1, description="fraction of equity lost if the volatility stop is hit"
    )
    stop_atr_multiple: float = Field(
        2.0, gt=0, description="stop distance in ATRs; also the stop used by safe_f"
    )


class VolatilitySizingConfig(_Section):
    base_units: Decimal = Field(Decimal(10_000), gt=0, description="size when realised vol equals the target")
    target_volatility: float = Field(
        0.10, gt=0, description="target volatility, in the same unit as the realised vol passed (annualised)"
    )
    max_scale: float = Field(2.0, gt=0, description="largest multiple of base_units (calm markets)")


class SafeFSizingConfig(_Section):
    kelly_multiplier: float = Field(0.25, gt=0, le=1, description="safe-f = Kelly fraction x this")
    window: int = Field(50, gt=0, description="closed round trips in the rolling record")
    min_trades: int = Field(20, ge=0, description="trades needed before Kelly is trusted")
    bootstrap_risk_fraction: float = Field(
        0.0025, ge=0, le=1, description="risk fraction used until min_trades round trips are recorded"
    )
    max_risk_fraction: float = Field(0.02, gt=0, le=1, description="cap on the safe-f risk fraction")
    floor_quantity: Decimal = Field(
        Decimal(0),
        ge=0,
        description="size when Kelly <= 0 (no edge). 0 stops entries until the record improves, which "
        "needs trades from somewhere; a small probe size keeps the record learning",
    )


class SizingConfig(_Section):
    """How a BUY/SELL decision becomes a target position size."""

    method: Literal["fixed", "risk_fraction", "volatility", "safe_f"] = Field(
        "fixed", description="fixed units | % equity at risk over an ATR stop | volatility-scaled | safe-f Kelly"
    )
    lot_size: Decimal = Field(Decimal(1), gt=0, description="sizes are rounded down to a multiple of this")
    max_quantity: Decimal | None = Field(
        Decimal(100_000), gt=0, description="largest size any method returns; None = uncapped"
    )
    resize_open: bool = Field(
        False,
        description="re-size an open position on every BUY/SELL on its side; False = sizes are set at "
        "entry, so a drifting size does not become an adjustment order on every bar",
    )
    fixed: FixedSizingConfig = Field(default_factory=FixedSizingConfig)
    risk_fraction: RiskFractionSizingConfig = Field(default_factory=RiskFractionSizingConfig)
    volatility: VolatilitySizingConfig = Field(default_factory=VolatilitySizingConfig)
    safe_f: SafeFSizingConfig = Field(default_factory=SafeFSizingConfig)
