"""Stopping a task that is in the middle of Redis calls (``bookgen_events.cancelling``).

On Python 3.11 one ``cancel()`` can be swallowed inside redis-py's command path, after which
``await task`` may wait forever; a dispatcher once hung at shutdown this way. Here a real Redis
client loops on short blocking reads and is stopped at many random moments.
"""

from __future__ import annotations

import asyncio
import random

from redis.asyncio import Redis

from bookgen_events.cancelling import cancel_and_wait


async def test_a_task_in_redis_calls_stops_whenever_it_is_cancelled(
    redis: Redis, prefix: str
) -> None:
    async def follow() -> None:
        while True:
            await redis.xread({f"{prefix}:nothing": "$"}, block=1)

    shuffle = random.Random(7)
    for _ in range(300):
        task = asyncio.create_task(follow())
        await asyncio.sleep(shuffle.random() * 0.01)
        await asyncio.wait_for(cancel_and_wait([task]), 5)
        assert task.done()


async def test_errors_of_the_cancelled_are_retrieved_not_raised() -> None:
    async def fails() -> None:
        raise ValueError("told")

    async def sleeps() -> None:
        await asyncio.sleep(60)

    tasks = [asyncio.create_task(fails()), asyncio.create_task(sleeps())]
    await asyncio.sleep(0)
    await cancel_and_wait(tasks)
    assert isinstance(tasks[0].exception(), ValueError) and tasks[1].cancelled()
