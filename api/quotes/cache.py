"""A per-process memo of recent single-quote reads, for the hot path of GET /stock/{code}.

A popular instrument is asked for by many clients at once; within QUOTE_CACHE_TTL_S (default
50 ms) a worker answers repeats from memory instead of a Redis round trip, which is most of the
route's cost after the framework's own (docs/api/QUOTES_AND_SUBSCRIPTIONS.md, "Performance").
A quote served from here is at most that much older than the one in Redis; `age_s` and `stale`
are still computed at answer time from the quote's own `received_at`, so they never lie.

Nothing another worker needs lives here (docs/ARCHITECTURE.md, "What each process must never
do"): losing it costs one GET. It never caches an absence (a new subscription's first quote
shows at once), and it is bounded: when full it starts over, which is cheaper than tracking
recency on every hit.
"""

from __future__ import annotations

from typing import Any


class QuoteCache:
    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, dict[str, Any], float | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, code: str, now: float) -> tuple[dict[str, Any], float | None] | None:
        """The quote and its `received_at` (epoch seconds) if read less than ttl_s ago."""
        entry = self._entries.get(code)
        if entry is None or entry[0] <= now:
            return None
        return entry[1], entry[2]

    def put(self, code: str, quote: dict[str, Any], received: float | None, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[code] = (now + self.ttl_s, quote, received)
