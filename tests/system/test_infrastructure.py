"""The accounting invariant across gateway crashes, Redis restarts and a database outage."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.database import PgDatabase
from tests.support.waits import eventually

from .conftest import JOBS, OwnRedis, System, open_system
from .harness import CONSUMERS
from .reconcile import reconcile


def _watchers_caught_up(system: System) -> bool:
    return all(len(w.messages) >= len(system.job_stream_ids(w.job_id)) for w in system.watchers)


async def _grows(count: Callable[[], int], what: str, by: int = 10) -> None:
    start = count()
    await eventually(lambda: count() >= start + by, 15, what)


def _received(system: System) -> int:
    return sum(len(w.messages) for w in system.watchers)


async def kill_gateway_under_load(system: System, *, total: int, kills: int) -> None:
    """SIGKILL the gateway ``kills`` times while events flow, restarting it on its port after
    more events were emitted behind its back."""
    load = asyncio.create_task(system.emit_waves(total, wave=5, every=0.05))
    try:
        for _ in range(kills):
            await _grows(lambda: _received(system), "the watchers to get live events")
            await system.cluster.kill("gateway")
            await _grows(lambda: len(system.events), "events emitted while the gateway is down")
            system.cluster.start("gateway")
            await system.cluster.wait_gateway()
    finally:
        await load


async def _assert_exactly_in_order(system: System) -> None:
    await eventually(lambda: _watchers_caught_up(system), 20, "the watchers to catch up")
    for watcher in system.watchers:
        assert watcher.stream_ids() == system.job_stream_ids(watcher.job_id), (
            f"job {watcher.job_id}: gap, duplicate or reordering after resume"
        )
        assert watcher.connects >= 2 and watcher.resyncs == 0


async def test_sigkilled_gateway_clients_resume_without_gap(system: System) -> None:
    """WebSocket clients resuming by last_event_id on a restarted gateway get every event once, in order."""
    await kill_gateway_under_load(system, total=150, kills=1)
    await _assert_exactly_in_order(system)
    report = await system.settle()
    assert report.lost == 0, report.summary()
    await system.shut_down_cleanly()


@pytest.mark.slow
async def test_repeatedly_sigkilled_gateway_clients_resume_without_gap(system: System) -> None:
    """Five gateway SIGKILLs under a longer load: still every event once, in order, per client."""
    await kill_gateway_under_load(system, total=1500, kills=5)
    await _assert_exactly_in_order(system)
    report = await system.settle(within=60)
    assert report.lost == 0, report.summary()
    await system.shut_down_cleanly()


async def _restart_redis_mid_delivery(system: System, redis: OwnRedis, count: int) -> None:
    system.hooks.delay = 0.3  # deliveries are in flight when Redis goes away
    await system.emit(count)
    await eventually(lambda: system.delivered_at_least(0.2), 20, "some deliveries")
    await redis.stop()
    await asyncio.sleep(1.0)  # an outage long enough for every process to notice
    await redis.start()
    await system.bus.redis.connection_pool.disconnect()  # the test's own stale connections
    system.hooks.delay = 0.0


async def _restarts_on_aof(
    own_redis: OwnRedis, tmp_path: Path, prefix: str, rounds: int, count: int
) -> None:
    async with open_system(tmp_path, own_redis.url, prefix) as system:
        await system.cluster.start_all()
        system.watch()
        for _ in range(rounds):
            await _restart_redis_mid_delivery(system, own_redis, count)
            stored = await system.bus.length()
            assert stored == len(system.events), "the AOF lost acknowledged events"
        await system.emit(50)
        report = await system.settle(within=45)
        assert report.lost == 0, report.summary()
        assert report.db_mismatches == 0, report.summary()
        await system.shut_down_cleanly()


@pytest.mark.parametrize("own_redis", [True], indirect=True)
async def test_redis_restart_with_aof_loses_nothing_acknowledged(
    own_redis: OwnRedis, tmp_path: Path, prefix: str
) -> None:
    """Redis stopped and restarted on its AOF mid-delivery: every acknowledged event is delivered."""
    await _restarts_on_aof(own_redis, tmp_path, prefix, rounds=1, count=100)


@pytest.mark.slow
@pytest.mark.parametrize("own_redis", [True], indirect=True)
async def test_repeated_redis_restarts_with_aof_lose_nothing_acknowledged(
    own_redis: OwnRedis, tmp_path: Path, prefix: str
) -> None:
    """Three Redis restarts on the AOF, each mid-delivery of 400 events: nothing acknowledged lost."""
    await _restarts_on_aof(own_redis, tmp_path, prefix, rounds=3, count=400)


@pytest.mark.parametrize("own_redis", [False], indirect=True)
async def test_redis_restart_without_persistence_recovers(
    own_redis: OwnRedis, tmp_path: Path, prefix: str
) -> None:
    """Redis restarted empty: groups are recreated, new events flow in full, and the loss is told.

    The email consumer is down across the restart, so its share of the earlier events is
    unread when Redis forgets them: the reconciliation must report exactly that loss.
    """
    async with open_system(tmp_path, own_redis.url, prefix) as system:
        await system.cluster.start_all()
        system.watch()
        await system.cluster.kill("email")
        await _restart_redis_mid_delivery(system, own_redis, 100)
        before = list(system.events)
        system.cluster.start("email")

        async def groups_recreated() -> bool:
            return {g["name"] for g in await system.bus.groups_info()} >= set(CONSUMERS)

        async def logger_reads_outcomes() -> bool:
            groups = await system.bus.groups_info(system.bus.names.deliveries)
            return "logger" in {g["name"] for g in groups}

        # The restarted email consumer creates its group at the end of the stream (SPEC 11):
        # events emitted before that are not its to deliver, so wait for it first.
        await eventually(groups_recreated, 20, "the consumer groups to be recreated")
        await system.emit(1)  # the deliveries stream exists again once an outcome is written
        await eventually(logger_reads_outcomes, 20, "the logger's outcome group")
        after = list(system.events[len(before) :]) + await system.emit(49)
        report = await system.settle(within=45, events=after)
        assert report.lost == 0, report.summary()
        assert report.db_mismatches == 0, report.summary()

        seen = system.seen()
        never = {
            "webhook": sum(1 for e in before if not seen.webhook[e.id]),
            "email": sum(1 for e in before for r in e.emails if not seen.email[(e.id, r)]),
            "websocket": sum(1 for e in before if not seen.websocket[e.id]),
        }
        gone = await reconcile(system.bus, before, seen, database_url=None, watched_jobs=JOBS)
        print(
            f"restart without persistence: of {len(before)} earlier events, never delivered "
            f"{never}; delivery records gone with Redis: {gone.lost}"
        )
        assert never["email"] == gone.channels["email"].expected > 0
        assert len(gone.channels["email"].lost) == never["email"], "an unread loss went unreported"
        await system.shut_down_cleanly()


async def test_database_outage_is_ridden_out(
    tmp_path: Path, redis_url: str, prefix: str, pg_database: PgDatabase
) -> None:
    """PostgreSQL refusing connections for a while: deliveries go on, the log catches up in full."""
    async with open_system(tmp_path, redis_url, prefix, database_url=pg_database.url) as system:
        await system.cluster.start_all()
        system.watch()
        await system.emit(30)
        assert (await system.settle()).settled
        pg_database.block()
        try:
            outage = await system.emit(60)
            await eventually(
                lambda: all(system.hooks.accepted[e.id] for e in outage), 15, "webhooks to flow"
            )

            async def logger_held() -> bool:
                names = system.bus.names
                for stream in (names.events, names.deliveries):
                    groups = {g["name"]: g for g in await system.bus.groups_info(stream)}
                    if int(groups["logger"]["pending"]) > 0:
                        return True
                return False

            await eventually(logger_held, 10, "the logger to hold its batch")
            report = await reconcile(
                system.bus, outage, system.seen(), database_url=pg_database.url
            )
            assert report.db_mismatches > 0, "the database was not really unavailable"
        finally:
            pg_database.unblock()
        report = await system.settle(within=40)
        assert report.lost == 0, report.summary()
        assert report.db_mismatches == 0, report.summary()
        await system.shut_down_cleanly()
