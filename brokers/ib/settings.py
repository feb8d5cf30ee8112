"""What the IB adapter needs to know, as frozen values (``brokers`` never imports the daemon's config).

``daemon/venues.py`` builds ``IbSettings`` from ``broker.ib``. A ``ContractSpec`` names one instrument
the way TWS's contract search wants it (a stock on SMART, an FX pair on IDEALPRO, a future with its
expiry) plus ``symbol``, the name the daemon trades it under (``data.symbol``).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BAR_SIZES", "ContractSpec", "IbSettings"]

# bar length in seconds -> IB's barSizeSetting for historical requests; real-time bars are 5 s and
# are aggregated to the configured length, so it must be a multiple of 5
BAR_SIZES: dict[int, str] = {
    5: "5 secs", 10: "10 secs", 15: "15 secs", 30: "30 secs", 60: "1 min", 120: "2 mins", 180: "3 mins",
    300: "5 mins", 600: "10 mins", 900: "15 mins", 1200: "20 mins", 1800: "30 mins", 3600: "1 hour",
    7200: "2 hours", 14400: "4 hours", 86400: "1 day",
}
_SEC_TYPES = ("STK", "CASH", "FUT")
_SHOW = {"STK": "TRADES", "FUT": "TRADES", "CASH": "MIDPOINT"}  # IB has no trades for FX


@dataclass(frozen=True, slots=True)
class ContractSpec:
    symbol: str  # our name for it (bars, orders, positions)
    sec_type: str  # STK | CASH | FUT
    ib_symbol: str  # IB's symbol: "SPY"; "EUR" for EUR.USD; "ES"
    currency: str = "USD"
    exchange: str = "SMART"  # SMART for stocks, IDEALPRO for FX, the exchange (CME) for futures
    primary_exchange: str = ""
    expiry: str = ""  # futures: YYYYMM or YYYYMMDD
    what_to_show: str = ""  # "" = TRADES, or MIDPOINT for FX

    def __post_init__(self) -> None:
        if self.sec_type not in _SEC_TYPES:
            raise ValueError(f"{self.symbol}: sec_type must be one of {_SEC_TYPES}, not {self.sec_type!r}")
        if self.sec_type == "FUT" and not self.expiry:
            raise ValueError(f"{self.symbol}: a future needs its expiry (YYYYMM or YYYYMMDD)")

    @property
    def show(self) -> str:
        return self.what_to_show or _SHOW[self.sec_type]


@dataclass(frozen=True, slots=True)
class IbSettings:
    contracts: tuple[ContractSpec, ...]
    host: str = "127.0.0.1"
    port: int = 7497  # TWS paper; live 7496; Gateway paper 4002, live 4001
    client_id: int = 1
    account: str = ""  # "" = the only managed account
    bar_seconds: int = 60
    use_rth: bool = False  # bars from regular trading hours only
    allow_read_only: bool = False  # a read-only API session may connect (no orders), else start-up is refused
    live: bool = False  # a live account may trade (confirmed by its id, see IbBroker); False = paper accounts only
    messages_per_second: float = 50.0  # IB's API limit: every request we send passes this bucket
    historical_per_10_minutes: int = 60  # IB's historical-data pacing
    historical_burst: int = 5  # fewer than 6 requests for one contract within 2 s
    connect_timeout_seconds: float = 10.0
    request_timeout_seconds: float = 15.0
    ack_timeout_seconds: float = 5.0  # a placed order unacknowledged this long is looked up by its orderRef
    backoff_floor_seconds: float = 1.0
    backoff_cap_seconds: float = 60.0
    max_bars_per_request: int = 2000
    realtime_bars: bool = True  # False: history only (`tradectl data fetch`), no real-time bar subscriptions
    seed: int | None = None  # backoff jitter RNG seed (tests)

    def __post_init__(self) -> None:
        if not self.contracts:
            raise ValueError("at least one contract is needed")
        if self.bar_seconds not in BAR_SIZES:
            raise ValueError(f"bar_seconds {self.bar_seconds} is not one of IB's bar sizes {sorted(BAR_SIZES)}")
        names = [c.symbol for c in self.contracts]
        if len(set(names)) != len(names):
            raise ValueError(f"contract symbols must be unique, got {names}")

    @property
    def bar_size(self) -> str:
        return BAR_SIZES[self.bar_seconds]

    def spec(self, symbol: str) -> ContractSpec:
        for spec in self.contracts:
            if spec.symbol == symbol:
                return spec
        raise KeyError(symbol)
