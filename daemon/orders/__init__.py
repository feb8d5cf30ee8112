"""Order management and crash recovery: one room, because recovery is the order journal read back.

* ``manager`` — ``OrderManager``: client order ids, journal before send, the
  state machine, fills booked once, unknown outcomes looked up (never re-sent).
* ``recovery`` — start-up and supervision: books from the store, open orders
  settled with the broker, the start-up reconciliation, acknowledgement timeouts.
"""

from daemon.orders.manager import (
    NEVER_SENT,
    AnomalyHandler,
    FillHandler,
    FillSource,
    ManagedOrder,
    OrderManager,
    RecoveryReport,
    check_transition,
)
from daemon.orders.recovery import (
    CASH_KEY,
    EPOCH_KEY,
    StartupOutcome,
    make_settle,
    open_books,
    start_safely,
    supervise,
)

__all__ = [
    "CASH_KEY",
    "EPOCH_KEY",
    "NEVER_SENT",
    "AnomalyHandler",
    "FillHandler",
    "FillSource",
    "ManagedOrder",
    "OrderManager",
    "RecoveryReport",
    "StartupOutcome",
    "check_transition",
    "make_settle",
    "open_books",
    "start_safely",
    "supervise",
]
