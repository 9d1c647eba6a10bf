"""What the API side does on the bus, done by hand for relayer tests: commands, waits, reads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from redis.asyncio import Redis

from relayer.bus import (
    BusNames,
    Command,
    CommandResult,
    CommandType,
    DesiredSource,
    Quote,
    decode_health,
)
from tests.support.env import scaled

NAMES = BusNames()


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 10, what: str = "condition"
) -> None:
    """Wait until `check()` is true. For state in another process, where no event exists."""
    deadline = time.monotonic() + scaled(timeout)
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


async def health(redis: Redis) -> dict[str, object]:
    return decode_health(await redis.hgetall(NAMES.relayer_health))


async def wait_connected(redis: Redis, *, subscriptions: int | None = None,
                         timeout: float = 10) -> None:
    """Until the relayer leads, is connected upstream and listens for commands."""

    async def ready() -> bool:
        state = await health(redis)
        numsub = dict(await redis.pubsub_numsub(NAMES.commands))
        listening = numsub.get(NAMES.commands.encode(), 0) > 0
        wanted = subscriptions is None or state["subscriptions"] == subscriptions
        return state["state"] == "connected" and listening and wanted

    await eventually(ready, timeout, "relayer connected and listening")


async def send_command(redis: Redis, type_: CommandType, topic: str | None = None,
                       timeout: float = 10) -> CommandResult:
    """Update the desired set, nudge the relayer and wait for its answer, as the API does."""
    if type_ is CommandType.SUBSCRIBE and topic:
        await redis.sadd(NAMES.desired_subscriptions, topic)
    elif type_ is CommandType.UNSUBSCRIBE and topic:
        await redis.srem(NAMES.desired_subscriptions, topic)
    command = Command(type_, topic)
    await redis.publish(NAMES.commands, command.to_json())
    answer = await redis.blpop([NAMES.command_result(command.id)], timeout=scaled(timeout))
    assert answer is not None, f"no result for {command} within {timeout}s"
    return CommandResult.from_json(answer[1])


async def mark_restored_from_sql(redis: Redis) -> None:
    """What every API worker does at start (api.subscriptions.restore), here with no SQL rows:
    mark the desired set's SQL part loaded, so that the relayer unsubscribes what it lacks."""
    await redis.hset(NAMES.desired_initialised, DesiredSource.SQL.value, "2026-01-01T00:00:00Z")


async def latest_quote(redis: Redis, code: str) -> Quote | None:
    raw = await redis.get(NAMES.quote(code))
    return Quote.from_json(raw) if raw else None
