"""Quotes and ticks as the relayer writes them (relayer.bus codecs, relayer.publisher's own
script), for API tests that read them back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import redis

from relayer.bus import STREAM_QUOTE_FIELD, BusNames, Quote, format_utc
from relayer.publisher import WRITE_TICKS

NAMES = BusNames()
STREAM_MAXLEN = 100_000
QUOTE_TTL_S = 3600


def make_quote(code: str, *, age_s: float = 0.0, price: int = 71200, base: int = 70500,
               volume: int = 10, seq: int = 123) -> Quote:
    """A quote of `code` received `age_s` seconds ago."""
    received = datetime.now(UTC) - timedelta(seconds=age_s)
    return Quote(
        code=code, price=price, base=base, change=price - base, change_rate="0.99",
        change_type="UP", volume=volume, cum_volume=1234567, cum_amount=87900000000,
        trade_type="BUY", trading_strength="112.30", open=70800, high=71500, low=70600,
        session="REGULAR", exchange="KRX", currency="KRW", ts=format_utc(received),
        received_at=format_utc(received, millis=True), seq=seq,
    )


def put(store: redis.Redis, quote: Quote) -> None:
    """Store `quote` as the latest of its code, where the relayer would."""
    store.set(NAMES.quote(quote.code), quote.to_json())


def publish_ticks(store: redis.Redis, *quotes: Quote) -> list[str]:
    """Write trade prints exactly as the relayer does (its Lua script: latest quote, channel,
    stream entry); returns the stream entry ids of these prints (not of a relayer's that runs
    beside: seen in a platform test under load)."""
    before: Any = store.xrevrange(NAMES.tick_stream, count=1)
    keys = [NAMES.tick_stream, *(NAMES.quote(q.code) for q in quotes)]
    written = [q.to_json() for q in quotes]
    args: list[Any] = [str(QUOTE_TTL_S), str(STREAM_MAXLEN), STREAM_QUOTE_FIELD,
            str(len(NAMES.quote(""))), NAMES.tick_channel(""), *written]
    store.eval(WRITE_TICKS, len(keys), *keys, *args)
    start = f"({before[0][0].decode()}" if before else "-"
    entries: Any = store.xrange(NAMES.tick_stream, min=start)
    ours = set(written)
    return [entry_id.decode() for entry_id, fields in entries
            if fields[STREAM_QUOTE_FIELD.encode()] in ours]
