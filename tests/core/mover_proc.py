"""A real mover process for crash tests: moves due scheduled events ten at a time, forever.

Run as ``python -m tests.core.mover_proc URL PREFIX``; small batches so a SIGKILL lands
between (and, at the Redis end, during) moves, a few milliseconds apart so the test kills it
long before it is done (3,000 events take it ~1.5 s), however fast the machine.
"""

from __future__ import annotations

import asyncio
import sys

from bookgen_events import EventBus
from bookgen_events.connection import create_redis


async def main(url: str, prefix: str) -> None:
    bus = EventBus(create_redis(url), prefix=prefix)
    while True:
        await bus.scheduled_events.move_due(limit=10)
        await asyncio.sleep(0.005)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
