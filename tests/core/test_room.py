"""Room: a consumer's two bounds, work queued or running and work owned (no Redis)."""

from __future__ import annotations

import asyncio

from bookgen_events.room import Room


async def test_waits_until_the_load_leaves_room() -> None:
    """With the load at capacity, wait() returns once finished() reports enough room."""
    load = 10
    room = Room(10, 100, lambda: load)
    waiting = asyncio.create_task(room.wait(3))
    await asyncio.sleep(0)
    load = 8
    room.finished(load)  # 2 free: not enough for 3
    await asyncio.sleep(0)
    assert not waiting.done()
    load = 7
    room.finished(load)
    await asyncio.wait_for(waiting, 1)


async def test_owning_too_much_stops_the_wait_until_a_release() -> None:
    """Owned work counts until released, whatever the load: writes refused stop the reads."""
    room = Room(10, 3, lambda: 0)
    room.ids.update({"1-0", "2-0"})
    room.members.add("retry")
    waiting = asyncio.create_task(room.wait())
    await asyncio.sleep(0)
    room.finished(0)
    await asyncio.sleep(0)
    assert not waiting.done()
    room.release(["1-0"], [])
    await asyncio.wait_for(waiting, 1)
    assert room.ids == {"2-0"} and room.members == {"retry"}


async def test_no_wait_when_there_is_room() -> None:
    """wait() returns at once while below both bounds."""
    await asyncio.wait_for(Room(10, 10, lambda: 9).wait(1), 0.1)
