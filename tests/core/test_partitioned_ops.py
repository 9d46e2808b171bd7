"""Operator commands over STREAM_PARTITIONS=3 on plain Redis: status per partition and
summed, tail, replay into each event's own partition, dead letters of every partition
(listed, redriven, purged), in the core APIs and through the CLI."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from redis.asyncio import Redis

from bookgen_events import EventBus, Settings
from bookgen_events.ops import status, tail
from bookgen_events.outcomes import DeadLetter
from bookgen_events.partitions import partition_of_key, partition_tag
from bookgen_events.replay import replay

from ..support.events import progress
from ..support.processes import cli

N = 3


@pytest.fixture
async def pbus(redis: Redis, settings: Settings) -> EventBus:
    bus = EventBus.from_settings(redis, settings.model_copy(update={"stream_partitions": N}))
    await bus.check_layout()
    for part in bus.partitions:
        await part.ensure_group("webhook", start="0")
    return bus


def _jobs() -> list[str]:
    """Six jobs, two in each partition."""
    jobs: list[str] = []
    for i in range(100):
        job = f"op-{i}"
        if sum(partition_of_key(j, N) == partition_of_key(job, N) for j in jobs) < 2:
            jobs.append(job)
        if len(jobs) == 2 * N:
            return jobs
    raise AssertionError("CRC-32 spread")


async def _letter(bus: EventBus, p: int, event_id: str) -> None:
    part = bus.partitions[p]
    event = json.dumps(progress(f"dead-{p}", id=event_id) | {"type": "progress_update"})
    letter = DeadLetter("webhook", "1-0", "gave up", 3, event_id, "https://h.example/x", event)
    await bus.redis.xadd(part.names.dlq("webhook"), letter.to_fields())


async def test_status_sums_partitions_and_lists_each(pbus: EventBus) -> None:
    jobs = _jobs()
    await pbus.emit_many([progress(job) for job in jobs for _ in range(2)])  # 4 a partition
    for p, part in enumerate(pbus.partitions):
        await part.read_group("webhook", "c1", count=p + 1, block_ms=None)  # p+1 pending
    await _letter(pbus, 2, "dead-2a")
    report = await status(pbus)
    rows = {r["partition"]: r["events"] for r in report["partitions"]}
    assert sorted(rows) == [0, 1, 2]
    for p, stream in rows.items():
        group = next(g for g in stream["groups"] if g["group"] == "webhook")
        assert (stream["length"], group["pending"], group["lag"]) == (4, p + 1, 4 - (p + 1))
    group = next(g for g in report["events"]["groups"] if g["group"] == "webhook")
    assert (report["events"]["length"], group["pending"], group["lag"]) == (12, 6, 6)
    assert group["consumers"] == [
        {"name": "c1", "pending": 6, "idle_ms": group["consumers"][0]["idle_ms"]}
    ]
    assert report["dead_letters"]["webhook"] == 1


async def test_tail_reads_every_partition(pbus: EventBus) -> None:
    jobs = _jobs()
    ids = await pbus.emit_many([progress(job) for job in jobs])
    everything = [(p, i) async for p, i, _ in await tail(pbus, start="0-0")]
    assert sorted(i for _, i in everything) == sorted(ids)
    assert {p for p, _ in everything} == {0, 1, 2}
    newest = [i async for _, i, _ in await tail(pbus, count=4)]
    assert newest == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))[-4:]

    following = await tail(pbus, follow=True)  # from now: only what comes next
    later = await pbus.emit_many([progress(job) for job in jobs])
    seen = []
    async for _, entry_id, _ in following:
        seen.append(entry_id)
        if len(seen) == len(later):
            break
    await following.aclose()  # type: ignore[attr-defined]
    assert sorted(seen) == sorted(later)


async def test_replay_schedules_each_event_in_its_partition(pbus: EventBus) -> None:
    jobs = _jobs()
    await pbus.emit_many([progress(job) for job in jobs])
    result = await replay(pbus, "webhook", "0", recipients=lambda e: ["x"])
    assert (result.scanned, result.matched, result.scheduled) == (6, 6, 6)
    sizes = [await pbus.redis.zcard(part.names.scheduled("webhook")) for part in pbus.partitions]
    assert sizes == [2, 2, 2]


async def test_dead_letters_of_every_partition(pbus: EventBus) -> None:
    for p in range(N):
        await _letter(pbus, p, f"ev-{p}")
        await _letter(pbus, p, f"ev-{p}b")
    letters = await pbus.all_dead_letters.letters("webhook")
    assert len(letters) == 6 and all(i.split(":")[0] in "012" for i, _ in letters)
    by_event = {d.event_id: i for i, d in letters}
    # Redrive by a qualified id and by an event id: each into its own partition's set.
    count, poison = await pbus.all_dead_letters.redrive("webhook", [by_event["ev-1"], "ev-2"])
    assert (count, poison) == (2, [])
    sizes = [await pbus.redis.zcard(part.names.scheduled("webhook")) for part in pbus.partitions]
    assert sizes == [0, 1, 1]
    assert await pbus.all_dead_letters.purge("webhook", [by_event["ev-0"]]) == 1
    left = Counter(d.event_id for _, d in await pbus.all_dead_letters.letters("webhook"))
    assert left == Counter(["ev-0b", "ev-1b", "ev-2b"])
    assert await pbus.all_dead_letters.purge("webhook") == 3
    assert await pbus.all_dead_letters.letters("webhook") == []


async def test_cli_status_tail_and_dlq_over_partitions(
    cli_env: dict[str, str], pbus: EventBus
) -> None:
    env = {**cli_env, "STREAM_PARTITIONS": str(N)}
    jobs = _jobs()
    ids = await pbus.emit_many([progress(job) for job in jobs])
    await _letter(pbus, 1, "ev-cli")
    human = cli(env, "status")
    assert human.returncode == 0 and "partition" in human.stdout, human.stderr
    assert all(f"{{{partition_tag(p, N)}}}:events" in human.stdout for p in range(N))
    lines = [
        json.loads(x) for x in cli(env, "tail", "--from", "0", "--no-follow").stdout.splitlines()
    ]
    assert sorted(x["stream_id"] for x in lines) == sorted(ids)
    assert {x["partition"] for x in lines} == {0, 1, 2}
    ((dlq_id, _),) = await pbus.all_dead_letters.letters("webhook")
    assert dlq_id.startswith("1:")
    done = cli(env, "dlq", "webhook", "--redrive", "--id", dlq_id)
    assert done.returncode == 0, done.stderr
    assert await pbus.redis.zcard(pbus.partitions[1].names.scheduled("webhook")) == 1
