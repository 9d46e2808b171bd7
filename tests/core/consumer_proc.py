"""A real consumer process for crash tests: delivers by RPUSHing event ids to a Redis list.

Run as ``python -m tests.core.consumer_proc URL PREFIX NAME DELAY_S``; each delivery sleeps
DELAY_S so a SIGKILL lands mid-batch.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Sequence

from redis.asyncio import Redis

from bookgen_events import Consumer, Event, EventBus
from bookgen_events.connection import create_redis


class ListChannel:
    name = "webhook"

    def __init__(self, redis: Redis, key: str, delay: float) -> None:
        self.redis, self.key, self.delay = redis, key, delay

    def recipients(self, event: Event) -> Sequence[str]:
        return [event.webhook_url] if event.webhook_url else []

    def rate_limit_key(self, event: Event, recipient: str) -> str | None:
        return None

    async def deliver(self, event: Event, recipient: str) -> int:
        await asyncio.sleep(self.delay)
        await self.redis.rpush(self.key, event.id)
        return 200


async def main(url: str, prefix: str, name: str, delay: float) -> None:
    redis = create_redis(url)
    bus = EventBus(redis, prefix=prefix)
    consumer = Consumer(
        bus, ListChannel(redis, f"{prefix}:delivered", delay), name=name,
        batch=20, concurrency=10, claim_idle_ms=1000, max_block_ms=200,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, consumer.stop)
    await redis.set(f"{prefix}:ready:{name}", 1)
    await consumer.run()
    await redis.aclose()


if __name__ == "__main__":
    url, prefix, name, delay = sys.argv[1:5]
    asyncio.run(main(url, prefix, name, float(delay)))
