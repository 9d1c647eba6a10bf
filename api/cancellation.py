"""A task's pending cancellation honoured after a Redis call, for the loops that run until
the worker stops.

Why: redis-py sends a command inside `asyncio.wait_for` when the client has a socket
timeout, and on Python 3.11 `wait_for` returns the result instead of raising when the
cancellation lands just as the send completes (CPython gh-86296; measured: an HMGET swallowed
it in 310 of 500 tries). The loop then goes on as if nothing happened, and the worker's
shutdown waits SHUTDOWN_WAIT_S for it (tests/test_stream_platform.py saw it). The task still
counts the request (`Task.cancelling()`), so a loop can check after each call.
"""

from __future__ import annotations

import asyncio


def honour_cancellation() -> None:
    """Raise CancelledError if the current task was asked to stop and is still running."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
