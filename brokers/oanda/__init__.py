"""The OANDA venue (oandapyV20 0.7.2): ``OandaBroker`` and the settings it is built from.

* ``settings`` — ``OandaSettings`` (hosts, account, instruments, price component, limits; the token never in ``repr``).
* ``rest`` — v20 REST through oandapyV20, one client per worker thread, inside the rate limit.
* ``bars`` — close-stamped bars from pricing-stream ticks.
* ``convert`` — v20 JSON → Bar / OrderUpdate / Fill / Position; OANDA's reject reasons → our reason codes.
* ``broker`` — the ``Broker`` protocol over all of it (the pricing stream in its own thread, transactions polled).
"""

from brokers.oanda.broker import OandaBroker
from brokers.oanda.rest import OandaError
from brokers.oanda.settings import GRANULARITIES, PRICE_COMPONENTS, OandaSettings

__all__ = ["GRANULARITIES", "PRICE_COMPONENTS", "OandaBroker", "OandaError", "OandaSettings"]
