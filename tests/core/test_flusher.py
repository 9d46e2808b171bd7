"""Flusher: a consumer's results written behind, one atomic commit per flush, on a real Redis."""

from __future__ import annotations

import asyncio

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from bookgen_events import EventBus
from bookgen_events.commit import Commit
from bookgen_events.flusher import Flusher
from bookgen_events.logs import get_logger
from bookgen_events.outcomes import Outcome

LOG = get_logger("tests.flusher")
EVENT = '{"type":"progress_update"}'


def delivered(i: int, entry_id: str) -> Commit:
    """The results of one delivered entry: its outcome and its ack."""
    outcome = Outcome(f"ev-{i}", entry_id, "webhook", "r", "delivered", 1, True, at_ms=1)
    return Commit([outcome.record()], [], [], [], [entry_id])


async def pending_entries(bus: EventBus, n: int) -> list[str]:
    """``n`` entries of the webhook group, read and not acked yet."""
    for _ in range(n):
        await bus.redis.xadd(bus.names.events, {"event": EVENT})
    entries = await bus.read_group("webhook", "c", count=n, block_ms=None)
    return [entry_id for entry_id, _ in entries]


async def test_results_are_written_in_order_and_acked(bus: EventBus) -> None:
    """What deliveries record is written by the background task, outcomes with their acks."""
    written: list[tuple[Commit, bool]] = []
    flusher = Flusher(
        bus, "webhook", "webhook", written=lambda c, r: written.append((c, r)), log=LOG
    )
    ids = await pending_entries(bus, 3)
    flusher.start()
    for i, entry_id in enumerate(ids):
        flusher.record(delivered(i, entry_id))
    await flusher.close()
    outcomes = await bus.range(stream=bus.names.deliveries)
    assert [fields["entry_id"] for _, fields in outcomes] == ids
    assert await bus.redis.xpending(bus.names.events, "webhook") == {
        "pending": 0, "min": None, "max": None, "consumers": []
    }  # fmt: skip
    assert all(recorded for _, recorded in written)
    assert [a for commit, _ in written for a in commit.acks] == ids
    assert not flusher.buffer


async def test_results_are_kept_in_order_while_redis_refuses(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write puts the results back before newer ones and retries until it lands."""
    ids = await pending_entries(bus, 2)
    real_commit, failures = bus.commit, [2]

    async def flaky(*args: object, **kwargs: object) -> int:
        if failures[0]:
            failures[0] -= 1
            flusher.record(delivered(1, ids[1]))  # a newer result arrives meanwhile
            raise RedisConnectionError("down")
        return await real_commit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(bus, "commit", flaky)
    flusher = Flusher(bus, "webhook", "webhook", written=lambda c, r: None, log=LOG)
    flusher.record(delivered(0, ids[0]))
    await asyncio.wait_for(flusher.flush(), 5)
    outcomes = await bus.range(stream=bus.names.deliveries)
    assert [fields["entry_id"] for _, fields in outcomes] == [ids[0], ids[1], ids[1]]


async def test_a_lost_group_is_recreated_and_its_work_released(
    bus: EventBus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NOGROUP from the commit: the commit is reported not recorded and the group recreated."""
    ids = await pending_entries(bus, 1)
    await bus.redis.xgroup_destroy(bus.names.events, "webhook")

    async def nogroup(*args: object, **kwargs: object) -> int:
        monkeypatch.undo()
        raise ResponseError("NOGROUP No such key or consumer group")

    monkeypatch.setattr(bus, "commit", nogroup)
    written: list[bool] = []
    flusher = Flusher(bus, "webhook", "webhook", written=lambda c, r: written.append(r), log=LOG)
    flusher.record(delivered(0, ids[0]))
    await flusher.flush()
    assert written == [False]
    assert not flusher.buffer
    assert "webhook" in [g["name"] for g in await bus.groups_info()]
