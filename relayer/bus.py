"""The Redis bus contract between the relayer and everything that reads what it writes.

Every Redis key and channel name of StocKing, and the codecs of the payloads that travel on
them, live here and only here (docs/ARCHITECTURE.md, "The Redis bus"). The relayer, the API
and the fills worker are deployed separately, so these names are an interface:
`tests/relayer/test_bus.py` pins the literal strings, and a change here is a protocol change.

Nothing in this module does I/O. It must never import anything else from `relayer/`: the API
imports this module alone.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import orjson

DEFAULT_NAMESPACE = "stocking"

# KRX instrument code: "A" + 6 characters; newer codes carry letters (A0080G0, say).
INSTRUMENT_CODE = re.compile(r"A[0-9A-Z]{6}")


class CommandType(StrEnum):
    SUBSCRIBE = "subscribe"
    UNSUBSCRIBE = "unsubscribe"
    RESYNC = "resync"


class DesiredSource(StrEnum):
    """Where the desired set's topics come from; each one marks `NS:subs:initialised` when it
    has loaded its topics (`BusNames.desired_initialised`)."""

    SEED = "seed"  # the relayer's RELAYER_SUBSCRIBE
    SQL = "sql"  # the API's `subscriptions` table (admin subscriptions)


class RelayerState(StrEnum):
    STANDBY = "standby"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    BACKOFF = "backoff"
    STOPPING = "stopping"


@dataclass(frozen=True, slots=True)
class BusNames:
    """Key and channel names under one namespace. Build one per process and pass it down."""

    ns: str = DEFAULT_NAMESPACE

    def quote(self, code: str) -> str:
        """String key with the latest quote JSON of one instrument (TTL)."""
        return f"{self.ns}:quote:{code}"

    def tick_channel(self, code: str) -> str:
        """Pub/sub channel carrying every new quote of one instrument."""
        return f"{self.ns}:ticks:{code}"

    @property
    def tick_channel_pattern(self) -> str:
        """PSUBSCRIBE pattern matching every instrument's tick channel."""
        return f"{self.ns}:ticks:*"

    def user_events(self, user_id: int) -> str:
        """Pub/sub channel nudging a user's `orders` streams: after a transaction that recorded
        events for the user commits, its new highest offset (decimal text). Only a nudge: the
        events themselves are read from SQL (api.streams.events)."""
        return f"{self.ns}:events:{user_id}"

    @property
    def tick_stream(self) -> str:
        """Capped stream with one entry per trade print (field `q`)."""
        return f"{self.ns}:ticks"

    @property
    def desired_subscriptions(self) -> str:
        """Set of topics that should be subscribed upstream (written by the API)."""
        return f"{self.ns}:subs:desired"

    @property
    def desired_initialised(self) -> str:
        """Hash `DesiredSource` -> when that source last loaded its topics into the desired
        set. A Redis that loses its data loses this marker with the set: a missing field means
        "not restored yet", never "nothing desired" (the relayer then unsubscribes nothing)."""
        return f"{self.ns}:subs:initialised"

    @property
    def active_subscriptions(self) -> str:
        """Hash topic -> JSON {sub_id, since} of what is subscribed upstream right now."""
        return f"{self.ns}:subs:active"

    @property
    def commands(self) -> str:
        """Pub/sub channel of subscription commands (nudges) from the API to the relayer."""
        return f"{self.ns}:cmd"

    def command_result(self, command_id: str) -> str:
        """List holding the one result of a command (the API BLPOPs it)."""
        return f"{self.ns}:cmd:result:{command_id}"

    @property
    def relayer_health(self) -> str:
        """Hash with the active relayer's health, refreshed every second, short TTL."""
        return f"{self.ns}:relayer:health"

    @property
    def fills_health(self) -> str:
        """Hash with the fills worker's heartbeat (api.fills), refreshed every second, short TTL."""
        return f"{self.ns}:fills:health"

    @property
    def relayer_leader(self) -> str:
        """Lease string: only its holder holds the upstream connection."""
        return f"{self.ns}:relayer:leader"

    # Keys the API alone uses (still named here, so that one module owns every name).

    def login_attempts(self, scope: str, subject: str) -> str:
        """Counter of failed logins in the current window; scope `account_address` (subject
        `{address}/{email}`), `address` or `account` (api.auth.rate_limit)."""
        return f"{self.ns}:ratelimit:login:{scope}:{subject}"

    def login_known_addresses(self, email: str) -> str:
        """Set of the addresses an account has logged in from lately (exempt from the
        per-account ceiling)."""
        return f"{self.ns}:ratelimit:login:known:{email}"

    def registrations(self, address: str) -> str:
        """Counter of registrations from a client address in the current window."""
        return f"{self.ns}:ratelimit:register:address:{address}"


COMMAND_RESULT_TTL_S = 300


@dataclass(frozen=True, slots=True)
class TopicTemplate:
    """Upstream topic names for instrument codes, e.g. `/topic/v1/kr/stock/trade/{code}`.

    The desired set holds full topics. Operators may name a bare code (`A000660`), which is
    expanded here; a full topic is accepted only if it is this template around a valid code, so
    a typo never reaches the upstream (where a failed SUBSCRIBE kills the whole connection).
    """

    template: str

    def __post_init__(self) -> None:
        if self.template.count("{code}") != 1:
            raise ValueError("topic template must contain {code} exactly once")

    def topic(self, code_or_topic: str) -> str:
        """The full topic for a bare code or a full topic; raises ValueError if it is neither."""
        candidate = code_or_topic.strip()
        if INSTRUMENT_CODE.fullmatch(candidate):
            return self.template.replace("{code}", candidate)
        if self.code(candidate) is None:
            raise ValueError(
                f"{code_or_topic!r} is neither an instrument code (A + 6 characters, "
                f"e.g. A005930) nor a topic of the form {self.template!r}"
            )
        return candidate

    def code(self, topic: str) -> str | None:
        """The instrument code inside a topic of this template, or None."""
        prefix, _, suffix = self.template.partition("{code}")
        if not (topic.startswith(prefix) and topic.endswith(suffix)):
            return None
        code = topic[len(prefix) : len(topic) - len(suffix)]
        return code if INSTRUMENT_CODE.fullmatch(code) else None


# --------------------------------------------------------------------------------------------
# Quote


@dataclass(slots=True)
class Quote:
    """The latest trade of one instrument as every process sees it.

    Prices and amounts are integer KRW; rates are decimal strings; times are ISO 8601 UTC strings
    ending in `Z` (`ts`: when the trade printed upstream; `received_at`: when the relayer read it).
    `seq` increases with every tick a relayer reads, across restarts (docs/RELAYER.md,
    "Ticks into Redis"); the durable identity of a tick is its stream entry id.

    `tick_id` is that stream entry id, carried by the quote at `NS:quote:{code}` (and on its
    channel): the relayer's script appends it when it stores the quote, so an order priced by
    the latest quote names the same print as the fills worker reading the stream
    (docs/TRADING.md, "One print's volume"). The relayer builds quotes without it, and a
    stream entry's own copy has none (its entry id is it). It is not part of a quote's value
    (`compare=False`): the print read from the stream equals the one read from its key.
    """

    code: str
    price: int
    base: int
    change: int
    change_rate: str
    change_type: str
    volume: int
    cum_volume: int
    cum_amount: int
    trade_type: str
    trading_strength: str | None
    open: int
    high: int
    low: int
    session: str | None
    exchange: str | None
    currency: str
    ts: str
    received_at: str
    seq: int
    tick_id: str | None = field(default=None, compare=False)

    def to_json(self) -> bytes:
        # A dict literal rather than orjson's native dataclass support: the relayer encodes
        # every tick, and this is about twice as fast (scripts/bench_relayer.py). The copy is on
        # purpose too: orjson 3.13 returns bytes with ~8 KiB allocated behind a ~400-byte quote,
        # and the relayer buffers thousands (measured: one page fault per tick without it).
        # tests/relayer/test_bus.py checks that this stays in step with the fields.
        # `tick_id` is written only when known (never by the relayer itself: its script adds it).
        data = {
            "code": self.code, "price": self.price, "base": self.base, "change": self.change,
            "change_rate": self.change_rate, "change_type": self.change_type,
            "volume": self.volume, "cum_volume": self.cum_volume, "cum_amount": self.cum_amount,
            "trade_type": self.trade_type, "trading_strength": self.trading_strength,
            "open": self.open, "high": self.high, "low": self.low, "session": self.session,
            "exchange": self.exchange, "currency": self.currency, "ts": self.ts,
            "received_at": self.received_at, "seq": self.seq,
        }
        if self.tick_id is not None:
            data["tick_id"] = self.tick_id
        return bytes(memoryview(orjson.dumps(data)))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Quote:
        """Decode a stored quote; raises MalformedQuote for anything the relayer never writes."""
        data = decode_quote(raw)
        return cls(**{name: data[name] for name in _QUOTE_FIELDS}, tick_id=data.get("tick_id"))


# The fields every quote carries; `tick_id` only the stored one (decoded separately).
_QUOTE_FIELDS = tuple(name for name in Quote.__dataclass_fields__ if name != "tick_id")
# A stream entry id as Redis writes it (`ms-seq`).
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")


class MalformedQuote(ValueError):
    """Bytes at a quote key or in a tick stream entry that are not a quote the relayer writes
    (not JSON, not an object, a field missing or of the wrong type, a price not above zero).

    The one error every reader of quotes handles: a malformed quote counts as no quote (logged),
    never as a failure of the reader. The relayer overwrites it with the next good tick.
    """


# The checks of decode_quote. `bool` is an `int` subclass in Python, so integers are checked
# by exact type. Times are the bus format (`format_utc`).
_TRADE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_REQUIRED = frozenset(_QUOTE_FIELDS)
_COUNTS = ("volume", "cum_volume", "cum_amount", "open", "high", "low")
_TEXTS = ("change_rate", "change_type", "trade_type", "currency", "received_at")
_OPTIONAL_TEXTS = ("trading_strength", "session", "exchange")


def decode_quote(raw: bytes | str) -> dict[str, Any]:
    """The quote JSON object, every field of `Quote` checked (unknown keys are kept, so that a
    field the bus adds later passes through readers); raises MalformedQuote otherwise.

    About 3 us over the JSON decode itself (one pass of exact-type checks; the reason is
    worked out only for a value that fails): cheap enough for the API's hot path, which passes
    the object through rather than building a `Quote`.
    """
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedQuote(f"not JSON: {exc}") from None
    if type(data) is not dict or not data.keys() >= _REQUIRED:
        raise MalformedQuote(_why_malformed(data))
    price, base, code, ts = data["price"], data["base"], data["code"], data["ts"]
    ok = (type(price) is int and price > 0 and type(base) is int and base > 0
          and type(data["change"]) is int and type(data["seq"]) is int
          and type(code) is str and INSTRUMENT_CODE.fullmatch(code) is not None
          and type(ts) is str and _TRADE_TIME.fullmatch(ts) is not None)
    for name in _COUNTS:
        value = data[name]
        ok = ok and type(value) is int and value >= 0
    for name in _TEXTS:
        ok = ok and type(data[name]) is str
    for name in _OPTIONAL_TEXTS:
        ok = ok and (data[name] is None or type(data[name]) is str)
    tick_id = data.get("tick_id")
    ok = ok and (tick_id is None or (type(tick_id) is str
                                     and _STREAM_ID.fullmatch(tick_id) is not None))
    if not ok:
        raise MalformedQuote(_why_malformed(data))
    return data


def _why_malformed(data: Any) -> str:
    """What is wrong with a decoded value that failed decode_quote's checks (for the log)."""
    if type(data) is not dict:
        return f"not a JSON object but {type(data).__name__}"
    missing = [name for name in _QUOTE_FIELDS if name not in data]
    if missing:
        return f"missing field(s) {', '.join(missing)}"
    for name in ("price", "base"):
        if type(data[name]) is not int or data[name] <= 0:
            return f"{name} is not a positive integer: {data[name]!r:.40}"
    for name in _COUNTS:
        if type(data[name]) is not int or data[name] < 0:
            return f"{name} is not a non-negative integer: {data[name]!r:.40}"
    for name in ("change", "seq"):
        if type(data[name]) is not int:
            return f"{name} is not an integer: {data[name]!r:.40}"
    for name in _TEXTS:
        if type(data[name]) is not str:
            return f"{name} is not a string: {data[name]!r:.40}"
    for name in _OPTIONAL_TEXTS:
        if data[name] is not None and type(data[name]) is not str:
            return f"{name} is not a string or null: {data[name]!r:.40}"
    code = data["code"]
    if type(code) is not str or not INSTRUMENT_CODE.fullmatch(code):
        return f"code is not an instrument code: {code!r:.40}"
    tick_id = data.get("tick_id")
    if tick_id is not None and (type(tick_id) is not str or not _STREAM_ID.fullmatch(tick_id)):
        return f"tick_id is not a stream entry id: {tick_id!r:.40}"
    return f"ts is not a trade time YYYY-MM-DDTHH:MM:SSZ: {data['ts']!r:.40}"


# --------------------------------------------------------------------------------------------
# The tick stream

# Field name of the quote JSON inside a `NS:ticks` stream entry.
STREAM_QUOTE_FIELD = "q"
_STREAM_QUOTE_FIELD_BYTES = STREAM_QUOTE_FIELD.encode()

# The id before every entry of a stream: what an empty (or missing) `NS:ticks` stands for, and
# what Redis reports as a consumer group's last delivered id before it was given anything.
EMPTY_STREAM_ID = "0-0"


def stream_entry_quote(fields: Mapping[bytes | str, bytes | str]) -> Quote:
    """The quote in one `NS:ticks` stream entry (its field `STREAM_QUOTE_FIELD`, whichever way
    the client returns names); raises MalformedQuote like `Quote.from_json`."""
    raw = fields.get(_STREAM_QUOTE_FIELD_BYTES) or fields.get(STREAM_QUOTE_FIELD)
    if raw is None:
        raise MalformedQuote(f"no {STREAM_QUOTE_FIELD!r} field in the stream entry")
    return Quote.from_json(raw)


def stream_id_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id (`ms-seq`) as a tuple that orders like the stream does."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


# --------------------------------------------------------------------------------------------
# Commands and their results


@dataclass(frozen=True, slots=True)
class Command:
    """A nudge from the API: the desired set is already updated, please converge now."""

    type: CommandType
    topic: str | None = None
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: str = field(default_factory=lambda: format_utc(datetime.now(UTC)))

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> Command:
        """Decode a command; raises ValueError for anything that is not a well-formed one."""
        data = orjson.loads(raw)
        if not isinstance(data, dict) or not isinstance(data.get("id"), str) or not data["id"]:
            raise ValueError("command must be an object with a non-empty string id")
        topic = data.get("topic")
        if topic is not None and not isinstance(topic, str):
            raise ValueError("command topic must be a string")
        return cls(
            type=CommandType(str(data.get("type"))),
            topic=topic,
            id=data["id"],
            ts=str(data.get("ts") or ""),
        )


@dataclass(frozen=True, slots=True)
class CommandResult:
    id: str
    ok: bool
    topic: str | None
    message: str
    active: int

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> CommandResult:
        """Decode a result; raises ValueError for anything that is not a well-formed one."""
        data = orjson.loads(raw)
        try:
            return cls(
                id=str(data["id"]),
                ok=bool(data["ok"]),
                topic=data.get("topic"),
                message=str(data.get("message", "")),
                active=int(data.get("active", 0)),
            )
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed command result: {exc!r}") from exc


@dataclass(frozen=True, slots=True)
class ActiveSubscription:
    """Value of one field of `NS:subs:active`."""

    sub_id: str
    since: str

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ActiveSubscription:
        data = orjson.loads(raw)
        return cls(sub_id=str(data["sub_id"]), since=str(data["since"]))


# --------------------------------------------------------------------------------------------
# Health hashes
#
# Every value in a Redis hash is a string. On the bus "" means "none" (a time not reached yet,
# no entry read yet): `to_hash` writes None as "", and `from_hash` reads "" (or a missing field)
# as None.

# A hash as redis-py returns it (HGETALL): bytes, or text from a client that decodes responses.
HashReply = Mapping[bytes, bytes] | Mapping[str, str] | Mapping[bytes | str, bytes | str]


@dataclass(frozen=True, slots=True)
class RelayerHealth:
    """The `NS:relayer:health` hash: the lease holder's figures (relayer.health writes it every
    second with a short TTL; the API reads it for `/ready`, `/metrics`, `daemon/health` and the
    command flow). Counts are decimal integers; `rejected_topics` is a JSON array, sorted."""

    state: str | None = None  # a RelayerState value
    upstream: str | None = None  # adapter and URL, never credentials
    instance: str | None = None
    pid: int | None = None
    host: str | None = None
    started_at: str | None = None
    connected_at: str | None = None
    last_tick_at: str | None = None
    last_write_at: str | None = None
    ticks_total: int | None = None  # ticks read upstream
    ticks_written_total: int | None = None  # ticks written into Redis
    malformed_total: int | None = None
    dropped_total: int | None = None
    reconnects: int | None = None
    subscriptions: int | None = None
    rejected_topics: list[str] = field(default_factory=list)
    updated_at: str | None = None

    def to_hash(self) -> dict[str, str]:
        """The hash as the relayer writes it: every field, in this order."""
        return {name: orjson.dumps(sorted(self.rejected_topics)).decode()
                if name == "rejected_topics" else _hash_value(getattr(self, name))
                for name in HEALTH_FIELDS}

    @classmethod
    def from_hash(cls, raw: HashReply) -> RelayerHealth:
        """Decode the hash (fields it does not know are ignored); raises ValueError for a count
        that is not an integer or `rejected_topics` that is not a JSON array of strings."""
        text = _hash_text(raw)
        values: dict[str, Any] = {name: text.get(name) for name in HEALTH_FIELDS}
        for name in _RELAYER_COUNTS:
            if values[name] is not None:
                values[name] = int(values[name])
        rejected = values["rejected_topics"] = orjson.loads(values["rejected_topics"] or "[]")
        if type(rejected) is not list or not all(type(topic) is str for topic in rejected):
            raise ValueError(f"rejected_topics is not a JSON array of strings: {rejected!r:.80}")
        return cls(**values)


# Fields of the `NS:relayer:health` hash, in the order the relayer writes them.
HEALTH_FIELDS = tuple(RelayerHealth.__dataclass_fields__)
_RELAYER_COUNTS = ("pid", "ticks_total", "ticks_written_total", "malformed_total",
                   "dropped_total", "reconnects", "subscriptions")


def decode_health(raw: HashReply) -> dict[str, Any]:
    """`RelayerHealth.from_hash` as a dict by field name, in `HEALTH_FIELDS` order (for tests
    and scripts, which look fields up by name)."""
    return asdict(RelayerHealth.from_hash(raw))


@dataclass(frozen=True, slots=True)
class FillsHealth:
    """The `NS:fills:health` hash: the fills worker's heartbeat (api.fills.worker writes it
    every second with a short TTL; `/ready` reports it). `caught_up` is "1" or "0"."""

    pid: int | None = None
    updated_at: str | None = None
    last_entry_id: str | None = None  # the last stream entry it processed
    caught_up: bool | None = None  # its last read found no backlog
    fills_total: int | None = None  # since the worker started
    expired_total: int | None = None  # DAY orders expired since the worker started

    def to_hash(self) -> dict[str, str]:
        """The hash as the fills worker writes it: every field, in this order."""
        caught_up = None if self.caught_up is None else int(self.caught_up)
        return {"pid": _hash_value(self.pid), "updated_at": _hash_value(self.updated_at),
                "last_entry_id": _hash_value(self.last_entry_id),
                "caught_up": _hash_value(caught_up), "fills_total": _hash_value(self.fills_total),
                "expired_total": _hash_value(self.expired_total)}

    @classmethod
    def from_hash(cls, raw: HashReply) -> FillsHealth:
        """Decode the hash; never raises: a heartbeat is reported, not relied on, so a field
        that is missing or unreadable is None."""
        text = _hash_text(raw)
        caught_up = text.get("caught_up")
        return cls(pid=_int_or_none(text.get("pid")), updated_at=text.get("updated_at"),
                   last_entry_id=text.get("last_entry_id"),
                   caught_up=None if caught_up is None else caught_up == "1",
                   fills_total=_int_or_none(text.get("fills_total")),
                   expired_total=_int_or_none(text.get("expired_total")))


def _hash_value(value: str | int | None) -> str:
    return "" if value is None else str(value)


def _hash_text(raw: HashReply) -> dict[str, str]:
    """A hash read from Redis as text, without its empty values ("" is "none" on the bus)."""
    return {as_text(name): text for name, value in raw.items() if (text := as_text(value))}


def _int_or_none(text: str | None) -> int | None:
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def as_text(value: bytes | str) -> str:
    """A name or value read from Redis as text: clients made with `decode_responses=False`
    (every one of ours: quotes are passed on as bytes) hand back bytes."""
    return value.decode() if isinstance(value, bytes) else value


def format_utc(moment: datetime, *, millis: bool = False) -> str:
    """ISO 8601 in UTC with a `Z` suffix: the one time format on the bus."""
    moment = moment.astimezone(UTC)
    if millis:
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")
