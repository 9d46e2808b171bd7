"""The sync producer on a real 3-master cluster with 6 partitions: the default client is a
cluster client, each event lands in its partition (once per id), a held one is cancelled."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from bookgen_events import EventBus, Settings, producer
from bookgen_events.connection import is_cluster
from bookgen_events.partitions import partition_of_key
from bookgen_events.scheduled_events import Cancelled
from tests.support.cluster import LocalCluster
from tests.support.events import progress

N = 6


async def test_sync_producer_partitions_on_a_cluster(
    local_cluster: LocalCluster, cluster_redis: Redis, settings: Settings
) -> None:
    settings = settings.model_copy(update={"redis_url": local_cluster.url, "stream_partitions": N})
    bus = EventBus.from_settings(cluster_redis, settings)
    producer.configure(settings=settings)
    try:
        events = [progress(f"sj-{i}", id=f"sync-{i}") for i in range(24)]
        ids = producer.emit_many_sync(events)
        assert is_cluster(producer._sync.get().client)
        assert producer.emit_many_sync(events) == ids  # idempotent: nothing appended twice
        assert producer.emit_sync(events[0]) == ids[0]
        for p, part in enumerate(bus.partitions):
            mine = [e["id"] for e in events if partition_of_key(e["job_id"], N) == p]
            assert len(await part.range()) == len(mine), f"partition {p}"
        assert sum([await part.length() for part in bus.partitions]) == 24
        later = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        assert producer.emit_sync(progress("sj-held", id="held-1", deliver_at=later)) == ""
        assert producer.cancel_sync("held-1") is Cancelled.CANCELLED
        assert producer.cancel_sync("held-1") is Cancelled.UNKNOWN
    finally:
        producer.configure()
