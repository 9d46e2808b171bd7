"""A real mover process for crash tests: moves due scheduled events ten at a time, forever.

Run as ``python -m tests.core.mover_proc URL PREFIX MOST``; small batches so a SIGKILL lands
between (and, at the Redis end, during) moves, a few milliseconds apart. After ``MOST`` events
it stops moving and waits for its kill, so some are always still held when the kill comes,
however slowly the test (on a loaded machine) gets round to it.
"""

from __future__ import annotations

import asyncio
import sys

from bookgen_events import EventBus
from bookgen_events.connection import create_redis


async def main(url: str, prefix: str, most: int) -> None:
    bus = EventBus(create_redis(url), prefix=prefix)
    moved = 0
    while moved < most:
        moved += len(await bus.scheduled_events.move_due(limit=10))
        await asyncio.sleep(0.005)
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
