"""Running one call from many threads at the same moment, for the tests of what must hold when
requests race (docs/TRADING.md: no double-spend, one execution per idempotency key)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


def concurrently(count: int, call: Callable[[int], T]) -> list[T]:
    """`call(0)` ... `call(count - 1)`, each in its own thread, released together by a barrier;
    their results in index order."""
    start = threading.Barrier(count)

    def run(index: int) -> T:
        start.wait()
        return call(index)

    with ThreadPoolExecutor(max_workers=count) as pool:
        return list(pool.map(run, range(count)))
