"""The Alpaca venue (alpaca-py 0.44): ``AlpacaBroker`` and the settings it is built from.

* ``settings`` — ``AlpacaSettings`` (endpoints, feed, symbols, limits; secrets never in ``repr``).
* ``rest`` — REST through alpaca-py's clients, in worker threads, inside the rate limit.
* ``streams`` — the market-data (msgpack) and trade-updates (JSON) websocket sessions.
* ``convert`` — wire messages → Bar / OrderUpdate / Fill / Position / AccountSnapshot.
* ``broker`` — the ``Broker`` protocol over all of it.
"""

from brokers.alpaca.broker import AlpacaBroker
from brokers.alpaca.rest import AlpacaError
from brokers.alpaca.settings import TIMEFRAMES, AlpacaSettings

__all__ = ["TIMEFRAMES", "AlpacaBroker", "AlpacaError", "AlpacaSettings"]
