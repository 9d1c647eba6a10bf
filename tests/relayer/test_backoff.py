"""The reconnect policy, as numbers."""

from __future__ import annotations

import random

from relayer.backoff import Backoff


def handshakes_in(seconds: float, backoff: Backoff) -> int:
    """Handshakes against a server that closes at once: one now, then one after each delay."""
    elapsed, count = 0.0, 1
    while True:
        elapsed += backoff.next_delay()
        if elapsed > seconds:
            return count
        count += 1


def test_delays_grow_to_the_cap_with_jitter_within_half() -> None:
    backoff = Backoff(initial_s=1, max_s=60, factor=2, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    ceilings = [1, 2, 4, 8, 16, 32, 60, 60, 60, 60]
    for delay, ceiling in zip(delays, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_no_reconnect_storm_with_the_default_policy() -> None:
    for seed in range(200):
        backoff = Backoff(initial_s=1, max_s=60, factor=2, rng=random.Random(seed))
        assert handshakes_in(60, backoff) <= 8
        # Then one every 30 to 60 s: over ten more minutes, 10 to 21.
        assert 10 <= handshakes_in(600, backoff) <= 21


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(initial_s=1, max_s=60, factor=2, rng=random.Random(3))
    for _ in range(5):
        backoff.next_delay()
    backoff.reset()
    assert backoff.attempt == 0
    assert 0.5 <= backoff.next_delay() <= 1
