"""Reconnect policy as data: capped exponential delays with jitter.

Kept apart from the socket code so the policy can be read and tested on its own (the way
websockets does it). "Equal jitter" (half fixed, half random) rather than full jitter: full
jitter can draw near-zero delays again and again, which is the reconnect storm we must not
cause against a server that accepts and closes at once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial_s: float = 1.0
    max_s: float = 60.0
    factor: float = 2.0
    rng: random.Random = field(default_factory=random.Random)
    _attempt: int = 0

    def next_delay(self) -> float:
        """The delay before the next attempt; each call without a reset() grows it."""
        ceiling = min(self.max_s, self.initial_s * self.factor**self._attempt)
        self._attempt += 1
        return ceiling / 2 + self.rng.uniform(0, ceiling / 2)

    def reset(self) -> None:
        """Call only after a connection proved healthy (lived long enough), not on connect."""
        self._attempt = 0

    @property
    def attempt(self) -> int:
        return self._attempt
