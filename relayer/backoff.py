"""The one backoff policy: capped exponential delays with a chosen jitter.

Every "wait, then try again" in the platform draws its delays here: the relayer's reconnects
and Redis retries (relayer.daemon, relayer.publisher), the database's retry of a transaction
that lost a lock conflict (api.db), an API worker's startup work while the database is down
(api.startup), and the restarts of a crashed child (scripts/supervise.py).
Kept apart from the code that waits, so the numbers can be read and tested on their own (the way
websockets does it).

What differs between them is only the jitter, chosen for what is on the other side:
- `EQUAL` (half fixed, half random) for reconnects to a server: full jitter can draw near-zero
  delays again and again, which is the reconnect storm we must not cause against a server that
  accepts and closes at once;
- `FULL` (anywhere up to the ceiling) for transactions that collided on a lock: the point is to
  spread the colliding ones apart, and the delays are milliseconds;
- `NONE` for the supervisor's restarts, which an operator reads in the log ("restarting in 4s"),
  and for the API's startup retries.

Why not tenacity (or `backoff`): none of these loops is "call f until it succeeds". The relayer
keeps a connection for hours and backs off only between connections (reset once one proved
healthy, a separate long pause after an authentication refusal); the supervisor polls many
children from one loop without blocking on any; the database retry is a bounded loop of a few
lines. A retry library would replace only those few lines, and its own wait strategies would
make a second policy next to this one.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum


class Jitter(Enum):
    NONE = "none"  # exactly the ceiling
    EQUAL = "equal"  # between half the ceiling and the ceiling
    FULL = "full"  # between 0 and the ceiling


@dataclass(slots=True)
class Backoff:
    """The delays of one sequence of attempts: each `next_delay()` without a `reset()` grows."""

    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    jitter: Jitter = Jitter.EQUAL
    _attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt."""
        ceiling = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        if self.jitter is Jitter.NONE:
            return ceiling
        if self.jitter is Jitter.FULL:
            return self.rng.uniform(0, ceiling)
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Start again from `initial_s`. For a connection: only after it proved healthy (lived
        long enough), not on connect."""
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt
