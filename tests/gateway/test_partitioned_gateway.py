"""The gateway over STREAM_PARTITIONS=3 on plain Redis: live delivery from every partition,
exact resume for user and job subscriptions (ids carry every partition's position)."""

from __future__ import annotations

from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from tests.support.partitioned_gateway import check_live_and_resume, running_gateway


async def test_live_and_exact_resume_over_three_partitions(
    redis: Redis, gateway_settings: Settings
) -> None:
    settings = gateway_settings.model_copy(update={"stream_partitions": 3})
    bus = EventBus.from_settings(redis, settings)
    await bus.check_layout()
    async with running_gateway(bus, settings) as gateway:
        await check_live_and_resume(bus, gateway)


async def test_a_plain_id_means_that_position_in_every_partition(
    redis: Redis, gateway_settings: Settings
) -> None:
    """``0-0`` (the live page's first visit) backfills a job from the start with N > 1; an id
    naming another number of partitions gets resync_required, then live."""
    from websockets.asyncio.client import connect

    from tests.support.events import live_progress
    from tests.support.gateway import recv_json, token

    settings = gateway_settings.model_copy(update={"stream_partitions": 3})
    bus = EventBus.from_settings(redis, settings)
    ids = [await bus.emit(live_progress("h", p)) for p in (1, 2)]
    await bus.emit(live_progress("elsewhere"))
    async with running_gateway(bus, settings) as gateway:
        url = {"job_id": "h", "token": token(jobs=("h",))}
        async with connect(gateway.ws(**url, last_event_id="0-0")) as ws:
            got = [await recv_json(ws), await recv_json(ws)]
        assert [m["progress"] for m in got] == [1.0, 2.0]
        assert [m["id"].split(".")[partition(bus, "h")] for m in got] == ids
        async with connect(gateway.ws(**url, last_event_id="1-0.2-0")) as ws:
            assert await recv_json(ws) == {"type": "resync_required"}
            live = await bus.emit(live_progress("h", 3))
            assert (await recv_json(ws))["id"].split(".")[partition(bus, "h")] == live


def partition(bus: EventBus, job: str) -> int:
    from bookgen_events.partitions import partition_of_key

    return partition_of_key(job, len(bus.partitions))
