"""Idempotent emit on a real Redis (SPEC 11): an id emitted again appends nothing."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from datetime import UTC, datetime, timedelta

import pytest
import redis as sync_redis
from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from bookgen_events.connection import create_redis
from bookgen_events.events import encode, make_event
from bookgen_events.idempotency import script_call
from bookgen_events.producer import SyncProducer
from bookgen_events.scheduled_events import Cancelled

from ..support.events import progress
from ..support.waits import eventually


async def test_the_same_id_twice_appends_once(bus: EventBus) -> None:
    """A second emit of an id returns the first stream id and XLEN stays 1."""
    event = make_event(progress("1"))
    first = await bus.emit(event)
    again = await bus.emit(progress("1", id=event.id))
    assert again == first
    assert await bus.redis.xlen(bus.names.events) == 1


async def test_emit_many_with_repeats_inside_and_across_batches(bus: EventBus) -> None:
    """Repeats within one batch and of an earlier batch all map to the first stream ids."""
    a, b = make_event(progress("a")), make_event(progress("b"))
    first = await bus.emit(a)
    ids = await bus.emit_many([b, a, b, progress("c"), a])
    assert ids[1] == ids[4] == first and ids[0] == ids[2]
    assert len(set(ids)) == 3
    assert await bus.redis.xlen(bus.names.events) == 3


def test_sync_twin_is_idempotent_too(bus: EventBus, settings: Settings) -> None:
    """SyncProducer.emit and emit_many share the script: one entry per id."""
    client = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        producer = SyncProducer(client, settings)
        event = make_event(progress("s"))
        first = producer.emit(event)
        assert producer.emit_many([event, event]) == [first, first]
        assert client.xlen(producer.names.events) == 1
    finally:
        client.close()


async def test_the_window_expiring_frees_the_id(bare_bus: EventBus) -> None:
    """After IDEMPOTENCY_WINDOW the id is forgotten (its key expired) and appends again."""
    bus = EventBus(bare_bus.redis, prefix=bare_bus.names.prefix, idempotency_window_ms=300)
    event = make_event(progress("w"))
    first = await bus.emit(event)
    assert await bus.emit(event) == first
    ttl = await bus.redis.pttl(bus.names.idempotency(event.id))
    assert 0 < ttl <= 300

    async def forgotten() -> bool:
        return not await bus.redis.exists(bus.names.idempotency(event.id))

    await eventually(forgotten, 5, "the idempotency key to expire")
    second = await bus.emit(event)
    assert second != first
    assert await bus.redis.xlen(bus.names.events) == 2


async def test_concurrent_tasks_racing_one_id_append_once(bus: EventBus, redis_url: str) -> None:
    """50 tasks on 5 clients emitting the same id at once: one entry, one stream id for all."""
    clients: list[Redis] = [create_redis(redis_url) for _ in range(5)]
    try:
        buses = [EventBus(c, prefix=bus.names.prefix) for c in clients]
        event = make_event(progress("race"))
        ids = await asyncio.gather(*(buses[i % 5].emit(event) for i in range(50)))
    finally:
        for c in clients:
            await c.aclose()
    assert len(set(ids)) == 1
    assert await bus.redis.xlen(bus.names.events) == 1


def _emit_in_process(url: str, prefix: str, event_id: str, start: object, out: object) -> None:
    client = sync_redis.Redis.from_url(url, decode_responses=True)
    from bookgen_events.settings import load_settings

    settings = load_settings(redis_url=url, stream_prefix=prefix, _env_file=None)
    producer = SyncProducer(client, settings)
    start.wait()  # type: ignore[attr-defined]
    ids = [producer.emit(progress("p", id=event_id)) for _ in range(20)]
    out.put(ids)  # type: ignore[attr-defined]
    client.close()


def test_processes_racing_one_id_append_once(bus: EventBus, redis_url: str) -> None:
    """Three processes released together, each emitting the same id 20 times: one entry."""
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Event(), ctx.Queue()
    event_id = make_event(progress("p")).id
    procs = [
        ctx.Process(
            target=_emit_in_process, args=(redis_url, bus.names.prefix, event_id, start, out)
        )
        for _ in range(3)
    ]
    for p in procs:
        p.start()
    start.set()
    results = [out.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(10)
    assert len({i for ids in results for i in ids}) == 1
    client = sync_redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        assert client.xlen(bus.names.events) == 1
    finally:
        client.close()


async def test_a_lost_reply_retried_does_not_duplicate(bus: EventBus) -> None:
    """A script sent whose reply is lost with its connection, then sent again (what the
    connection-level retry does): the retry gets the first stream id, XLEN stays 1."""
    event = make_event(progress("retry"))
    emitter = bus._emitter
    keys, args = script_call(
        bus.names, [(event, encode(event, 65536))], maxlen=1000, window_ms=60_000
    )
    await bus.redis.script_load(emitter._script.script)
    conn = await bus.redis.connection_pool.get_connection()
    await conn.send_command("EVALSHA", emitter._script.sha, len(keys), *keys, *args)

    async def appended() -> bool:
        return await bus.redis.xlen(bus.names.events) == 1

    await eventually(appended, 5, "the first send to append")
    await conn.disconnect()  # its reply is never read
    [(first, _)] = await bus.range()
    assert await bus.emit(event) == first
    assert await bus.redis.xlen(bus.names.events) == 1


@pytest.mark.parametrize("window", ["0", "-1s", "soon"])
def test_a_bad_window_names_the_variable(window: str) -> None:
    """IDEMPOTENCY_WINDOW must be a positive duration; the error names it."""
    from bookgen_events import load_settings
    from bookgen_events.errors import ConfigError

    with pytest.raises(ConfigError, match="IDEMPOTENCY_WINDOW"):
        load_settings(idempotency_window=window, _env_file=None)


async def test_sync_twin_writes_where_a_partitioned_bus_reads(
    bare_bus: EventBus, settings: Settings
) -> None:
    """STREAM_PARTITIONS=3: SyncProducer sends each event to its partition's stream (the
    async bus's names), once per id, and cancels a held one wherever it is."""
    partitioned = settings.model_copy(update={"stream_partitions": 3})
    bus = EventBus(bare_bus.redis, prefix=bare_bus.names.prefix, partitions=3)
    client = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        producer = SyncProducer(client, partitioned)
        events = [make_event(progress(f"job{i}")) for i in range(12)]
        ids = producer.emit_many([*events, events[0]])
        assert ids[-1] == ids[0] and all(ids)  # (stream ids repeat across partitions)
        later = make_event(progress("job7", deliver_at=datetime.now(UTC) + timedelta(hours=1)))
        assert producer.emit(later) == ""
        assert producer.cancel(later.id) is Cancelled.CANCELLED
    finally:
        client.close()
    found = {json.loads(f["event"])["id"] for part in bus.partitions for _, f in await part.range()}
    assert found == {e.id for e in events}
    assert sum([await part.length() for part in bus.partitions]) == 12
    assert sum([await part.length() > 0 for part in bus.partitions]) >= 2
