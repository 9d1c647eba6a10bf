"""Writes quotes into Redis: latest-quote keys, per-code channels and the tick stream.

The only module that writes ticks to Redis. Quotes are buffered as they are read and flushed by
one task, one server-side script call per batch (`WRITE_TICKS`): the script is where the
compare-and-set on the tick time belongs, and one EVALSHA per batch of hundreds of ticks costs
the relayer a few microseconds per tick instead of the ~28 us of a SET + PUBLISH + XADD
pipeline (docs/BENCHMARKS.md; `scripts/bench_relayer.py` measures ours).

Batching needs no timer: while one batch is in flight the next one fills, so batches are small
(low latency) when ticks are few and large (high throughput) when they are many.

During a Redis outage the buffer keeps the newest `max_buffered` ticks, counts what it drops,
and the flush is retried at least every `REDIS_RETRY_MAX_S`; the relayer never exits for Redis.
The retry is the probe: ticks flow again within about a second of Redis answering. (It used to
share the upstream's reconnect backoff, up to 60 s, and wrote nothing for 23 s after a 30 s
outage.) Trying that often is cheap: against a Redis that refuses connections an attempt costs a
fraction of a millisecond, and against a frozen one it waits the socket timeout, so no storm.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayer.backoff import Backoff
from relayer.bus import STREAM_QUOTE_FIELD, BusNames, Quote, format_utc
from relayer.redis_script import RedisScript

logger = logging.getLogger(__name__)

# Longest wait between two write attempts while Redis fails (the first retry comes after 0.1 s).
REDIS_RETRY_MAX_S = 1.0

# KEYS[1] = tick stream, KEYS[2..] = one quote key per tick (`NS:quote:{code}`).
# ARGV[1] = quote TTL (s), ARGV[2] = stream MAXLEN (approximate), ARGV[3] = stream field,
# ARGV[4] = length of the quote key prefix, ARGV[5] = tick channel prefix, then one quote JSON
# per tick. The channel name is the prefix plus the code cut from the key, and the tick time is
# read from the JSON: two arguments a tick instead of four, which is most of the client's cost.
# The quote key moves only forward in time: a tick older than the stored quote (a late packet,
# or a second relayer replaying) still goes to the stream, which logs every print, but neither
# overwrites the quote nor is published to live clients. Times are ISO 8601 UTC with a fixed
# format, so string order is time order. (A `"ts":"` inside a string value would be escaped by
# the JSON encoder, so the first match is the field.) A stored value that is not a quote of ours
# (garbage, a truncated write, a key of another type) has no trade time of that format: the
# tick overwrites it, and the batch never fails on it (`pcall`: GET on a hash is an error).
# The stream entry comes first, so that the quote stored and published carries its id as
# `tick_id` (appended as the JSON's last field: the relayer's quote JSON is an object that ends
# in `}` and has no `tick_id` of its own): a reader of the latest quote then names the print as
# the fills worker does, and one print's volume is counted once (docs/TRADING.md).
WRITE_TICKS = """
local stream = KEYS[1]
local ttl, maxlen, field = ARGV[1], ARGV[2], ARGV[3]
local code_from, channel_prefix = tonumber(ARGV[4]) + 1, ARGV[5]
local TIME_FORMAT = '^%d%d%d%d%-%d%d%-%d%dT%d%d:%d%d:%d%dZ$'
local function tick_time(quote)  -- a plain find: much cheaper than a pattern match
  local at = string.find(quote, '"ts":"', 1, true)
  return at and string.sub(quote, at + 6, at + 25)  -- YYYY-MM-DDTHH:MM:SSZ
end
local written = 0
for i = 2, #KEYS do
  local quote = ARGV[i + 4]
  local ts = tick_time(quote)
  local current = redis.pcall('GET', KEYS[i])
  local current_ts = type(current) == 'string' and tick_time(current)
  local id = redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, quote)
  if not current_ts or current_ts <= ts or not string.find(current_ts, TIME_FORMAT) then
    local stored = string.sub(quote, 1, -2) .. ',"tick_id":"' .. id .. '"}'
    redis.call('SET', KEYS[i], stored, 'EX', ttl)
    redis.call('PUBLISH', channel_prefix .. string.sub(KEYS[i], code_from), stored)
    written = written + 1
  end
end
return written
"""
_WRITE_TICKS = RedisScript(WRITE_TICKS)


class TickPublisher:
    """Buffers quotes and writes them in batches; also the flow control of the read loops.

    `congested()` is true while more than `max_batch * 2` quotes wait and Redis is answering: the
    read loop then waits for room, so a reader faster than Redis slows the upstream (TCP
    backpressure) instead of growing memory. While Redis fails, reading goes on and the buffer
    keeps the newest `max_buffered` quotes.
    """

    def __init__(
        self,
        redis: Redis,
        names: BusNames,
        *,
        quote_ttl_s: int,
        stream_maxlen: int,
        max_batch: int,
        max_buffered: int,
        backoff: Backoff | None = None,
    ) -> None:
        self._redis = redis
        self._names = names
        quote_prefix = names.quote("")
        self._head: list[str | bytes] = [
            str(quote_ttl_s), str(stream_maxlen), STREAM_QUOTE_FIELD,
            str(len(quote_prefix)), names.tick_channel(""),
        ]
        self._max_batch = max_batch
        self._high_water = max_batch * 2
        self._max_buffered = max_buffered
        self._backoff = backoff or Backoff(initial_s=0.1, max_s=REDIS_RETRY_MAX_S)
        self._keys: list[str] = []  # quote key per buffered quote
        self._quotes: list[bytes] = []  # quote JSON, same order
        self._key_by_code: dict[str, str] = {}
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._failing = False
        self.written_total = 0  # quote keys written
        self.ticks_written_total = 0  # ticks in the stream: what reached Redis, whatever its age
        self.last_write_at = ""  # bus time of the last successful write, "" before the first
        self.dropped_total = 0
        self._last_drop_log = 0.0

    @property
    def pending(self) -> int:
        return len(self._quotes)

    @property
    def stale_total(self) -> int:
        """Ticks older than the stored quote: written to the stream only."""
        return self.ticks_written_total - self.written_total

    def add(self, quote: Quote) -> None:
        """Queue one quote (hot path: no await, no Redis)."""
        key = self._key_by_code.get(quote.code)
        if key is None:
            key = self._key_by_code[quote.code] = self._names.quote(quote.code)
        self._keys.append(key)
        self._quotes.append(quote.to_json())
        if len(self._quotes) > self._max_buffered:
            self._drop_oldest()
        self._ready.set()

    def congested(self) -> bool:
        return len(self._quotes) > self._high_water and not self._failing

    async def wait_for_room(self) -> None:
        self._room.clear()
        await self._room.wait()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._quotes:
                await self._flush_once()

    async def drain(self) -> None:
        """Write what is buffered (used on shutdown, under the caller's deadline)."""
        while self._quotes:
            await self._flush_once()

    async def _flush_once(self) -> None:
        keys, quotes = self._take_batch()
        try:
            written = await _WRITE_TICKS(
                self._redis, keys=[self._names.tick_stream, *keys], args=[*self._head, *quotes]
            )
        except asyncio.CancelledError:
            self._requeue(keys, quotes)  # a stop under a deadline: the count of unwritten stays
            raise
        except RedisError as exc:
            self._requeue(keys, quotes)
            self._failing = True
            self._room.set()  # readers must not wait on a writer that cannot write
            delay = self._backoff.next_delay()
            logger.warning(
                "Redis write of %d ticks failed (%s); %d buffered, retrying in %.1fs",
                len(keys), exc, len(self._quotes), delay,
            )
            await asyncio.sleep(delay)
            return
        if self._failing:
            logger.info("Redis writes resumed; %d ticks buffered", len(self._quotes))
            self._failing = False
        self._backoff.reset()
        self.ticks_written_total += len(keys)
        self.last_write_at = format_utc(datetime.now(UTC), millis=True)
        self.written_total += int(written)
        if len(self._quotes) <= self._high_water:
            self._room.set()

    def _take_batch(self) -> tuple[list[str], list[bytes]]:
        if len(self._quotes) <= self._max_batch:  # the usual case: swap, no copying
            keys, quotes = self._keys, self._quotes
            self._keys, self._quotes = [], []
            return keys, quotes
        keys, quotes = self._keys[: self._max_batch], self._quotes[: self._max_batch]
        del self._keys[: self._max_batch], self._quotes[: self._max_batch]
        return keys, quotes

    def _requeue(self, keys: list[str], quotes: list[bytes]) -> None:
        # Keep order: these are older than anything buffered since.
        self._keys[:0] = keys
        self._quotes[:0] = quotes
        if len(self._quotes) > self._max_buffered:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        excess = len(self._quotes) - self._max_buffered
        del self._keys[:excess], self._quotes[:excess]
        self.dropped_total += excess
        now = time.monotonic()
        if now - self._last_drop_log > 10:
            self._last_drop_log = now
            logger.warning(
                "tick buffer full (%d): dropped the oldest ticks, %d dropped so far",
                self._max_buffered, self.dropped_total,
            )
