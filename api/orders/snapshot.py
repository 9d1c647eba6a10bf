"""What an order is checked and priced against, read before its transaction: the instrument
(from the in-process catalog), its latest quote and the tick stream's last entry id (where a
resting order starts to listen), the last two in one pipelined round trip to Redis; no SQL
transaction is open while it runs."""

from __future__ import annotations

import time
from dataclasses import dataclass

from api.instruments.catalog import InstrumentInfo
from api.quotes.service import epoch_s, note_malformed_quote
from api.resources import Resources
from relayer.bus import EMPTY_STREAM_ID, MalformedQuote, Quote, as_text
from relayer.krx import STOCK, PriceRules


@dataclass(frozen=True, slots=True)
class MarketSnapshot:
    code: str
    quote: Quote | None
    quote_age_s: float | None  # None: no quote, or no readable receive time
    stream_last_id: str
    instrument: InstrumentInfo | None  # None: not in the master

    @property
    def price_rules(self) -> PriceRules:
        """The instrument's grid and limits (a stock's for a code the master lacks, which
        `accept` refuses anyway; an order placed before the master existed is re-priced with
        them)."""
        return STOCK if self.instrument is None else self.instrument.price_rules


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
    instrument = await resources.instruments.get(code)
    key = resources.names.quote(code)
    async with resources.redis.pipeline(transaction=False) as pipe:
        pipe.get(key)
        pipe.xrevrange(resources.names.tick_stream, count=1)
        raw_quote, last_entries = await pipe.execute()
    quote = _quote(raw_quote, key)
    received = None if quote is None else epoch_s(quote.received_at)
    age = None if received is None else max(time.time() - received, 0.0)
    last_id = as_text(last_entries[0][0]) if last_entries else EMPTY_STREAM_ID
    return MarketSnapshot(code, quote, age, last_id, instrument)
