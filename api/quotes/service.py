"""Reading what the relayer wrote: latest quotes and the relayer's health.

Quotes are read from `NS:quote:{code}` (one GET, or one MGET for several) and passed through as
the relayer's JSON with the instrument, the day's limits, `age_s`, the session and `stale` added:
decoding with orjson and encoding again is a few microseconds, where validating through pydantic
would cost more than the Redis round trip (docs/ARCHITECTURE.md, "Targets": the single-quote
read runs at a set share of a bare route's rate). For the same reason the single-quote read,
the hottest route, goes further (docs/BENCHMARKS.md, "API"): it is memoised per worker for
QUOTE_CACHE_TTL_S (api.quotes.cache), the memo keeps the quote checked and encoded, and an
answer is spliced from those bytes (`QuoteContext.answer`); the calendar is asked once per
session span, not once per read (`SessionSpan`).

A quote's `stale` is judged against the market calendar (`Resources.calendar`): while nothing
prints (closed, an auction collecting orders), the quote of the last print is what there is, not
a failure; `market_session` says which session is in force (`market_moment`).

Read-only: this module never writes a key. It never scans the keyspace either: "all quotes" are
the quotes of the topics in `NS:subs:active`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from api.errors import NotFound, Unprocessable
from api.instruments.catalog import CatalogSnapshot, InstrumentInfo
from api.instruments.codes import checked_code, unique_codes
from api.market.rules import PriceBand, day_base, day_start
from api.quotes.cache import StoredQuote
from api.quotes.schemas import DaemonHealthOut
from api.resources import Resources
from relayer.bus import BusNames, MalformedQuote, RelayerHealth, as_text, decode_quote
from relayer.krx import STOCK
from relayer.market_calendar import MarketCalendar, Session

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


@dataclass(frozen=True, slots=True)
class MarketMoment:
    """The market at the moment of an answer, for judging quotes: the session in force, and the
    span of the last printing (epoch seconds) a fresh quote must reach into."""

    now: float
    session: Session
    printing_since: float  # prints were made from here: the open (-inf: no opening auction)
    printed_until: float  # to here: `now` while trading continuously, else the last print

    def stale(self, received: float | None, max_age_s: float) -> bool:
        """The quote missed prints: it is more than `max_age_s` older than the last moment the
        market printed (or is of unknown age). While the market prints that is its age; while it
        is closed or an auction collects orders, its age at the last print; in the first
        `max_age_s` after an opening auction, none (the auction's print is on its way)."""
        if received is None:
            return True
        return self.printed_until - max(received, self.printing_since) > max_age_s


@dataclass(frozen=True, slots=True)
class SessionSpan:
    """What the calendar answers for every moment from `starts` to `ends` (epoch seconds, `ends`
    not included): a calendar's session, its trading day and its last close change only at the
    boundaries of its days (opening auction, open, closing auction, close), so a process asks it
    once per span (`quote_context`) rather than on every quote read."""

    calendar: MarketCalendar
    starts: float
    ends: float
    session: Session
    printing_since: float
    printed_until: float | None  # None: `now`, while trading continuously
    day_start: datetime  # api.market.rules.day_start

    def moment(self, now: float) -> MarketMoment:
        until = now if self.printed_until is None else self.printed_until
        return MarketMoment(now, self.session, self.printing_since, until)


def session_span(calendar: MarketCalendar, now: datetime) -> SessionSpan:
    """The span of the calendar's answers around `now`, and those answers."""
    day = calendar.day_of(now)  # the day whose hours contain `now`, else the next one
    session = calendar.session_at(now)
    bounds = (day.auction_start, day.open, day.closing_auction_start, day.close)
    # Before the day's opening auction: closed since the previous close.
    starts = max((bound for bound in bounds if bound <= now),
                 default=calendar.previous_close(now))
    ends = min(bound for bound in bounds if bound > now)
    since, until = -math.inf, None
    if session is Session.CONTINUOUS:
        # A day with an opening auction starts with its print, a moment after the open;
        # `always_open` has none: the previous day's quotes age on across its boundary.
        if day.auction_start < day.open:
            since = day.open.timestamp()
    elif session is Session.CLOSING_AUCTION:
        until = day.closing_auction_start.timestamp()  # continuous trading ended there
    else:  # closed, or the opening auction: the previous day's closing print was the last
        until = calendar.previous_close(now).timestamp()
    return SessionSpan(calendar, starts.timestamp(), ends.timestamp(), session, since, until,
                       day_start(calendar, now))


def market_moment(calendar: MarketCalendar, now: datetime) -> MarketMoment:
    """The calendar's session at `now` and the last span it printed in."""
    return session_span(calendar, now).moment(now.timestamp())


# The fields an answer adds to the stored quote, after its own.
ANSWER_FIELDS = frozenset({"name", "market", "lower_limit", "upper_limit", "age_s",
                           "market_session", "stale"})


def _day_fields(quote: dict[str, Any], instrument: InstrumentInfo | None,
                day_start: datetime) -> dict[str, Any]:
    """The quote's instrument name and market, and the day's price limits (the band orders are
    checked against: the instrument's limits around the day's base, on its grid). Name and
    market are null for a code the master lacks, or before this process has loaded the master
    (quote reads never wait for the database). They change at most once a day."""
    base = day_base(quote["price"], quote["base"], datetime.fromisoformat(quote["ts"]),
                    day_start)
    band = PriceBand.around(base, STOCK if instrument is None else instrument.price_rules)
    return {"name": None if instrument is None else instrument.name,
            "market": None if instrument is None else instrument.market.value,
            "lower_limit": band.lower, "upper_limit": band.upper}


def _moment_fields(received: float | None, market: MarketMoment,
                   max_age_s: float) -> dict[str, Any]:
    """`age_s`, the calendar's session now and `stale`, as of `market`."""
    age = None if received is None else max(market.now - received, 0.0)
    return {"age_s": None if age is None else round(age, 3),
            "market_session": market.session.value,
            "stale": market.stale(received, max_age_s)}


def _aged(quote: dict[str, Any], received: float | None, market: MarketMoment,
          max_age_s: float, instrument: InstrumentInfo | None,
          day_start: datetime) -> dict[str, Any]:
    """The quote as the API answers it: with its day's fields and its age as of `market` (a
    new dict: `quote` may be cached)."""
    return {**quote, **_day_fields(quote, instrument, day_start),
            **_moment_fields(received, market, max_age_s)}


def stored_quote(quote: dict[str, Any]) -> StoredQuote:
    """A checked quote made ready to be answered many times (QuoteContext.answer)."""
    # orjson writes an object compactly and in insertion order, so the answer's dict
    # ({**quote, added fields}) encodes as the quote's own bytes up to its closing brace, then
    # the added fields: unless the quote has a field of an added one's name, which the added
    # value replaces where it stands (a field the bus might add one day).
    if not ANSWER_FIELDS.isdisjoint(quote):
        return StoredQuote(quote, None)
    return StoredQuote(quote, orjson.dumps(quote)[:-1])


@dataclass(frozen=True, slots=True)
class QuoteContext:
    """What turns a stored quote into its answer (`view`), read once per request (or once per
    tick, for the streams): the market's moment by the calendar, the day's start, the
    instruments master as this process holds it."""

    market: MarketMoment
    day_start: datetime
    max_age_s: float
    catalog: CatalogSnapshot | None

    def view(self, code: str, quote: dict[str, Any]) -> dict[str, Any]:
        """The quote as the API answers it (QuoteOut)."""
        return _aged(quote, epoch_s(quote.get("received_at")), self.market, self.max_age_s,
                     None if self.catalog is None else self.catalog.get(code), self.day_start)

    def answer(self, code: str, stored: StoredQuote, received: float | None) -> bytes:
        """`view` as JSON bytes (`received`: the quote's `received_at` in epoch seconds), the
        very bytes `orjson.dumps(view)` gives, spliced rather than built: the stored quote's
        bytes, its day's fields (encoded once a day per quote held), then its age, the session
        and `stale`, the only work that depends on the moment."""
        instrument = None if self.catalog is None else self.catalog.get(code)
        if stored.head is None:
            return orjson.dumps(_aged(stored.quote, received, self.market, self.max_age_s,
                                      instrument, self.day_start))
        day = stored.day
        if day is None or day[0] is not instrument or day[1] != self.day_start:
            fields = orjson.dumps(_day_fields(stored.quote, instrument, self.day_start))
            day = stored.day = (instrument, self.day_start, fields[1:-1])
        moment = orjson.dumps(_moment_fields(received, self.market, self.max_age_s))
        return b"".join((stored.head, b",", day[2], b",", moment[1:]))


class _LastSpan:
    """The session span of this process's last quote context (one calendar per process; tests
    swap theirs, hence the check of `calendar`)."""

    span: SessionSpan | None = None


def quote_context(resources: Resources) -> QuoteContext:
    # `Resources.clock()` is what orders and the calendar answer by (tests set their own); a
    # quote's age is told at the wall clock's precision when it is the wall clock, whose
    # default keeps whole seconds, as the database does.
    clock = resources.clock()
    at = clock.timestamp()
    wall = time.time()
    now = wall if 0 <= wall - at < 1 else at
    calendar = resources.calendar
    span = _LastSpan.span
    # The day's start is the calendar's at `clock`, the session at `now`: one span must hold
    # both (`at` <= `now`) for the span's answers to be the ones asked.
    if span is None or span.calendar is not calendar or not span.starts <= at <= now < span.ends:
        span = session_span(calendar, clock if now == at else datetime.fromtimestamp(now, UTC))
        if not span.starts <= at:  # a boundary between the two (within the clock's second)
            return QuoteContext(span.moment(now), day_start(calendar, clock),
                                resources.settings.quote_max_age_s, resources.instruments.cached())
        _LastSpan.span = span
    return QuoteContext(span.moment(now), span.day_start, resources.settings.quote_max_age_s,
                        resources.instruments.cached())


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
        stored, received = stored_quote(quote), epoch_s(quote.get("received_at"))
        if cache.enabled:
            cache.put(code, stored, received, time.monotonic())
    else:
        stored, received = hit
    return quote_context(resources).answer(code, stored, received)


def parse_codes(texts: list[str]) -> list[str]:
    """The codes of a /stocks/multiple request in bus form, in request order, without repeats
    (api.instruments.codes.unique_codes). `A005930,A000660` in one parameter counts as two codes."""
    codes = unique_codes(part for text in texts
                         for part in (text.split(",") if "," in text else [text]))
    if len(codes) > MAX_CODES_PER_REQUEST:
        raise Unprocessable(
            f"{len(codes)} codes requested; at most {MAX_CODES_PER_REQUEST} per request",
            code="too_many_codes",
        )
    return codes


async def latest_quotes(resources: Resources, codes: list[str]) -> Quotes:
    """The latest quote of each code (bus form), with `age_s` and `stale`, by code in the given
    order; None for a code without a readable quote. One MGET, whatever the number of codes."""
    names: BusNames = resources.names
    keys = [names.quote(code) for code in codes]
    raws = await resources.redis.mget(keys) if keys else []
    context = quote_context(resources)
    quotes: Quotes = {}
    for code, key, raw in zip(codes, keys, raws, strict=True):
        quote = None if raw is None else _decode(raw, key)
        quotes[code] = None if quote is None else context.view(code, quote)
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
    codes = {resources.topics.code(as_text(topic)) for topic in topics}
    return await _read_quotes(resources, sorted(code for code in codes if code is not None))


async def relayer_health(resources: Resources) -> DaemonHealthOut:
    """The relayer's health hash, decoded and judged (`alive`); never an error when absent."""
    raw = await resources.redis.hgetall(resources.names.relayer_health)
    if not raw:
        return DaemonHealthOut(alive=False)
    try:
        health = RelayerHealth.from_hash(raw)
    except ValueError as exc:
        logger.warning("unreadable relayer health hash: %s", exc)
        return DaemonHealthOut(alive=False)
    now = time.time()
    updated_age = seconds_since(health.updated_at, now)
    last_tick_age = seconds_since(health.last_tick_at, now)
    last_write_age = seconds_since(health.last_write_at, now)
    alive = updated_age is not None and updated_age <= resources.settings.relayer_health_max_age_s
    return DaemonHealthOut(
        **asdict(health),
        alive=alive,
        updated_age_s=None if updated_age is None else round(updated_age, 3),
        last_tick_age_s=None if last_tick_age is None else round(last_tick_age, 3),
        last_write_age_s=None if last_write_age is None else round(last_write_age, 3),
    )
