"""A per-process memo of recent single-quote reads, for the hot path of GET /stock/{code}.

A popular instrument is asked for by many clients at once; within QUOTE_CACHE_TTL_S (default
50 ms) a worker answers repeats from memory instead of a Redis round trip, which is most of the
route's cost after the framework's own (docs/api/QUOTES_AND_SUBSCRIPTIONS.md, "Performance").
A quote served from here is at most that much older than the one in Redis; `age_s` and `stale`
are still computed at answer time from the quote's own `received_at`, so they never lie.

What it keeps is a `StoredQuote`: the quote checked once and encoded once, so that a repeat
costs neither the check nor the encoding (api.quotes.service.QuoteContext.answer).

Nothing another worker needs lives here (docs/ARCHITECTURE.md, "What each process must never
do"): losing it costs one GET. It never caches an absence (a new subscription's first quote
shows at once), and it is bounded: when full it starts over, which is cheaper than tracking
recency on every hit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class StoredQuote:
    """A quote read from its key and checked by the bus codec (relayer.bus.decode_quote), with
    the parts of its answer that do not depend on the moment of the answer, encoded once."""

    quote: dict[str, Any]
    # The quote's JSON as orjson writes it, without its closing brace: the start of every answer
    # (an answer adds fields after the quote's own). None: the quote has a field of the same name
    # as one an answer adds, so its answer is built as a dict (QuoteContext.answer).
    head: bytes | None
    # The fields that change at most once a day (name, market, limits), encoded, with what they
    # were computed for: (the instrument as the master had it, the day's start, the bytes).
    day: tuple[object, datetime, bytes] | None = None


class QuoteCache:
    def __init__(self, ttl_s: float, max_entries: int = 4096) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, StoredQuote, float | None]] = {}

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def get(self, code: str, now: float) -> tuple[StoredQuote, float | None] | None:
        """The quote and its `received_at` (epoch seconds) if read less than ttl_s ago."""
        entry = self._entries.get(code)
        if entry is None or entry[0] <= now:
            return None
        return entry[1], entry[2]

    def put(self, code: str, quote: StoredQuote, received: float | None, now: float) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[code] = (now + self.ttl_s, quote, received)
