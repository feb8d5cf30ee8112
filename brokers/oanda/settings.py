"""What the OANDA adapter needs to know, as one frozen value (``brokers`` never imports the daemon's config).

``daemon/venues.py`` builds it from ``broker.oanda``, the token from the
environment and the FX week of ``risk.trading_window``. ``repr`` never shows
the token.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["GRANULARITIES", "PRICE_COMPONENTS", "OandaSettings"]

# OANDA candle granularity → seconds (the ones a bar built from the pricing stream can match)
GRANULARITIES: dict[str, int] = {
    "S5": 5, "S10": 10, "S15": 15, "S30": 30, "M1": 60, "M2": 120, "M4": 240, "M5": 300, "M10": 600,
    "M15": 900, "M30": 1800, "H1": 3600, "H2": 7200, "H3": 10800, "H4": 14400,
}
# our name → (candles ``price`` parameter, the candle's key)
PRICE_COMPONENTS: dict[str, tuple[str, str]] = {"mid": ("M", "mid"), "bid": ("B", "bid"), "ask": ("A", "ask")}
_HOSTS = {
    True: ("https://api-fxpractice.oanda.com", "https://stream-fxpractice.oanda.com"),
    False: ("https://api-fxtrade.oanda.com", "https://stream-fxtrade.oanda.com"),
}


@dataclass(frozen=True, slots=True)
class OandaSettings:
    token: str = field(repr=False)
    account_id: str
    instruments: tuple[str, ...]  # OANDA names, e.g. ("EUR_USD",); our symbol drops the underscore
    practice: bool = True
    price: str = "mid"  # mid | bid | ask: the price bars are built from
    granularity: str = "H1"
    heartbeat_limit_seconds: float = 10.0  # no message this long: the pricing stream is dead
    api_url: str | None = None  # REST origin override (tests), e.g. http://127.0.0.1:PORT
    stream_url: str | None = None  # streaming origin override
    requests_per_second: float = 50.0
    max_workers: int = 4
    request_timeout_seconds: float = 10.0
    backoff_floor_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    in_flight_deadline_seconds: float = 8.0
    transactions_poll_seconds: float = 1.0  # how often fills and cancels are read from transactions/sinceid
    # True when the FX market is open at a UTC epoch second (the daemon passes its trading-window rule);
    # None: every time is in session
    session_open: Callable[[int], bool] | None = field(default=None, repr=False, compare=False)
    seed: int | None = None  # backoff jitter RNG seed (tests)

    def __post_init__(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise ValueError(f"granularity {self.granularity!r} is not one of {sorted(GRANULARITIES)}")
        if self.price not in PRICE_COMPONENTS:
            raise ValueError(f"price must be one of {sorted(PRICE_COMPONENTS)}, not {self.price!r}")
        if not self.instruments:
            raise ValueError("at least one instrument is needed")
        if not self.account_id:
            raise ValueError("the OANDA account id is needed")

    @property
    def bar_seconds(self) -> int:
        return GRANULARITIES[self.granularity]

    @property
    def environment(self) -> str:
        """The key this adapter registers in oandapyV20's ``TRADING_ENVIRONMENTS`` (hosts looked up per request)."""
        return f"tradectl-{self.api_origin}-{self.stream_origin}"

    @property
    def api_origin(self) -> str:
        return (self.api_url or _HOSTS[self.practice][0]).rstrip("/")

    @property
    def stream_origin(self) -> str:
        return (self.stream_url or _HOSTS[self.practice][1]).rstrip("/")

    def symbol(self, instrument: str) -> str:
        """Our symbol for an OANDA instrument: ``EUR_USD`` → ``EURUSD`` (the bundled data's spelling)."""
        return instrument.replace("_", "")

    def instrument(self, symbol: str) -> str | None:
        for name in self.instruments:
            if self.symbol(name) == symbol:
                return name
        return None
