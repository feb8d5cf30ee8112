"""The Interactive Brokers venue (ib_async 2.1, the maintained continuation of ib_insync): ``IbBroker``.

* ``settings`` — ``IbSettings`` and ``ContractSpec`` (host, port, client id, contracts, bar length, limits).
* ``bars`` — 5-second real-time bars aggregated to the bar length, stamped at the close; history bars.
* ``convert`` — ib_async's floats, status words and error codes → our Decimal, OrderStatus and reasons.
* ``broker`` — the ``Broker`` protocol over one ``IB`` object in the daemon's loop.
"""

from brokers.ib.broker import IbBroker
from brokers.ib.settings import BAR_SIZES, ContractSpec, IbSettings

__all__ = ["BAR_SIZES", "ContractSpec", "IbBroker", "IbSettings"]
