"""The gateway on a real 3-master cluster with 6 partitions: live delivery from every
partition, exact resume for user and job subscriptions."""

from __future__ import annotations

from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from tests.support.cluster import LocalCluster
from tests.support.partitioned_gateway import check_live_and_resume, running_gateway


async def test_gateway_reads_every_partition_and_resumes_exactly(
    local_cluster: LocalCluster, cluster_redis: Redis, gateway_settings: Settings
) -> None:
    settings = gateway_settings.model_copy(
        update={"redis_url": local_cluster.url, "stream_partitions": 6}
    )
    bus = EventBus.from_settings(cluster_redis, settings)
    await bus.check_layout()
    async with running_gateway(bus, settings) as gateway:
        await check_live_and_resume(bus, gateway)
