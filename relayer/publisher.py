"""Writes quotes into Redis: latest-quote keys, per-code channels and the tick stream.

The only module that writes ticks to Redis. Quotes are buffered as they are read and flushed by
one task, one server-side script call per batch (`WRITE_TICKS`): the script is where the
compare-and-set on the tick time belongs, and one EVALSHA per batch of hundreds of ticks costs
the relayer a few microseconds per tick instead of the ~28 us of a SET + PUBLISH + XADD
pipeline (DESIGN.md section 8; `scripts/bench_relayer.py` measures ours).

Batching needs no timer: while one batch is in flight the next one fills, so batches are small
(low latency) when ticks are few and large (high throughput) when they are many.

During a Redis outage the buffer keeps the newest `max_buffered` ticks, counts what it drops,
and the flush is retried with backoff; the relayer never exits for Redis.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relayer.backoff import Backoff
from relayer.bus import STREAM_QUOTE_FIELD, BusNames, Quote
from relayer.redis_script import RedisScript

logger = logging.getLogger(__name__)

# KEYS[1] = tick stream, KEYS[2..] = one quote key per tick.
# ARGV[1] = quote TTL (s), ARGV[2] = stream MAXLEN (approximate), ARGV[3] = stream field,
# then per tick: tick time, quote JSON, channel.
# The quote key moves only forward in time: a tick older than the stored quote (a late packet,
# or a second relayer replaying) still goes to the stream, which logs every print, but neither
# overwrites the quote nor is published to live clients. Times are ISO 8601 UTC with a fixed
# format, so string order is time order.
WRITE_TICKS = """
local stream = KEYS[1]
local ttl, maxlen, field = ARGV[1], ARGV[2], ARGV[3]
local written = 0
for i = 2, #KEYS do
  local at = (i - 2) * 3 + 4
  local ts, quote, channel = ARGV[at], ARGV[at + 1], ARGV[at + 2]
  local current = redis.call('GET', KEYS[i])
  local current_ts = current and string.match(current, '"ts":"([^"]*)"')
  if not current_ts or current_ts <= ts then
    redis.call('SET', KEYS[i], quote, 'EX', ttl)
    redis.call('PUBLISH', channel, quote)
    written = written + 1
  end
  redis.call('XADD', stream, 'MAXLEN', '~', maxlen, '*', field, quote)
end
return written
"""


class TickPublisher:
    def __init__(
        self,
        redis: Redis,
        names: BusNames,
        *,
        quote_ttl_s: int,
        stream_maxlen: int,
        max_batch: int,
        max_buffered: int,
        backoff: Backoff,
    ) -> None:
        self._script = RedisScript(redis, WRITE_TICKS)
        self._names = names
        self._head = [str(quote_ttl_s), str(stream_maxlen), STREAM_QUOTE_FIELD]
        self._max_batch = max_batch
        self._max_buffered = max_buffered
        self._backoff = backoff
        self._buffer: list[tuple[str, str, bytes, str]] = []  # (key, ts, json, channel)
        self._keys_by_code: dict[str, tuple[str, str]] = {}
        self._ready = asyncio.Event()
        self.written_total = 0
        self.stale_total = 0
        self.dropped_total = 0
        self._last_drop_log = 0.0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, quote: Quote) -> None:
        """Queue one quote (hot path: no await, no Redis)."""
        keys = self._keys_by_code.get(quote.code)
        if keys is None:
            keys = (self._names.quote(quote.code), self._names.tick_channel(quote.code))
            self._keys_by_code[quote.code] = keys
        self._buffer.append((keys[0], quote.ts, quote.to_json(), keys[1]))
        if len(self._buffer) > self._max_buffered:
            self._drop_oldest()
        self._ready.set()

    async def run(self) -> None:
        while True:
            await self._ready.wait()
            self._ready.clear()
            while self._buffer:
                await self._flush_once()

    async def drain(self) -> None:
        """Write what is buffered (used on shutdown, under the caller's deadline)."""
        while self._buffer:
            await self._flush_once()

    async def _flush_once(self) -> None:
        batch = self._buffer[: self._max_batch]
        del self._buffer[: len(batch)]
        keys = [self._names.tick_stream]
        args: list[str | bytes] = list(self._head)
        for key, ts, quote_json, channel in batch:
            keys.append(key)
            args += (ts, quote_json, channel)
        try:
            written = await self._script(keys=keys, args=args)
        except asyncio.CancelledError:
            self._requeue(batch)  # a stop under a deadline: the count of unwritten stays right
            raise
        except RedisError as exc:
            self._requeue(batch)
            delay = self._backoff.next_delay()
            logger.warning(
                "Redis write of %d ticks failed (%s); %d buffered, retrying in %.1fs",
                len(batch), exc, len(self._buffer), delay,
            )
            await asyncio.sleep(delay)
            return
        self._backoff.reset()
        self.written_total += int(written)
        self.stale_total += len(batch) - int(written)

    def _requeue(self, batch: list[tuple[str, str, bytes, str]]) -> None:
        self._buffer[:0] = batch  # keep order: these are older than anything buffered since
        if len(self._buffer) > self._max_buffered:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        excess = len(self._buffer) - self._max_buffered
        del self._buffer[:excess]
        self.dropped_total += excess
        now = time.monotonic()
        if now - self._last_drop_log > 10:
            self._last_drop_log = now
            logger.warning(
                "tick buffer full (%d): dropped the oldest ticks, %d dropped so far",
                self._max_buffered, self.dropped_total,
            )
