"""api.cancellation: a loop whose cancellation was swallowed by a library still stops."""

from __future__ import annotations

import asyncio

import pytest

from api.cancellation import honour_cancellation


async def test_a_swallowed_cancellation_is_honoured_at_the_next_check() -> None:
    checks_passed = 0

    async def loop_that_calls_a_library() -> None:
        nonlocal checks_passed
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                pass  # what asyncio.wait_for does on Python 3.11 in gh-86296's race
            honour_cancellation()
            checks_passed += 1

    task = asyncio.create_task(loop_that_calls_a_library())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, timeout=5)
    assert checks_passed == 0


async def test_a_task_not_cancelled_goes_on() -> None:
    async def checked() -> str:
        honour_cancellation()
        return "went on"

    assert await asyncio.create_task(checked()) == "went on"
