"""The API's startup work (api.app STARTUP), when the database may be down.

Each worker runs the startup hooks in order before it serves. If the database is unavailable
(api.db.is_unavailable), failing the start would be worse than starting: Gunicorn stops the
whole API when a worker cannot boot, and quote reads, which need only Redis, would go down with
the database. So the worker starts anyway (database routes answer 503 database_unavailable
meanwhile), and the hook that met the outage and those after it run in the background, again
every few seconds, until they have all succeeded. Any other error still fails the start: that
is a bug or a bad setting, not an outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager, suppress

from api.db import is_unavailable
from api.resources import Resources
from relayer.backoff import Backoff, Jitter

logger = logging.getLogger(__name__)

StartupHook = Callable[[Resources], Awaitable[None]]

# Pauses between background attempts: the first soon (a restart takes seconds), then capped.
RETRY_INITIAL_S = 0.5
RETRY_MAX_S = 5.0


def retry_pauses() -> Backoff:
    # No jitter: one attempt every few seconds per worker is no storm, and the log reads plainly.
    return Backoff(RETRY_INITIAL_S, RETRY_MAX_S, jitter=Jitter.NONE)


@asynccontextmanager
async def startup_hooks(hooks: Sequence[StartupHook],
                        resources: Resources) -> AsyncIterator[None]:
    """Run `hooks` in order; from the first that meets a database outage on, in the
    background until they succeed. The background work is cancelled when the app stops."""
    for index, hook in enumerate(hooks):
        try:
            await hook(resources)
        except Exception as exc:
            if not is_unavailable(exc):
                raise
            logger.warning("startup: the database is unavailable (%s); serving anyway, and "
                           "finishing the startup work when it answers", type(exc).__name__)
            remaining = asyncio.create_task(_until_done(hooks[index:], resources))
            try:
                yield
            finally:
                remaining.cancel()
                with suppress(asyncio.CancelledError):
                    await remaining
            return
    yield


async def _until_done(hooks: Sequence[StartupHook], resources: Resources) -> None:
    pauses = retry_pauses()
    await asyncio.sleep(pauses.next_delay())
    for hook in hooks:
        done = await _done(hook, resources)
        while not done:
            await asyncio.sleep(pauses.next_delay())
            done = await _done(hook, resources)
    logger.info("startup: finished now that the database answers")


async def _done(hook: StartupHook, resources: Resources) -> bool:
    """False if the database is still unavailable; a bug is logged, and not run again."""
    try:
        await hook(resources)
    except Exception as exc:
        if is_unavailable(exc):
            return False
        logger.exception("startup: %s failed", getattr(hook, "__name__", hook))
    return True
