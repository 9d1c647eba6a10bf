"""What an order is checked and priced against, read from Redis before its transaction: the
instrument's latest quote and the tick stream's last entry id (where a resting order starts to
listen). One pipelined round trip; no SQL transaction is open while it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson

from api.quotes.service import epoch_s
from api.resources import Resources
from relayer.bus import Quote

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


def _quote(raw: bytes | str | None) -> Quote | None:
    if raw is None:
        return None
    try:
        quote = Quote.from_json(raw)
    except (orjson.JSONDecodeError, TypeError):
        return None
    if not isinstance(quote.price, int) or not isinstance(quote.base, int) or quote.base <= 0:
        return None
    return quote


async def market_snapshot(resources: Resources, code: str) -> MarketSnapshot:
    async with resources.redis.pipeline(transaction=False) as pipe:
        pipe.get(resources.names.quote(code))
        pipe.xrevrange(resources.names.tick_stream, count=1)
        raw_quote, last_entries = await pipe.execute()
    quote = _quote(raw_quote)
    received = None if quote is None else epoch_s(quote.received_at)
    age = None if received is None else max(time.time() - received, 0.0)
    last_id = _text(last_entries[0][0]) if last_entries else EMPTY_STREAM_ID
    return MarketSnapshot(code, quote, age, last_id)
