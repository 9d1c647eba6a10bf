"""What an order is checked and priced against, read from Redis before its transaction: the
instrument's latest quote and the tick stream's last entry id (where a resting order starts to
listen). One pipelined round trip; no SQL transaction is open while it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass

from api.quotes.service import epoch_s, note_malformed_quote
from api.resources import Resources
from relayer.bus import MalformedQuote, Quote

EMPTY_STREAM_ID = "0-0"


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    code: str
    quote: Quote | None
    quote_age_s: float | None  # None: no quote, or no readable receive time
    stream_last_id: str


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (`ms-seq`) as a tuple that orders like the stream does."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _quote(raw: bytes | str | None, key: str) -> Quote | None:
    """The stored quote; None when absent or malformed (an order then has no quote)."""
    if raw is None:
        return None
    try:
        return Quote.from_json(raw)
    except MalformedQuote as exc:
        note_malformed_quote(key, raw, exc)
        return None


async def market_snapshot(resources: Resources, code: str) -> MarketSnapshot:
    key = resources.names.quote(code)
    async with resources.redis.pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.xrevrange(resources.names.tick_stream, count=1)
        raw_quote, last_entries = await pipe.execute()
    quote = _quote(raw_quote, key)
    received = None if quote is None else epoch_s(quote.received_at)
    age = None if received is None else max(time.time() - received, 0.0)
    last_id = _text(last_entries[0][0]) if last_entries else EMPTY_STREAM_ID
    return MarketSnapshot(code, quote, age, last_id)
