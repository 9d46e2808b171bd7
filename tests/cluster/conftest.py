"""A 3-master local cluster for the whole session (the embedded ``valkey-server`` in cluster
mode, started here: never skipped for want of one), and per-test clients on it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis

from bookgen_events.connection import create_redis
from tests.support.cluster import LocalCluster


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """Three masters, no replicas: the cluster tests that kill nothing share it."""
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster")).start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
async def cluster_redis(local_cluster: LocalCluster, prefix: str) -> AsyncIterator[Redis]:
    """A cluster client; the test's keys (``prefix``) are deleted afterwards on every master."""
    client = create_redis(local_cluster.url)
    try:
        yield client
    finally:
        for node in local_cluster.primaries():
            with node.client() as sync:
                keys = list(sync.scan_iter(match=f"{prefix}:*", count=1000))
                for key in keys:
                    sync.delete(key)
        await client.aclose()
