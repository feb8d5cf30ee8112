"""The daemon's configuration: pydantic models, a YAML file, environment overrides.

The models' defaults ARE the embedded default configuration (what `make run`
uses); ``config/default.yaml`` spells every default out with its meaning and a
test keeps the two equal. Precedence: environment (``TRADECTL_<SECTION>__<KEY>``)
over the YAML file over the defaults. Secrets are read only from the
environment: a secret in a file is refused, because config files get committed.
"""

from __future__ import annotations

import hashlib
import json
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from brokers.costs import CostModel
from brokers.errors import ConfigError
from risk.config import RiskConfig, SizingConfig
from strategies.evaluation.gates import ValidationConfig

ENV_PREFIX = "TRADECTL_"

# Dotted paths of fields that may only come from the environment.
SECRET_FIELDS: tuple[str, ...] = (
    "api.token", "telegram.token", "alpaca.key_id", "alpaca.secret_key", "oanda.token",
)


def _secret_exclusions() -> dict[str, set[str]]:
    """What ``model_dump`` leaves out of fingerprints and /status: every secret field."""
    excluded: dict[str, set[str]] = {}
    for dotted in SECRET_FIELDS:
        section, key = dotted.split(".")
        excluded.setdefault(section, set()).add(key)
    return excluded


_SECRETS_EXCLUDED = _secret_exclusions()
LIVE_CONFIRM_ENV = "TRADECTL_LIVE_CONFIRM"  # live trading: must equal the Alpaca account number


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CostConfig(_Section):
    spread_bps: Decimal = Field(Decimal("1.0"), ge=0, description="full bid/ask spread in basis points")
    slippage_bps: Decimal = Field(Decimal("0.5"), ge=0, description="adverse slippage per fill, bps")
    commission_bps: Decimal = Field(Decimal("0.2"), ge=0, description="commission as bps of notional")
    min_commission: Decimal = Field(Decimal("0"), ge=0, description="minimum commission per fill")
    price_increment: Decimal = Field(Decimal("0.00001"), gt=0, description="instrument tick size")
    fee_increment: Decimal = Field(Decimal("0.01"), gt=0, description="smallest fee unit counted")

    def model(self) -> CostModel:
        return CostModel(**self.model_dump())


class SimBrokerConfig(_Section):
    starting_cash: Decimal = Field(Decimal("100000"), gt=0, description="cash of a new simulated account")
    currency: str = Field("USD", description="account currency")
    fill_at: Literal["next_open", "close"] = Field(
        "next_open", description="market orders fill at the next bar's open, or at the deciding bar's close"
    )
    costs: CostConfig = Field(default_factory=CostConfig)
    state_file: Path | None = Field(
        None,
        description="the sim account's own file (snapshot + journal) so a restarted daemon meets the broker as it "
        "left it; None = a new account every run",
    )
    checkpoint_bars: int = Field(
        0, ge=0, description="also save the sim's feed position every N bars; 0 = only with order events"
    )


class OrdersConfig(_Section):
    submit_timeout_seconds: float = Field(10.0, gt=0, description="a submit unanswered this long is UNKNOWN")
    ack_timeout_seconds: float = Field(
        30.0, gt=0, description="an order waiting this long for an ack or cancel confirmation is looked up"
    )
    not_found_limit: int = Field(3, ge=1, description="lookups finding no such order before it counts as never sent")
    check_every_seconds: float = Field(5.0, gt=0, description="how often acknowledgement timeouts are checked")


class ReconcileConfig(_Section):
    policy: Literal["adopt", "halt"] = Field(
        "halt", description="on a confirmed difference: take the broker's state and alert, or HALT"
    )
    interval_seconds: float = Field(60.0, gt=0, description="periodic reconciliation")
    after_fill: bool = Field(True, description="reconcile after each batch of fills (run mode; backtests skip it)")
    confirm_delay_seconds: float | None = Field(
        1.0, ge=0, description="second look before acting on a difference; None = act on the first"
    )
    unknown_halt_after: int = Field(3, ge=1, description="consecutive unreadable broker reports before HALT")
    startup_attempts: int = Field(3, ge=1, description="start-up reads of an unreachable broker before HALT")
    startup_retry_seconds: float = Field(2.0, ge=0, description="pause between start-up attempts")


class AlpacaBrokerConfig(_Section):
    """Alpaca (alpaca-py): paper endpoints unless live trading is switched on twice (here and in the environment)."""

    paper: bool = Field(True, description="paper-trading endpoints and keys; false = real money (needs `live: true`)")
    live: bool = Field(
        False,
        description="trade real money: needs `paper: false` and TRADECTL_LIVE_CONFIRM equal to the account number;"
        " size entries down with risk.drip for the first days",
    )
    feed: Literal["iex", "sip"] = Field("iex", description="stock market-data feed (sip needs a paid subscription)")
    symbols: list[str] = Field(default_factory=lambda: ["SPY"], min_length=1, description="stocks to stream bars of")
    timeframe: Literal["1Min"] = Field("1Min", description="bar length streamed (data.bar_seconds must match: 60)")
    trading_url: str | None = Field(None, description="REST origin override (tests); None = Alpaca's paper/live")
    data_url: str | None = Field(None, description="market-data REST origin override; None = Alpaca's")
    data_stream_url: str | None = Field(None, description="whole market-data websocket URL override; None = Alpaca's")
    trading_stream_url: str | None = Field(None, description="whole trade-updates websocket URL override")
    requests_per_minute: int = Field(200, ge=1, description="REST rate limit (token bucket shared by every call)")
    request_timeout_seconds: float = Field(10.0, gt=0, description="a REST call unanswered this long has failed")
    max_worker_threads: int = Field(4, ge=1, le=64, description="threads running blocking REST calls")
    backoff_floor_seconds: float = Field(1.0, gt=0, description="first reconnect delay (full jitter above half)")
    backoff_cap_seconds: float = Field(60.0, gt=0, description="longest reconnect delay")
    in_flight_deadline_seconds: float = Field(
        8.0, gt=0, description="a submit with no clear answer is looked up by client id this long, then UNKNOWN"
        " (below orders.submit_timeout_seconds)"
    )
    connect_timeout_seconds: float = Field(30.0, gt=0, description="start-up: both streams must be up by then")
    clock_poll_seconds: float = Field(60.0, gt=0, description="how often the market clock (open/closed) is read")

    @model_validator(mode="after")
    def _paper_or_live_on_purpose(self) -> AlpacaBrokerConfig:
        if self.paper and self.live:
            raise ValueError("paper: true and live: true contradict each other; live trading needs paper: false")
        if not self.paper and not self.live:
            raise ValueError("paper: false trades real money: set live: true as well (and TRADECTL_LIVE_CONFIRM)")
        if self.backoff_floor_seconds > self.backoff_cap_seconds:
            raise ValueError("backoff_floor_seconds must not exceed backoff_cap_seconds")
        return self


class AlpacaSecrets(_Section):
    """Alpaca API keys: environment only (TRADECTL_ALPACA__KEY_ID, TRADECTL_ALPACA__SECRET_KEY)."""

    key_id: SecretStr | None = Field(None, description="API key id; environment only: TRADECTL_ALPACA__KEY_ID")
    secret_key: SecretStr | None = Field(
        None, description="API secret; environment only: TRADECTL_ALPACA__SECRET_KEY"
    )


class OandaBrokerConfig(_Section):
    """OANDA (oandapyV20): the practice (fxTrade Practice) hosts unless practice is switched off."""

    practice: bool = Field(True, description="fxTrade Practice hosts and token; false = the live fxTrade hosts")
    account_id: str = Field("", description="v20 account id, e.g. 101-004-1234567-001 (`broker check` lists it)")
    instruments: list[str] = Field(
        default_factory=lambda: ["EUR_USD"], min_length=1,
        description="OANDA instruments streamed and traded; our symbol drops the underscore (EUR_USD = EURUSD)",
    )
    price: Literal["mid", "bid", "ask"] = Field("mid", description="price bars are built from (ticks and candles)")
    granularity: Literal["S5", "S10", "S15", "S30", "M1", "M2", "M4", "M5", "M10", "M15", "M30", "H1", "H2", "H3",
                         "H4"] = Field("H1", description="bar length (data.bar_seconds must match: H1 = 3600)")
    heartbeat_limit_seconds: float = Field(
        10.0, gt=0, description="no pricing message (OANDA heartbeats every 5 s) this long = dead stream: reconnect"
        " and backfill from candles")
    api_url: str | None = Field(None, description="REST origin override (tests); None = OANDA's practice/live host")
    stream_url: str | None = Field(None, description="streaming origin override; None = OANDA's practice/live host")
    requests_per_second: float = Field(50.0, gt=0, description="REST rate limit (OANDA allows 100/s per account)")
    request_timeout_seconds: float = Field(10.0, gt=0, description="a REST call unanswered this long has failed")
    max_worker_threads: int = Field(4, ge=1, le=64, description="threads running blocking REST calls")
    backoff_floor_seconds: float = Field(1.0, gt=0, description="first reconnect delay (full jitter above half)")
    backoff_cap_seconds: float = Field(60.0, gt=0, description="longest reconnect delay")
    in_flight_deadline_seconds: float = Field(
        8.0, gt=0, description="a submit with no clear answer is looked up by client id this long, then UNKNOWN"
        " (below orders.submit_timeout_seconds)")
    transactions_poll_seconds: float = Field(1.0, gt=0, description="how often fills and cancels are read")
    connect_timeout_seconds: float = Field(30.0, gt=0, description="start-up: the pricing stream must be up by then")

    @model_validator(mode="after")
    def _backoff_order(self) -> OandaBrokerConfig:
        if self.backoff_floor_seconds > self.backoff_cap_seconds:
            raise ValueError("backoff_floor_seconds must not exceed backoff_cap_seconds")
        return self


class OandaSecrets(_Section):
    """OANDA personal access token: environment only (TRADECTL_OANDA__TOKEN)."""

    token: SecretStr | None = Field(None, description="v20 access token; environment only: TRADECTL_OANDA__TOKEN")


class IbContractConfig(_Section):
    """One IB instrument, as TWS's contract search wants it; ``symbol`` is the name tradectl trades it under."""

    symbol: str = Field(..., min_length=1, description="our name for it (data.symbol, bars, orders, positions)")
    sec_type: Literal["STK", "CASH", "FUT"] = Field("STK", description="stock, FX pair (IDEALPRO) or future")
    ib_symbol: str = Field("", description="IB's symbol when it differs: EUR for EUR.USD, ES for an ES future")
    currency: str = Field("USD", description="the contract's currency (an FX pair's quote currency)")
    exchange: str = Field("", description="'' = SMART for stocks, IDEALPRO for FX; a future's exchange (CME)")
    primary_exchange: str = Field("", description="a stock's listing exchange when SMART is ambiguous (NASDAQ)")
    expiry: str = Field("", pattern=r"^(\d{6}|\d{8})?$", description="futures: YYYYMM or YYYYMMDD")
    what_to_show: Literal["", "TRADES", "MIDPOINT", "BID", "ASK"] = Field(
        "", description="bar source; '' = TRADES (MIDPOINT for FX, which has no trades)")

    @model_validator(mode="after")
    def _complete(self) -> IbContractConfig:
        if self.sec_type == "FUT" and (not self.expiry or not self.exchange):
            raise ValueError(f"{self.symbol}: a future needs expiry (YYYYMM) and exchange (e.g. CME)")
        return self


_IB_LIVE_PORTS = {7496: ("TWS", 7497), 4001: ("IB Gateway", 4002)}  # live port -> (application, its paper port)


class IbBrokerConfig(_Section):
    """Interactive Brokers through TWS or IB Gateway (ib_async): the API socket of a logged-in session."""

    host: str = Field("127.0.0.1", description="where TWS/Gateway listens (its API settings must trust us)")
    port: int = Field(7497, ge=1, le=65535, description="API port: TWS paper 7497, live 7496; Gateway 4002/4001")
    live: bool = Field(
        False, description="trade a live account: needs TRADECTL_LIVE_CONFIRM equal to the account id; false = paper"
        " accounts (DU...) only, a live port (7496, 4001) or a live account is refused")
    client_id: int = Field(1, ge=0, description="API client id; unique per connection to the same TWS")
    account: str = Field("", description="account to trade; '' = the login's only account")
    contracts: list[IbContractConfig] = Field(
        default_factory=lambda: [IbContractConfig(symbol="SPY")], min_length=1,
        description="instruments qualified at start (one that does not qualify stops start-up)")
    bar_seconds: int = Field(60, description="bar length: 5-second real-time bars are summed to it (data.bar_seconds)")
    use_rth: bool = Field(False, description="bars from regular trading hours only")
    allow_read_only: bool = Field(
        False, description="connect to a read-only API session (no orders); false = refuse to start on one")
    messages_per_second: float = Field(50.0, gt=0, le=50, description="API message rate (IB allows 50/s)")
    historical_per_10_minutes: int = Field(60, ge=1, le=60, description="historical requests per 10 min (IB: 60)")
    connect_timeout_seconds: float = Field(10.0, gt=0, description="start-up: handshake and subscriptions by then")
    request_timeout_seconds: float = Field(15.0, gt=0, description="a request unanswered this long has failed")
    ack_timeout_seconds: float = Field(
        3.0, gt=0, description="a placed order unacknowledged this long is looked up by its orderRef (twice this"
        " must stay below orders.submit_timeout_seconds)")
    backoff_floor_seconds: float = Field(1.0, gt=0, description="first reconnect delay (full jitter above half)")
    backoff_cap_seconds: float = Field(60.0, gt=0, description="longest reconnect delay")

    @model_validator(mode="after")
    def _consistent(self) -> IbBrokerConfig:
        from brokers.ib.settings import BAR_SIZES

        if self.bar_seconds not in BAR_SIZES:
            raise ValueError(f"bar_seconds {self.bar_seconds} is not an IB bar size: one of {sorted(BAR_SIZES)}")
        if self.port in _IB_LIVE_PORTS and not self.live:
            app, paper = _IB_LIVE_PORTS[self.port]
            raise ValueError(f"port {self.port} is {app}'s live-trading port: set live: true (and TRADECTL_LIVE_CONFIRM"
                             f" to the account id) to trade real money, or use the paper port {paper}")
        if self.backoff_floor_seconds > self.backoff_cap_seconds:
            raise ValueError("backoff_floor_seconds must not exceed backoff_cap_seconds")
        names = [c.symbol for c in self.contracts]
        if len(set(names)) != len(names):
            raise ValueError(f"contract symbols must be unique: {names}")
        return self


class BrokerConfig(_Section):
    kind: Literal["sim", "alpaca", "oanda", "ib"] = Field(
        "sim", description="broker adapter: the simulated broker replays `data`; alpaca trades broker.alpaca;"
        " oanda trades broker.oanda; ib trades broker.ib through TWS/Gateway"
    )
    sim: SimBrokerConfig = Field(default_factory=SimBrokerConfig)
    alpaca: AlpacaBrokerConfig = Field(default_factory=AlpacaBrokerConfig)
    oanda: OandaBrokerConfig = Field(default_factory=OandaBrokerConfig)
    ib: IbBrokerConfig = Field(default_factory=IbBrokerConfig)


class DataConfig(_Section):
    """Where bars come from for the simulated broker and backtests."""

    path: Path | None = Field(None, description="CSV/Parquet file; None = the bundled EUR/USD 2017 hourly bars")
    symbol: str = Field("EURUSD", description="symbol the bars of `path` belong to")
    columns: dict[str, str] = Field(default_factory=dict, description="our column -> file column")
    timezone: str = Field("UTC", description="zone of naive timestamps in the file")
    stamp: Literal["close", "open"] = Field("close", description="whether file timestamps mark bar close or open")
    bar_seconds: int = Field(3600, gt=0, description="bar length, seconds")
    pace: float = Field(20.0, ge=0, description="bars per second for `tradectl run`; 0 = as fast as possible")


class GuardConfig(_Section):
    max_gap_seconds: int = Field(
        259_200, gt=0, description="a gap longer than this rejects the bar and restarts the symbol's episode"
    )


class SmaCrossConfig(_Section):
    fast: int = Field(10, ge=1, description="fast moving average, bars")
    slow: int = Field(30, ge=2, description="slow moving average, bars")
    allow_short: bool = Field(True, description="short below the slow average (else go flat)")


class RecurrentConfig(_Section):
    model: Path | None = Field(None, description="model zip; None = the bundled default model")
    max_state_age_seconds: int = Field(
        604_800, gt=0, description="saved LSTM states older than this are re-warmed from history"
    )


class StrategyConfig(_Section):
    kind: Literal["sma_cross", "recurrent"] = Field(
        "recurrent", description="which strategy decides: the bundled recurrent policy or the SMA-cross baseline"
    )
    sma_cross: SmaCrossConfig = Field(default_factory=SmaCrossConfig)
    recurrent: RecurrentConfig = Field(default_factory=RecurrentConfig)


class StoreConfig(_Section):
    path: Path = Field(Path("var/tradectl.db"), description="SQLite database (WAL mode)")
    flush_rows: int = Field(4096, gt=0, description="buffered decision/equity rows before a write")
    flush_seconds: float = Field(1.0, gt=0, description="longest a buffered row waits in live runs")
    synchronous: Literal["full", "normal"] = Field(
        "full",
        description="full: a committed order survives power loss (an fsync per commit); normal (WAL): it survives"
        " a killed process but not an OS crash, and commits take microseconds instead of milliseconds",
    )
    checkpoint_seconds: float = Field(
        60.0,
        gt=0,
        description="live runs: how often a worker thread folds the WAL into the database, off the commit path"
        " (the checkpoint's fsyncs never delay an order's commit)",
    )


class ApiConfig(_Section):
    enabled: bool = Field(True, description="serve the control API during `tradectl run`")
    host: str = Field("127.0.0.1", description="bind address; keep it on loopback unless a proxy adds TLS")
    port: int = Field(8787, ge=0, le=65535, description="API port (0 = any free port)")
    token: SecretStr | None = Field(None, description="bearer token; environment only: TRADECTL_API__TOKEN")


class HealthConfig(_Section):
    """What `tradectl run` calls healthy: /healthz, the systemd watchdog and the unhealthy exit share these rules."""

    loop_lag_limit_ms: float = Field(
        1000.0, gt=0, description="unhealthy while any event-loop wake-up in the window came later than this"
    )
    loop_lag_window_seconds: float = Field(30.0, gt=0, description="how long a late wake-up counts against health")
    loop_lag_sample_ms: float = Field(
        50.0, ge=1, le=1000, description="how often the loop-lag monitor asks to be woken; finer = more samples"
    )
    market_data_grace_seconds: float = Field(
        60.0,
        gt=0,
        description="market data is stale when no bar came for one expected bar interval (1/pace for a paced"
        " replay, data.bar_seconds for a live venue) plus this long, or a paced replay is this far behind schedule",
    )
    reconnect_budget_seconds: float = Field(
        120.0, gt=0, description="a venue that reports itself reconnecting stays healthy this long"
    )
    store_probe_seconds: float = Field(10.0, gt=0, description="how often a small committed write tests the store")
    store_probe_max_age_seconds: float = Field(
        30.0, gt=0, description="unhealthy when the last successful store write is older (a write hanging on the disk)"
    )
    exit_after_unhealthy_seconds: float = Field(
        0.0,
        ge=0,
        description="stop and exit with code 4 after staying unhealthy this long, for a restart policy to bring the"
        " daemon back (Fly.io); 0 = off (systemd restarts a daemon that stops its watchdog pings)",
    )


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="log level")
    json_output: bool | None = Field(None, description="None = JSON when stderr is not a terminal")


class TelegramConfig(_Section):
    """Telegram alerts and commands (python-telegram-bot, run inside the daemon's event loop)."""

    enabled: bool = Field(False, description="run the Telegram bot during `tradectl run` (needs the token)")
    token: SecretStr | None = Field(None, description="bot token; environment only: TRADECTL_TELEGRAM__TOKEN")
    base_url: str = Field(
        "https://api.telegram.org/bot", description="Bot API base; the token is appended (a test server here)"
    )
    chat_ids: list[int] = Field(
        default_factory=list, description="chats that may read (/status ...) and receive alerts; empty = none"
    )
    command_chat_ids: list[int] | None = Field(
        None, description="chats that may pause, resume and flatten; None = the same as chat_ids"
    )
    user_ids: list[int] = Field(
        default_factory=list, description="if set, only these Telegram users may command, even in allowed chats"
    )
    poll_timeout_seconds: int = Field(30, ge=0, description="getUpdates long-poll timeout")
    coalesce_seconds: float = Field(
        60.0, gt=0, description="risk denials: one message per layer and reason per this many seconds"
    )
    outbox_limit: int = Field(1000, ge=10, description="undelivered alerts kept; older ones are dropped and counted")
    backlog_summary_after: int = Field(
        10, ge=2, description="a backlog longer than this is sent as one summary plus the newest alerts"
    )
    send_interval_seconds: float = Field(
        1.0, ge=0, description="least time between two messages to one chat (Telegram allows about 1/s)"
    )
    bot_send_interval_seconds: float = Field(
        0.034, ge=0, description="least time between two messages to any chat (Telegram allows about 30/s per bot)"
    )
    retry_seconds: float = Field(5.0, gt=0, description="wait after a failed send before trying again")
    confirm_seconds: float = Field(60.0, gt=0, description="how long a /flatten waits for its confirmation")
    daily_summary_time: str | None = Field(
        "21:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description="local HH:MM of the daily summary; None = off"
    )
    timezone: str = Field("UTC", description="zone of daily_summary_time (IANA name)")


SHADOW_GATES: tuple[str, ...] = ("hold_rate", "trades_per_day", "max_drawdown", "action_share", "invalid_actions")
"""Validation gates that mean something for one day of decisions (a shadow replay judges each day by them)."""


class PromotionConfig(_Section):
    """What a model needs to become production, and how a running daemon follows the registry."""

    shadow_days: int = Field(10, ge=1, description="trading days (UTC dates with bars) a shadow replay covers")
    shadow_gates: list[str] = Field(
        default_factory=lambda: list(SHADOW_GATES), description="validation gates judged on each shadow day"
    )
    shadow_min_pass_share: float = Field(
        0.5, ge=0, le=1, description="a shadow replay passes when each required gate passed on this share of its days"
    )
    shadow_not_worse: bool = Field(
        True, description="a shadow replay also needs the candidate's net P&L at least the production model's"
    )
    drift_limit: float = Field(
        0.15, gt=0, description="relative L2 parameter drift from the production model that is logged and alerted"
    )
    poll_seconds: float = Field(
        5.0, gt=0, description="how often a running daemon checks the registry for a promotion or a rollback"
    )

    @model_validator(mode="after")
    def _day_gates(self) -> PromotionConfig:
        unknown = sorted(set(self.shadow_gates) - set(SHADOW_GATES))
        if unknown:
            raise ValueError(f"shadow_gates {unknown} cannot be judged per day; choose from {list(SHADOW_GATES)}")
        return self


class TradectlConfig(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    broker: BrokerConfig = Field(default_factory=BrokerConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    guard: GuardConfig = Field(default_factory=GuardConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    sizing: SizingConfig = Field(default_factory=SizingConfig)
    risk: RiskConfig = Field(default_factory=RiskConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    orders: OrdersConfig = Field(default_factory=OrdersConfig)
    reconcile: ReconcileConfig = Field(default_factory=ReconcileConfig)
    api: ApiConfig = Field(default_factory=ApiConfig)
    health: HealthConfig = Field(default_factory=HealthConfig)
    logging: LoggingConfig = Field(default_factory=LoggingConfig)
    telegram: TelegramConfig = Field(default_factory=TelegramConfig)
    alpaca: AlpacaSecrets = Field(default_factory=AlpacaSecrets)
    oanda: OandaSecrets = Field(default_factory=OandaSecrets)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment wins over the file (passed as init kwargs).
        return (env_settings, init_settings)

    @model_validator(mode="after")
    def _venue_fits(self) -> TradectlConfig:
        if self.broker.kind == "alpaca":
            _check_alpaca(self)
        if self.broker.kind == "oanda":
            _check_oanda(self)
        if self.broker.kind == "ib":
            _check_ib(self)
        return self

    def fingerprint(self) -> str:
        """A hash of the effective configuration without secrets, stored with each run."""
        doc = self.model_dump(mode="json", exclude=_SECRETS_EXCLUDED)
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]

    def public_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude=_SECRETS_EXCLUDED)


def _check_alpaca(config: TradectlConfig) -> None:
    """What must agree across sections when trading on Alpaca; each problem names the setting to change."""
    alpaca = config.broker.alpaca
    problems = []
    if config.alpaca.key_id is None or config.alpaca.secret_key is None:
        problems.append("broker.kind alpaca needs TRADECTL_ALPACA__KEY_ID and TRADECTL_ALPACA__SECRET_KEY in the "
                        "environment")
    if config.data.bar_seconds != 60:
        problems.append(f"data.bar_seconds is {config.data.bar_seconds}; broker.alpaca.timeframe "
                        f"{alpaca.timeframe} bars are 60 s: set data.bar_seconds: 60")
    if config.data.symbol not in alpaca.symbols:
        problems.append(f"data.symbol {config.data.symbol!r} (the symbol the strategy trades) is not among "
                        f"broker.alpaca.symbols {alpaca.symbols}")
    if alpaca.in_flight_deadline_seconds >= config.orders.submit_timeout_seconds:
        problems.append("broker.alpaca.in_flight_deadline_seconds must be below orders.submit_timeout_seconds")
    if problems:
        raise ValueError("; ".join(problems))


def _check_ib(config: TradectlConfig) -> None:
    """What must agree across sections when trading through TWS; each problem names the setting to change."""
    ib, problems = config.broker.ib, []
    if config.data.bar_seconds != ib.bar_seconds:
        problems.append(f"data.bar_seconds is {config.data.bar_seconds}; broker.ib.bar_seconds is {ib.bar_seconds}:"
                        " make them equal")
    if config.data.symbol not in [c.symbol for c in ib.contracts]:
        problems.append(f"data.symbol {config.data.symbol!r} (the symbol the strategy trades) is not among "
                        f"broker.ib.contracts {[c.symbol for c in ib.contracts]}")
    if 2 * ib.ack_timeout_seconds >= config.orders.submit_timeout_seconds:
        problems.append("twice broker.ib.ack_timeout_seconds must be below orders.submit_timeout_seconds")
    if problems:
        raise ValueError("; ".join(problems))


def _check_oanda(config: TradectlConfig) -> None:
    """What must agree across sections when trading on OANDA; each problem names the setting to change."""
    from brokers.oanda.settings import GRANULARITIES

    oanda = config.broker.oanda
    problems = []
    if config.oanda.token is None:
        problems.append("broker.kind oanda needs TRADECTL_OANDA__TOKEN in the environment")
    if not oanda.account_id:
        problems.append("broker.oanda.account_id is empty: set the v20 account id (`tradectl broker check` lists it)")
    if config.data.bar_seconds != GRANULARITIES[oanda.granularity]:
        problems.append(f"data.bar_seconds is {config.data.bar_seconds}; broker.oanda.granularity "
                        f"{oanda.granularity} bars are {GRANULARITIES[oanda.granularity]} s")
    if config.data.symbol not in [i.replace("_", "") for i in oanda.instruments]:
        problems.append(f"data.symbol {config.data.symbol!r} (the symbol the strategy trades) is not among "
                        f"broker.oanda.instruments {oanda.instruments} (EUR_USD trades as EURUSD)")
    if oanda.in_flight_deadline_seconds >= config.orders.submit_timeout_seconds:
        problems.append("broker.oanda.in_flight_deadline_seconds must be below orders.submit_timeout_seconds")
    if problems:
        raise ValueError("; ".join(problems))


def load_config(path: str | Path | None = None) -> TradectlConfig:
    """Load ``path`` (or the embedded defaults) with environment overrides.

    Every problem becomes one ``ConfigError`` whose lines read ``file: field: message``.
    """
    source = str(path) if path is not None else "<defaults>"
    raw = _read_yaml(Path(path)) if path is not None else {}
    _refuse_file_secrets(raw, source)
    try:
        return TradectlConfig(**raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(source, exc)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections, got {type(doc).__name__}")
    return doc


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping: dict[Any, Any] = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in mapping:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _refuse_file_secrets(raw: dict[str, Any], source: str) -> None:
    problems = []
    for dotted in SECRET_FIELDS:
        section, key = dotted.split(".")
        block = raw.get(section)
        if isinstance(block, dict) and block.get(key) is not None:
            env = f"{ENV_PREFIX}{section.upper()}__{key.upper()}"
            problems.append(f"{source}: {dotted}: secrets are read only from the environment; set {env}")
    if problems:
        raise ConfigError("\n".join(problems))


def _format_errors(source: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "value_error" and "error" in err.get("ctx", {}):
            message = str(err["ctx"]["error"])  # our validators' own sentence, without pydantic's prefix
        lines.append(f"{source}: {loc}: {message}")
    return "\n".join(lines)


def render_defaults() -> str:
    """``config/default.yaml``: every setting with its default and its meaning.

    Generated from the models so the documentation cannot drift from the code
    (a test compares the file with this output).
    """
    lines = [
        "# tradectl — the embedded default configuration, every setting with its default.",
        "# Generated by `tradectl config defaults`; `tradectl run` without --config uses exactly these values.",
        "# Environment overrides: TRADECTL_<SECTION>__<KEY>, e.g. TRADECTL_DATA__PACE=100.",
        f"# Secrets ({', '.join(SECRET_FIELDS)}) are read only from the environment.",
    ]
    _render_model(TradectlConfig(), 0, lines)
    return "\n".join(lines) + "\n"


def _render_model(model: BaseModel, indent: int, lines: list[str]) -> None:
    pad = "  " * indent
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if info.description:
            lines.append(f"{pad}# {info.description}")
        if isinstance(value, BaseModel):
            if indent == 0:
                lines.append("")
            doc = (type(value).__doc__ or "").strip().splitlines()
            if doc and indent == 0 and not info.description:
                lines.append(f"{pad}# {doc[0]}")
            lines.append(f"{pad}{name}:")
            _render_model(value, indent + 1, lines)
            continue
        if isinstance(value, SecretStr):
            value = None
        dumped = yaml.safe_dump({name: _plain(value)}, default_flow_style=True, width=1000).strip()
        lines.append(f"{pad}{dumped[1:-1]}")


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, BaseModel):  # a list of sections (broker.ib.contracts)
        return value.model_dump(mode="json")
    return value
