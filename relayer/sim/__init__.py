"""The local exchange simulator: a stand-in for the Toss Securities realtime feed.

`SimServer` serves STOMP 1.2 over WebSocket exactly as the upstream does on the wire, with fault
switches for tests; `Market` makes the ticks (each instrument's KRX grid and daily limits, Toss
tick JSON) for the instruments of the KRX master files (`relayer.sim.instruments`). Run it with
`python -m relayer.sim`. Never part of a production deployment.
"""

from relayer.sim.market import Market
from relayer.sim.server import SimServer

__all__ = ["Market", "SimServer"]
