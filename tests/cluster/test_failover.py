"""A master killed mid-run on a cluster with replicas: its replica is promoted, producers,
consumers and the commit script carry on through the redirects, and nothing is lost."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bookgen_events import EventBus, Settings
from bookgen_events.connection import create_redis
from tests.cluster.test_partitions_on_cluster import _consuming
from tests.support.cluster import LocalCluster
from tests.support.events import progress
from tests.support.waits import eventually
from tests.support.webhooks import Receiver


@pytest.mark.slow
async def test_master_killed_mid_run_loses_nothing(
    tmp_path: Path, webhook_settings: Settings, receiver: Receiver
) -> None:
    """600 events of 30 jobs, a master killed after 210 of them while the consumers work and
    its replica promoted: every event whose emit returned is delivered, each job's first
    deliveries in emitted order. (The producer waits for the promotion here; the test below
    keeps emitting through it.)"""
    cluster = await asyncio.to_thread(LocalCluster(tmp_path / "cluster", replicas=1).start)
    redis = create_redis(cluster.url)
    try:
        settings = webhook_settings.model_copy(
            update={"redis_url": cluster.url, "stream_partitions": 6, "claim_idle_ms": 1000}
        )
        bus = EventBus.from_settings(redis, settings)
        await bus.check_layout()
        for part in bus.partitions:
            await part.ensure_group("webhook")
        jobs = [f"job-{i}" for i in range(30)]
        emitted: list[str] = []
        uncertain: list[str] = []

        async def produce() -> None:
            for seq in range(20):
                batch = [progress(j, receiver.url(j), id=f"{j}.{seq:03d}") for j in jobs]
                try:
                    await bus.emit_many(batch)
                except Exception:  # mid-failover: it may or may not have been written
                    uncertain.extend(e["id"] for e in batch)
                    continue
                emitted.extend(e["id"] for e in batch)
                if seq == 6:  # the consumers' masters die under them, mid-run
                    await asyncio.to_thread(kill_a_master)

        def kill_a_master() -> None:
            victim = cluster.primaries()[0]
            cluster.kill(victim)
            cluster.wait_promoted(victim)

        async with _consuming(bus, settings):
            await produce()
            await eventually(
                lambda: set(emitted) <= set(receiver.accepted), 60, "every emitted event delivered"
            )
        # An emit that failed mid-failover may or may not have been written: only those whose
        # emit returned are owed, and those are nearly all.
        assert len(emitted) + len(uncertain) == 600 and len(emitted) >= 540, len(uncertain)
        for job in jobs:
            first: list[str] = []
            for request in receiver.at(job):
                if request.webhook_id not in first:
                    first.append(request.webhook_id)
            assert first == sorted(first), job
    finally:
        await redis.aclose()
        await asyncio.to_thread(cluster.stop)


@pytest.mark.slow
async def test_emits_racing_a_failover_are_retried_and_delivered(
    tmp_path: Path, webhook_settings: Settings, receiver: Receiver
) -> None:
    """The producer keeps emitting while a master dies and its replica is promoted: emit
    retries through the promotion (idempotent, so a retry appends nothing twice), every
    emit returns a stream id, and every event whose emit returned is delivered.

    What stays possible is Redis's own: an append the dying master acknowledged but had not
    yet sent to its replica is gone after the promotion (asynchronous replication). The
    test reports such losses by name if they happen."""
    cluster = await asyncio.to_thread(LocalCluster(tmp_path / "cluster", replicas=1).start)
    redis = create_redis(cluster.url)
    try:
        settings = webhook_settings.model_copy(
            update={"redis_url": cluster.url, "stream_partitions": 6, "claim_idle_ms": 1000}
        )
        bus = EventBus.from_settings(redis, settings)
        await bus.check_layout()
        for part in bus.partitions:
            await part.ensure_group("webhook")
        jobs = [f"job-{i}" for i in range(30)]
        emitted: list[str] = []
        victim = cluster.primaries()[0]
        killing: asyncio.Task[None] | None = None

        def kill() -> None:
            cluster.kill(victim)
            cluster.wait_promoted(victim)

        async with _consuming(bus, settings):
            seq = 0
            while killing is None or not killing.done() or seq < 40:
                batch = [progress(j, receiver.url(j), id=f"{j}.{seq:03d}") for j in jobs]
                ids = await bus.emit_many(batch)
                assert all(isinstance(i, str) and i for i in ids), ids
                emitted.extend(e["id"] for e in batch)
                seq += 1
                if seq == 6:  # dies while the producer keeps going
                    killing = asyncio.create_task(asyncio.to_thread(kill))
                await asyncio.sleep(0)
            await killing
            try:
                await eventually(
                    lambda: set(emitted) <= set(receiver.accepted), 60, "every event delivered"
                )
            except Exception:
                lost = sorted(set(emitted) - set(receiver.accepted))
                raise AssertionError(f"{len(lost)} acknowledged emits lost: {lost[:30]}") from None
        for job in jobs:
            first: list[str] = []
            for request in receiver.at(job):
                if request.webhook_id not in first:
                    first.append(request.webhook_id)
            assert first == sorted(first), job
    finally:
        await redis.aclose()
        await asyncio.to_thread(cluster.stop)
