"""The relayer's own figures, and the `NS:relayer:health` hash they are published to.

Only the lease holder writes the hash (a standby has nothing upstream to report), every second,
with a TTL of a few seconds: a relayer that dies stops refreshing it, and readers see it gone.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.typing import EncodableT, FieldT

from relayer.bus import BusNames, RelayerHealth, RelayerState, format_utc


@dataclass(slots=True)
class RelayerStats:
    upstream: str  # display form: no credentials
    instance: str
    state: RelayerState = RelayerState.STANDBY
    started_at: str = field(default_factory=lambda: format_utc(datetime.now(UTC)))
    connected_at: str = ""
    last_tick_at: str = ""
    ticks_total: int = 0
    malformed_total: int = 0
    reconnects: int = 0


class HealthReporter:
    def __init__(self, redis: Redis, names: BusNames, ttl_s: int) -> None:
        self._redis = redis
        self._key = names.relayer_health
        self._ttl_s = ttl_s
        self._host = socket.gethostname()
        self._pid = os.getpid()

    async def write(
        self, stats: RelayerStats, *, subscriptions: int, rejected: list[str], dropped: int,
        written: int = 0, last_write_at: str = "",
    ) -> None:
        """`written` and `last_write_at` are the publisher's: ticks that reached Redis, and when
        the last write succeeded. `ticks_total` counts ticks read; while Redis fails it goes on
        rising and these stand still."""
        health = RelayerHealth(
            state=stats.state.value, upstream=stats.upstream, instance=stats.instance,
            pid=self._pid, host=self._host, started_at=stats.started_at,
            connected_at=stats.connected_at, last_tick_at=stats.last_tick_at,
            last_write_at=last_write_at, ticks_total=stats.ticks_total,
            ticks_written_total=written, malformed_total=stats.malformed_total,
            dropped_total=dropped, reconnects=stats.reconnects, subscriptions=subscriptions,
            rejected_topics=rejected, updated_at=format_utc(datetime.now(UTC), millis=True),
        )
        # (A copy, typed as redis-py asks: its mapping's key type is invariant.)
        fields: dict[FieldT, EncodableT] = {name: value for name, value in health.to_hash().items()}
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._key, mapping=fields)
            pipe.expire(self._key, self._ttl_s)
            await pipe.execute()

    async def delete(self) -> None:
        await self._redis.delete(self._key)
