"""Reading what the relayer wrote: latest quotes and the relayer's health.

Quotes are read from `NS:quote:{code}` (one GET, or one MGET for several) and passed through as
the relayer's JSON with `age_s` and `stale` added: decoding with orjson and encoding again is a
few microseconds, where validating through pydantic would cost more than the Redis round trip
(docs/ARCHITECTURE.md, "Targets": the single-quote read must run at half a bare route's
rate). For the same reason a single-quote read is memoised per worker for QUOTE_CACHE_TTL_S
(api.quotes.cache).

Read-only: this module never writes a key. It never scans the keyspace either: "all quotes" are
the quotes of the topics in `NS:subs:active`.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from typing import Any

import orjson

from api.errors import NotFound, Unprocessable
from api.instruments import parse_code
from api.quotes.schemas import DaemonHealthOut
from api.resources import Resources
from relayer.bus import BusNames, MalformedQuote, decode_health, decode_quote

logger = logging.getLogger(__name__)

# Codes per /stocks/multiple request: one MGET stays small, and the answer stays under ~50 KB.
MAX_CODES_PER_REQUEST = 100

Quotes = dict[str, dict[str, Any] | None]


def epoch_s(moment: object) -> float | None:
    """A bus time (ISO 8601 UTC, `...Z`) as epoch seconds; None if absent or unreadable."""
    if not isinstance(moment, str) or not moment:
        return None
    try:
        return datetime.fromisoformat(moment).timestamp()
    except ValueError:
        return None


def seconds_since(moment: object, now: float) -> float | None:
    """Seconds from a bus time to `now` (epoch seconds); None if unreadable. Never negative: a
    relayer clock slightly ahead of ours means "just now", not the future."""
    then = epoch_s(moment)
    return None if then is None else max(now - then, 0.0)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def checked_code(text: str) -> str:
    """The bus form of an instrument code (api.instruments.parse_code); 422 `invalid_code`."""
    try:
        return parse_code(text)
    except ValueError as exc:
        raise Unprocessable(str(exc), code="invalid_code") from exc


# Key -> the malformed value last logged for it (bounded; per process, for the log alone).
_logged_malformed: dict[str, bytes | str] = {}


def note_malformed_quote(key: str, raw: bytes | str, error: MalformedQuote) -> None:
    """Log a malformed quote at WARNING once per key and value: garbage at a popular key would
    otherwise log on every read, thousands of times a second."""
    if _logged_malformed.get(key) == raw:
        return
    if len(_logged_malformed) >= 1024:
        _logged_malformed.clear()
    _logged_malformed[key] = raw
    logger.warning("ignoring a malformed quote in %s (%s): %.80r; it counts as no quote until "
                   "the relayer writes the next tick", key, error, raw)


def _decode(raw: bytes | str, key: str) -> dict[str, Any] | None:
    """The stored quote, checked by the bus codec; None (logged once) if it is malformed."""
    try:
        return decode_quote(raw)
    except MalformedQuote as exc:
        note_malformed_quote(key, raw, exc)
        return None


def _aged(quote: dict[str, Any], received: float | None, now: float,
          max_age_s: float) -> dict[str, Any]:
    """The quote with `age_s` and `stale` as of `now` (a new dict: `quote` may be cached)."""
    age = None if received is None else max(now - received, 0.0)
    return {**quote, "age_s": None if age is None else round(age, 3),
            "stale": age is None or age > max_age_s}


async def quote_json(resources: Resources, code_text: str) -> bytes:
    """The latest quote of one instrument as JSON bytes (QuoteOut)."""
    code = checked_code(code_text)
    cache = resources.quote_cache
    hit = cache.get(code, time.monotonic()) if cache.enabled else None
    if hit is None:
        key = resources.names.quote(code)
        raw = await resources.redis.get(key)
        quote = None if raw is None else _decode(raw, key)
        if quote is None:
            raise NotFound(
                f"no quote for {code}: it has never been received, or it expired (is the "
                "instrument subscribed? see /api/v1/admin/websocket/subscriptions)",
                code="quote_not_found",
            )
        received = epoch_s(quote.get("received_at"))
        if cache.enabled:
            cache.put(code, quote, received, time.monotonic())
    else:
        quote, received = hit
    return orjson.dumps(_aged(quote, received, time.time(), resources.settings.quote_max_age_s))


def parse_codes(texts: list[str]) -> list[str]:
    """Requested codes in bus form, in request order, without repeats. `A005930,A000660` in
    one parameter counts as two codes."""
    codes = dict.fromkeys(
        checked_code(part)
        for text in texts for part in (text.split(",") if "," in text else [text])
    )
    if len(codes) > MAX_CODES_PER_REQUEST:
        raise Unprocessable(
            f"{len(codes)} codes requested; at most {MAX_CODES_PER_REQUEST} per request",
            code="too_many_codes",
        )
    return list(codes)


async def latest_quotes(resources: Resources, codes: list[str]) -> Quotes:
    """The latest quote of each code (bus form), with `age_s` and `stale`, by code in the given
    order; None for a code without a readable quote. One MGET, whatever the number of codes."""
    names: BusNames = resources.names
    keys = [names.quote(code) for code in codes]
    raws = await resources.redis.mget(keys) if keys else []
    now, max_age_s = time.time(), resources.settings.quote_max_age_s
    quotes: Quotes = {}
    for code, key, raw in zip(codes, keys, raws, strict=True):
        quote = None if raw is None else _decode(raw, key)
        quotes[code] = None if quote is None else _aged(
            quote, epoch_s(quote.get("received_at")), now, max_age_s)
    return quotes


async def _read_quotes(resources: Resources, codes: list[str]) -> bytes:
    quotes = await latest_quotes(resources, codes)
    missing = [code for code, quote in quotes.items() if quote is None]
    return orjson.dumps({"quotes": quotes, "missing": missing})


async def quotes_json(resources: Resources, code_texts: list[str]) -> bytes:
    """The latest quotes of the requested instruments as JSON bytes (QuotesOut)."""
    return await _read_quotes(resources, parse_codes(code_texts))


async def active_quotes_json(resources: Resources) -> bytes:
    """The latest quote of every instrument subscribed upstream now (QuotesOut), by code."""
    topics = await resources.redis.hkeys(resources.names.active_subscriptions)
    codes = {resources.topics.code(_text(topic)) for topic in topics}
    return await _read_quotes(resources, sorted(code for code in codes if code is not None))


async def relayer_health(resources: Resources) -> DaemonHealthOut:
    """The relayer's health hash, decoded and judged (`alive`); never an error when absent."""
    raw = await resources.redis.hgetall(resources.names.relayer_health)
    if not raw:
        return DaemonHealthOut(alive=False)
    try:
        fields = decode_health({_text(name): _text(value) for name, value in raw.items()})
    except ValueError as exc:
        logger.warning("unreadable relayer health hash: %s", exc)
        return DaemonHealthOut(alive=False)
    fields = {name: (None if value == "" else value) for name, value in fields.items()}
    now = time.time()
    updated_age = seconds_since(fields["updated_at"], now)
    last_tick_age = seconds_since(fields["last_tick_at"], now)
    last_write_age = seconds_since(fields["last_write_at"], now)
    alive = updated_age is not None and updated_age <= resources.settings.relayer_health_max_age_s
    return DaemonHealthOut(
        **fields,
        alive=alive,
        updated_age_s=None if updated_age is None else round(updated_age, 3),
        last_tick_age_s=None if last_tick_age is None else round(last_tick_age, 3),
        last_write_age_s=None if last_write_age is None else round(last_write_age, 3),
    )
