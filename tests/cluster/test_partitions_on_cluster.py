"""Partitions on a real 3-master cluster: per-job order at a receiver, everything accounted
for once, keys on every master, and each master's share of the stream commands."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from bookgen_events.consumer import Consumer
from bookgen_events.outcomes import Outcome
from bookgen_events.serving import partition_consumers
from consumers.webhook import open_channel
from tests.support.cluster import LocalCluster
from tests.support.events import progress
from tests.support.waits import eventually
from tests.support.webhooks import Receiver

PARTITIONS = 6


def _cluster_settings(settings: Settings, cluster: LocalCluster) -> Settings:
    return settings.model_copy(
        update={"redis_url": cluster.url, "stream_partitions": PARTITIONS, "stream_maxlen": 100_000}
    )


async def _bus(redis: Redis, settings: Settings) -> EventBus:
    bus = EventBus.from_settings(redis, settings)
    await bus.check_layout()
    for part in bus.partitions:
        await part.ensure_group("webhook")
    return bus


@contextlib.asynccontextmanager
async def _consuming(bus: EventBus, settings: Settings) -> AsyncIterator[list[Consumer]]:
    async with open_channel(settings) as channel:
        consumers = partition_consumers(bus, channel, settings)
        tasks = [asyncio.create_task(c.run()) for c in consumers]
        try:
            yield consumers
        finally:
            for consumer in consumers:
                consumer.stop()
            await asyncio.gather(*tasks)


async def _outcomes(bus: EventBus) -> list[Outcome]:
    out = []
    for part in bus.partitions:
        out += [Outcome.from_fields(f) for _, f in await part.range(stream=part.names.deliveries)]
    return out


def _interleaved(jobs: Sequence[str], per_job: int, receiver: Receiver) -> list[dict]:
    """Every job's events, sequence numbers rising per job, the jobs interleaved."""
    return [
        progress(job, receiver.url(job), id=f"{job}.{seq:03d}")
        for seq in range(per_job)
        for job in jobs
    ]


async def test_per_job_order_and_accounting_across_partitions(
    local_cluster: LocalCluster,
    cluster_redis: Redis,
    webhook_settings: Settings,
    receiver: Receiver,
) -> None:
    """300 events of 30 jobs over 6 partitions on 3 masters: each delivered once, every job's
    in emitted order at its endpoint, one outcome each, and partitions on every master."""
    settings = _cluster_settings(webhook_settings, local_cluster)
    bus = await _bus(cluster_redis, settings)
    jobs = [f"job-{i}" for i in range(30)]
    events = _interleaved(jobs, 10, receiver)
    ids = await bus.emit_many(events[:150])
    ids += [await bus.emit(e) for e in events[150:]]
    assert len(ids) == 300 and all(ids)
    async with _consuming(bus, settings):
        await eventually(lambda: sum(receiver.accepted.values()) >= 300, 30, "300 deliveries")
        outcomes = await eventually(lambda: _outcomes_when(bus, 300), 10, "300 outcomes written")
    assert sorted(receiver.accepted) == sorted(e["id"] for e in events)
    assert set(receiver.accepted.values()) == {1}
    for job in jobs:
        got = [r.webhook_id for r in receiver.at(job)]
        assert got == [f"{job}.{seq:03d}" for seq in range(10)], job
    assert sorted(o.event_id for o in outcomes) == sorted(e["id"] for e in events)
    assert {o.status for o in outcomes} == {"delivered"}
    # Every master holds partitions' streams.
    for node in local_cluster.primaries():
        with node.client() as client:
            assert list(client.scan_iter(match=f"{settings.stream_prefix}:*:events")), node


async def _outcomes_when(bus: EventBus, count: int) -> list[Outcome] | None:
    found = await _outcomes(bus)
    return found if len(found) >= count else None


def _stream_calls(cluster: LocalCluster) -> dict[int, int]:
    """Stream commands (X*, those scripts run included) served per master since the reset."""
    calls = {}
    for node in cluster.primaries():
        with node.client() as client:
            stats = client.info("commandstats")
        calls[node.port] = sum(
            int(v["calls"]) for k, v in stats.items() if k.startswith("cmdstat_x")
        )
    return calls


async def test_each_master_serves_its_share_of_stream_commands(
    local_cluster: LocalCluster, cluster_redis: Redis, webhook_settings: Settings
) -> None:
    """3,000 events of 600 jobs emitted and consumed: each master's share of the stream
    commands (INFO commandstats) is within 20 % of a third."""
    settings = _cluster_settings(webhook_settings, local_cluster)
    bus = await _bus(cluster_redis, settings)
    for node in local_cluster.primaries():
        with node.client() as client:
            client.config_resetstat()
    # No webhook_url: nothing to deliver, each entry is read and acked (the commit script).
    events = [
        {"type": "progress_update", "job_id": f"job-{i % 600}", "data": {"progress": 1.0}}
        for i in range(3000)
    ]
    await bus.emit_many(events)
    async with _consuming(bus, settings):

        async def drained() -> bool:
            for part in bus.partitions:
                groups = await part.groups_info()
                if not groups or groups[0]["lag"] != 0 or groups[0]["pending"] != 0:
                    return False
            return True

        await eventually(drained, 30, "every partition read and acked")
    calls = _stream_calls(local_cluster)
    total = sum(calls.values())
    for port, count in calls.items():
        assert abs(count / total - 1 / 3) <= 0.2 / 3, (port, calls)
