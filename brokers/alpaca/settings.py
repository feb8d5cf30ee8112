"""What the Alpaca adapter needs to know, as one frozen value (``brokers`` never imports the daemon's config).

``daemon/venues.py`` builds it from ``broker.alpaca`` and the two secrets
from the environment. ``repr`` never shows the secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alpaca.common.enums import BaseURL

__all__ = ["TIMEFRAMES", "AlpacaSettings"]

# timeframe name (Alpaca's spelling) → seconds; the stream delivers minute bars only
TIMEFRAMES: dict[str, int] = {"1Min": 60}


@dataclass(frozen=True, slots=True)
class AlpacaSettings:
    key_id: str = field(repr=False)
    secret_key: str = field(repr=False)
    symbols: tuple[str, ...]
    paper: bool = True
    feed: str = "iex"  # iex | sip
    timeframe: str = "1Min"
    trading_url: str | None = None  # REST origin, e.g. http://127.0.0.1:PORT (alpaca-py appends /v2)
    data_url: str | None = None  # market-data REST origin
    data_stream_url: str | None = None  # the whole websocket URL, e.g. ws://127.0.0.1:PORT/v2/iex
    trading_stream_url: str | None = None  # the whole trade-updates websocket URL
    requests_per_minute: int = 200
    max_workers: int = 4
    request_timeout_seconds: float = 10.0
    backoff_floor_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    in_flight_deadline_seconds: float = 8.0
    clock_poll_seconds: float = 60.0
    seed: int | None = None  # backoff jitter RNG seed (tests)

    def __post_init__(self) -> None:
        if self.timeframe not in TIMEFRAMES:
            raise ValueError(f"timeframe {self.timeframe!r} is not streamed; use one of {sorted(TIMEFRAMES)}")
        if self.feed not in ("iex", "sip"):
            raise ValueError(f"feed must be 'iex' or 'sip', not {self.feed!r}")
        if not self.symbols:
            raise ValueError("at least one symbol is needed")

    @property
    def bar_seconds(self) -> int:
        return TIMEFRAMES[self.timeframe]

    @property
    def rest_origin(self) -> str:
        return self.trading_url or (BaseURL.TRADING_PAPER.value if self.paper else BaseURL.TRADING_LIVE.value)

    @property
    def data_origin(self) -> str:
        return self.data_url or BaseURL.DATA.value

    @property
    def bars_stream(self) -> str:
        return self.data_stream_url or f"{BaseURL.MARKET_DATA_STREAM.value}/v2/{self.feed}"

    @property
    def updates_stream(self) -> str:
        if self.trading_stream_url:
            return self.trading_stream_url
        return (BaseURL.TRADING_STREAM_PAPER if self.paper else BaseURL.TRADING_STREAM_LIVE).value
