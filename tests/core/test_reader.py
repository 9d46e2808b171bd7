"""GroupReader: one consumer's reads of one group, on a real Redis."""

from __future__ import annotations

import asyncio
import socket

from bookgen_events import EventBus
from bookgen_events.connection import create_redis
from bookgen_events.logs import get_logger
from bookgen_events.reader import GroupReader

LOG = get_logger("tests.reader")
EVENT = '{"type":"progress_update"}'


def reader(bus: EventBus, consumer: str = "c", **options: object) -> GroupReader:
    return GroupReader(bus, "webhook", consumer, claim_idle_ms=50, log=LOG, **options)  # type: ignore[arg-type]


async def append(bus: EventBus, n: int) -> list[str]:
    return [await bus.redis.xadd(bus.names.events, {"event": EVENT}) for _ in range(n)]


async def test_own_pending_entries_come_back_oldest_first_then_none(bus: EventBus) -> None:
    """What this consumer read and never acked is read again (a crash before a restart)."""
    ids = await append(bus, 5)
    assert [i for i, _ in await reader(bus).new(5)] == ids
    again = reader(bus)  # the restarted process, same consumer name
    got = await again.own_pending(2) + await again.own_pending(2) + await again.own_pending(2)
    assert [i for i, _ in got] == ids
    assert await again.own_pending(2) == [] and again.pending_done


async def test_entries_of_a_dead_consumer_are_claimed_after_the_idle_time(bus: EventBus) -> None:
    """XAUTOCLAIM through a cursor: another consumer's idle entries move to this one."""
    ids = await append(bus, 3)
    await reader(bus, "dead").new(3)
    alive = reader(bus, "alive")
    await asyncio.sleep(0.1)
    claimed = await alive.reclaim(2)
    claimed += await alive.reclaim(2)
    assert [i for i, _ in claimed] == ids and alive.wrapped
    assert [i for i, _ in await alive.own_pending(10)] == ids


async def test_kept_entries_are_not_claimed(bus: EventBus) -> None:
    """keep() resets the idle time of work still in progress."""
    ids = await append(bus, 1)
    slow = reader(bus, "slow")
    await slow.new(1)
    await asyncio.sleep(0.1)
    await slow.keep(ids)
    assert await reader(bus, "other").reclaim(10) == []


async def test_a_lost_group_is_recreated_from_the_start(bus: EventBus) -> None:
    """Redis lost the group (restart without persistence): it is recreated at 0, nothing lost."""
    ids = await append(bus, 2)
    await bus.redis.xgroup_destroy(bus.names.events, "webhook")
    r = reader(bus)
    assert await r.new(10) == []  # the read that found the group gone
    assert [i for i, _ in await r.new(10)] == ids


async def test_an_unreachable_redis_pauses_instead_of_raising(prefix: str) -> None:
    """Reads return nothing after a pause and say Redis is down; nothing raises."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = create_redis(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.2)
    try:
        r = reader(EventBus(client, prefix=prefix))
        assert await r.new(10) == [] and r.down
        assert await r.own_pending(10) == [] and r.down and not r.pending_done
        assert await r.reclaim(10) == [] and r.down
    finally:
        await client.aclose()


async def test_leaving_removes_the_consumer_only_when_it_owns_nothing(bus: EventBus) -> None:
    """A consumer with pending entries stays in the group (they are someone's to reclaim)."""
    await append(bus, 1)
    busy, idle = reader(bus, "busy"), reader(bus, "idle")
    await busy.new(1)
    await idle.new(1)
    await busy.leave()
    await idle.leave()
    assert [c["name"] for c in await bus.consumers_info("webhook")] == ["busy"]
