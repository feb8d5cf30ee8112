"""The SQLite store: the daemon's memory and its audit trail, and the only code that speaks SQL.

* ``rows`` — the typed rows callers hand in and get back.
* ``repository`` — ``Store``: methods named for what callers ask.
* ``writer`` — when writes reach the disk: ``LiveWriter`` (commit before send)
  or ``BatchWriter`` (backtests), chosen by ``Store.open``.
* ``tables`` — the statements the store writes and each row's parameters.
* ``schema`` — every table's DDL as migrations, and the connection settings.
"""

from daemon.store.repository import Store, Synchronous
from daemon.store.rows import (
    BarRejection,
    BookedFill,
    ClosedTradeLike,
    DecisionRow,
    EquitySnapshot,
    JournaledOrder,
    ModelEntry,
    ModelEvaluation,
    OutboxAlert,
    Promotion,
    ReconciliationRecord,
    RiskEvent,
    StoredTrade,
)
from daemon.store.schema import LATEST_VERSION

__all__ = [
    "LATEST_VERSION",
    "BarRejection",
    "BookedFill",
    "ClosedTradeLike",
    "DecisionRow",
    "EquitySnapshot",
    "JournaledOrder",
    "ModelEntry",
    "ModelEvaluation",
    "OutboxAlert",
    "Promotion",
    "ReconciliationRecord",
    "RiskEvent",
    "Store",
    "StoredTrade",
    "Synchronous",
]
