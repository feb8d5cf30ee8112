"""What every live adapter shares (Alpaca now; IB and OANDA next), one job per module.

* ``supervisor`` — one connection's states (connecting, connected,
  reconnecting, stopped), backoff with full jitter, and the hook that
  backfills and reconciles before a reconnected stream counts as connected.
* ``ratelimit`` — the venue's REST budget: a token bucket and the pause after a 429.
* ``offload`` — blocking client calls in a bounded thread pool, through the limiter.
* ``submit`` — an order is sent once; an ambiguous failure is resolved by
  looking the order up by client id, or reported unknown.
* ``updates`` — repeated executions delivered once; unusable messages quarantined, never dropped silently.
"""

from brokers.live.offload import Offloader, RateLimited
from brokers.live.ratelimit import RateLimiter, reset_delay
from brokers.live.submit import SubmitFailure, submit_once
from brokers.live.supervisor import Backoff, ConnectionState, ConnectionSupervisor, Transition, check_transition
from brokers.live.updates import ForwardOnly, Quarantine, SeenIds

__all__ = [
    "Backoff",
    "ConnectionState",
    "ConnectionSupervisor",
    "ForwardOnly",
    "Offloader",
    "Quarantine",
    "RateLimited",
    "RateLimiter",
    "SeenIds",
    "SubmitFailure",
    "Transition",
    "check_transition",
    "reset_delay",
    "submit_once",
]
