"""Every exception tradectl raises, in one module.

It lives in ``brokers`` because that package is the leaf every other package
may import; the names are not broker-specific.
"""

from __future__ import annotations


class TradectlError(Exception):
    """Base class: anything tradectl raises on purpose."""


class ConfigError(TradectlError):
    """A configuration file or value is invalid. The message names file and field."""


class DataError(TradectlError):
    """A data file cannot be read or mapped to bars."""


class BrokerError(TradectlError):
    """A broker refused or failed a request."""


class OrderRejected(BrokerError):
    """The broker answered a submit with a definite rejection."""


class UnknownOrderOutcome(BrokerError):
    """A submit's outcome is unknown (timeout, dropped connection).

    The order manager resolves it by asking the broker for the order by its
    client id; it never re-sends blindly.
    """


class OrderStateError(TradectlError):
    """An order update asks for a transition the order state machine forbids."""


class RiskStateError(TradectlError):
    """A trading-state transition the governor forbids."""


class ModelError(TradectlError):
    """A model file is corrupt, tampered with, or does not match the configuration."""


class StoreError(TradectlError):
    """The SQLite store is unusable (schema newer than this code, corrupt file)."""
