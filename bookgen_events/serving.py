"""Run one channel on the consumer runtime until told to stop: every channel worker's body."""

from __future__ import annotations

import asyncio
from typing import Any

from .bus import EventBus
from .channel import Channel
from .consumer import Consumer
from .settings import Settings


async def run_channel(
    bus: EventBus, settings: Settings, channel: Channel, stop: asyncio.Event, **overrides: Any
) -> None:
    """Run ``channel`` on the consumer runtime until ``stop`` is set (then hand back or finish
    in-flight work, as :meth:`Consumer.stop` does): one consumer per partition
    (STREAM_PARTITIONS), sharing ``CONSUMER_CONCURRENCY`` between them."""
    consumers = partition_consumers(bus, channel, settings, **overrides)
    tasks = [asyncio.create_task(consumer.run()) for consumer in consumers]
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({*tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
    for consumer in consumers:
        consumer.stop()
    stopper.cancel()
    await asyncio.gather(*tasks)


def partition_consumers(
    bus: EventBus, channel: Channel, settings: Settings, **overrides: Any
) -> list[Consumer]:
    """A consumer of ``channel`` on each partition's stream, the concurrency split evenly."""
    parts = bus.partitions
    concurrency = overrides.pop("concurrency", None) or settings.consumer_concurrency
    share = max(1, -(-concurrency // len(parts)))
    return [
        Consumer.from_settings(part, channel, settings, concurrency=share, **overrides)
        for part in parts
    ]
