"""The simulated venue: a deterministic broker over replayed bars, its state file and the replay feed.

Only the daemon's broker factory (``daemon.venues``) and tests import this
package; everything else reaches a venue through ``brokers.base.Broker``.
"""

from brokers.sim.broker import SimBroker
from brokers.sim.replay import ReplayFeed
from brokers.sim.state import STATE_VERSION, SimOrder, SimState

__all__ = ["STATE_VERSION", "ReplayFeed", "SimBroker", "SimOrder", "SimState"]
