"""Operator APIs on a real 3-master cluster with 6 partitions: status (INFO from every
node), tail, replay and dead letters, each partition's keys in its own slot."""

from __future__ import annotations

import json

from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from bookgen_events.ops import status, tail
from bookgen_events.outcomes import DeadLetter
from bookgen_events.replay import replay
from tests.support.cluster import LocalCluster
from tests.support.events import progress

N = 6


async def test_status_tail_replay_and_dead_letters_on_a_cluster(
    local_cluster: LocalCluster, cluster_redis: Redis, settings: Settings
) -> None:
    settings = settings.model_copy(update={"redis_url": local_cluster.url, "stream_partitions": N})
    bus = EventBus.from_settings(cluster_redis, settings)
    await bus.check_layout()
    for part in bus.partitions:
        await part.ensure_group("webhook", start="0")
    ids = await bus.emit_many([progress(f"cj-{i}") for i in range(30)])
    report = await status(bus, settings)
    assert len(report["partitions"]) == N and report["events"]["length"] == 30
    group = next(g for g in report["events"]["groups"] if g["group"] == "webhook")
    assert (group["lag"], group["pending"]) == (30, 0)
    assert report["redis"]["used_memory"] > 0 and report["redis"]["version"]

    assert sorted([i async for _, i, _ in await tail(bus, start="0-0")]) == sorted(ids)
    result = await replay(bus, "webhook", "0", recipients=lambda e: ["x"])
    assert result.scheduled == 30
    scheduled = [await bus.redis.zcard(p.names.scheduled("webhook")) for p in bus.partitions]
    assert sum(scheduled) == 30 and all(scheduled)

    for p, part in enumerate(bus.partitions):
        event = json.dumps(progress(f"dead-{p}", id=f"ev-{p}") | {"type": "progress_update"})
        letter = DeadLetter("webhook", "1-0", "gave up", 3, f"ev-{p}", "https://h.example/", event)
        await bus.redis.xadd(part.names.dlq("webhook"), letter.to_fields())
    assert len(await bus.all_dead_letters.letters("webhook")) == N
    assert await bus.all_dead_letters.redrive("webhook") == (N, [])
    after = [await bus.redis.zcard(p.names.scheduled("webhook")) for p in bus.partitions]
    assert [a - s for a, s in zip(after, scheduled, strict=True)] == [1] * N
    assert await bus.all_dead_letters.letters("webhook") == []


async def test_stream_reads_need_no_command_getkeys(
    local_cluster: LocalCluster, cluster_redis: Redis, settings: Settings
) -> None:
    """XREADGROUP and XREAD go straight to their slot's node: no COMMAND GETKEYS round trip
    to some node first (redis-py's default for commands whose keys move)."""
    settings = settings.model_copy(update={"redis_url": local_cluster.url, "stream_partitions": N})
    bus = EventBus.from_settings(cluster_redis, settings)
    for part in bus.partitions:
        await part.ensure_group("webhook", start="0")
    await bus.emit_many([progress(f"gk-{i}") for i in range(60)])

    def getkeys() -> int:
        total = 0
        for node in local_cluster.primaries():
            with node.client() as sync:
                stats = sync.info("commandstats")
            total += int(stats.get("cmdstat_command|getkeys", {}).get("calls", 0))
        return total

    before = getkeys()
    for part in bus.partitions:
        for _ in range(5):
            await part.read_group("webhook", "c1", count=5, block_ms=None)
        assert len(await part.read("0-0", count=100)) > 0
    assert getkeys() == before
