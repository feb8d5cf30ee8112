"""What the Alpaca adapter needs to know, as one frozen value (``brokers`` never imports the daemon's config).

``daemon/venues.py`` builds it from ``broker.alpaca`` and the two secrets
from the environment. ``repr`` never shows the secrets.

The asset class follows from the symbols, by Alpaca's own spelling: a crypto
pair is ``BASE/QUOTE`` (``BTC/USD``; the crypto data API refuses anything
else), a stock has no slash. One adapter streams one class (the two have
different market-data streams and historical endpoints), so a mixed list is
refused. Crypto trades around the clock on the ``us`` location of Alpaca's
crypto feed (alpaca-py's ``CryptoFeed.US``), with time in force ``gtc`` or
``ioc`` only (alpaca-py's ``TimeInForce``: "Crypto trading: gtc, ioc").
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from alpaca.common.enums import BaseURL

__all__ = ["CRYPTO_LOCATION", "CRYPTO_TIME_IN_FORCE", "TIMEFRAMES", "AlpacaSettings", "asset_class_of"]

# timeframe name (Alpaca's spelling) → seconds; the stream delivers minute bars only
TIMEFRAMES: dict[str, int] = {"1Min": 60}
CRYPTO_LOCATION = "us"  # /v1beta3/crypto/{loc}: alpaca-py 0.44 knows this one (CryptoFeed.US)
CRYPTO_TIME_IN_FORCE = frozenset({"gtc", "ioc"})
_CRYPTO_PAIR = re.compile(r"^[A-Z0-9]+/[A-Z0-9]+$")


def asset_class_of(symbols: tuple[str, ...]) -> str:
    """``crypto`` when every symbol is a ``BASE/QUOTE`` pair, ``us_equity`` when none has a slash; else ValueError."""
    pairs = [s for s in symbols if "/" in s]
    if not pairs:
        return "us_equity"
    if len(pairs) != len(symbols):
        stocks = sorted(set(symbols) - set(pairs))
        raise ValueError(f"symbols mix crypto pairs {sorted(pairs)} and stocks {stocks}: one asset class per "
                         "adapter (crypto pairs are spelled BASE/QUOTE, e.g. BTC/USD)")
    bad = [s for s in pairs if not _CRYPTO_PAIR.match(s)]
    if bad:
        raise ValueError(f"crypto symbols {bad} are not BASE/QUOTE in capitals (e.g. BTC/USD)")
    return "crypto"


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
        asset_class_of(self.symbols)

    @property
    def asset_class(self) -> str:
        """``us_equity`` or ``crypto`` (from the symbols' spelling)."""
        return asset_class_of(self.symbols)

    @property
    def is_crypto(self) -> bool:
        return self.asset_class == "crypto"

    @property
    def data_feed(self) -> str:
        """The market-data feed bars come from: the stock feed (iex/sip) or the crypto location."""
        return f"crypto/{CRYPTO_LOCATION}" if self.is_crypto else self.feed

    def canonical_symbol(self, symbol: str) -> str:
        """A venue symbol in our spelling: Alpaca reports crypto *positions* without the slash (``BTCUSD``)."""
        if "/" in symbol or not self.is_crypto:
            return symbol
        for ours in self.symbols:
            if ours.replace("/", "") == symbol:
                return ours
        return symbol

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
        if self.data_stream_url:
            return self.data_stream_url
        if self.is_crypto:
            return f"{BaseURL.MARKET_DATA_STREAM.value}/v1beta3/crypto/{CRYPTO_LOCATION}"
        return f"{BaseURL.MARKET_DATA_STREAM.value}/v2/{self.feed}"

    @property
    def bars_path(self) -> str:
        """The historical bars endpoint under the data client's API version (v2 stocks, v1beta3 crypto)."""
        return f"/crypto/{CRYPTO_LOCATION}/bars" if self.is_crypto else "/stocks/bars"

    @property
    def updates_stream(self) -> str:
        if self.trading_stream_url:
            return self.trading_stream_url
        return (BaseURL.TRADING_STREAM_PAPER if self.paper else BaseURL.TRADING_STREAM_LIVE).value
