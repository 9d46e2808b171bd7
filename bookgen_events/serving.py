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
    in-flight work, as :meth:`Consumer.stop` does)."""
    consumer = Consumer.from_settings(bus, channel, settings, **overrides)
    task = asyncio.create_task(consumer.run())
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    consumer.stop()
    stopper.cancel()
    await task
