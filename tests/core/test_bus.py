"""The bus's stream operations, the schedule and the dead letters, one by one on a real Redis."""

from __future__ import annotations

import pytest

from bookgen_events import EventBus
from bookgen_events.commit import Commit
from bookgen_events.events import decode, make_event
from bookgen_events.outcomes import DeadLetter, Outcome, now_ms
from bookgen_events.schedule import Scheduled
from tests.support.events import progress


async def test_emit_many_appends_in_order_and_range_reads_back(bus: EventBus) -> None:
    ids = await bus.emit_many([progress(str(i)) for i in range(5)])
    entries = await bus.range()
    assert [i for i, _ in entries] == ids and await bus.length() == 5
    assert [decode(f).job_id for _, f in entries] == ["0", "1", "2", "3", "4"]
    assert [i for i, _ in await bus.revrange(count=2)] == ids[:2:-1][:2]


async def test_a_group_reads_new_entries_once_and_its_own_pending_again(bus: EventBus) -> None:
    ids = await bus.emit_many([progress(str(i)) for i in range(3)])
    first = await bus.read_group("webhook", "c1", count=10, block_ms=None)
    assert [i for i, _ in first] == ids
    assert await bus.read_group("webhook", "c1", count=10, block_ms=None) == []
    pending = await bus.read_group("webhook", "c1", count=10, block_ms=None, pending=True)
    assert [i for i, _ in pending] == ids  # unacked: still this consumer's


async def test_commit_writes_outcomes_and_acks_together(bus: EventBus) -> None:
    """One script: the outcome is on the deliveries stream and the entry left the PEL."""
    (entry_id,) = await bus.emit_many([progress("c")])
    [(read_id, fields)] = await bus.read_group("webhook", "c1", count=1, block_ms=None)
    assert read_id == entry_id
    event = decode(fields)
    outcome = Outcome(event.id, read_id, "webhook", "https://hooks.example.com/in",
                      "delivered", 1, True)  # fmt: skip
    acked = await bus.commit(
        "webhook", Commit([outcome.record()], [], [], [], [read_id]), "webhook"
    )
    assert acked == 1
    [(_, written)] = await bus.range(stream=bus.names.deliveries)
    assert Outcome.from_fields(written).event_id == event.id
    assert (await bus.redis.xpending(bus.names.events, "webhook"))["pending"] == 0


async def test_place_group_moves_a_group_back_to_backfill(bus: EventBus) -> None:
    ids = await bus.emit_many([progress(str(i)) for i in range(3)])
    await bus.read_group("webhook", "c1", count=10, block_ms=None)
    assert await bus.place_group("webhook", ids[0]) is False
    again = await bus.read_group("webhook", "c1", count=10, block_ms=None)
    assert [i for i, _ in again] == ids[1:]
    assert await bus.place_group("brand-new", "0") is True


async def test_the_schedule_leases_due_deliveries_and_hides_them_until_the_lease_ends(
    bus: EventBus,
) -> None:
    event = make_event(progress("s")).model_dump_json()
    now = now_ms()
    due = Scheduled(event, "1-0", 2, "https://hooks.example.com/in")
    later = Scheduled(event, "2-0", 1, None, "replay")
    assert await bus.scheduled.add("webhook", [(due, now - 10), (later, now + 60_000)]) == 2
    members, head = await bus.scheduled.claim_due("webhook", now_ms=now, lease_ms=500, limit=10)
    assert [Scheduled.loads(m) for m in members] == [due]
    assert head is not None and head >= now + 500  # the leased one now sorts after the lease
    again, _ = await bus.scheduled.claim_due("webhook", now_ms=now, lease_ms=500, limit=10)
    assert again == []  # leased: not offered twice
    await bus.scheduled.extend_lease("webhook", members, now + 10_000)
    expired, _ = await bus.scheduled.claim_due("webhook", now_ms=now + 1000, lease_ms=500, limit=10)
    assert expired == []  # the heartbeat kept it
    back, _ = await bus.scheduled.claim_due("webhook", now_ms=now + 10_001, lease_ms=500, limit=10)
    assert [Scheduled.loads(m) for m in back] == [due]  # its owner died: offered again


async def _dead_letter(bus: EventBus, job: str, *, poison: bool = False) -> str:
    event = make_event(progress(job))
    letter = DeadLetter(
        channel="webhook", entry_id="1-0", reason="HTTP 410", attempts=4, event_id=event.id,
        recipient="https://hooks.example.com/in",
        event="{not json" if poison else event.model_dump_json(), poison=poison,
    )  # fmt: skip
    return str(await bus.redis.xadd(bus.names.dlq("webhook"), letter.to_fields()))


async def test_dead_letters_list_redrive_and_purge(bus: EventBus) -> None:
    """Redrive schedules a letter now and removes it in one step; poison stays; purge deletes."""
    good = await _dead_letter(bus, "g")
    other = await _dead_letter(bus, "o")
    bad = await _dead_letter(bus, "p", poison=True)
    letters = await bus.dead_letters.letters("webhook")
    assert [i for i, _ in letters] == [good, other, bad]
    assert letters[0][1].reason == "HTTP 410" and letters[0][1].attempts == 4

    count, poison = await bus.dead_letters.redrive("webhook", [good, bad])
    assert (count, poison) == (1, [bad])
    assert [i for i, _ in await bus.dead_letters.letters("webhook")] == [other, bad]
    members, _ = await bus.scheduled.claim_due("webhook", now_ms=now_ms(), lease_ms=1, limit=10)
    (item,) = [Scheduled.loads(m) for m in members]
    assert (item.origin, item.recipient, item.attempt) == (
        "redrive",
        "https://hooks.example.com/in",
        1,
    )

    assert await bus.dead_letters.purge("webhook", [other]) == 1
    assert await bus.dead_letters.purge("webhook") == 1
    assert await bus.dead_letters.letters("webhook") == []


@pytest.mark.parametrize("stream", ["events", "deliveries"])
async def test_info_of_a_missing_stream_is_none_not_an_error(
    bare_bus: EventBus, stream: str
) -> None:
    assert await bare_bus.stream_info(getattr(bare_bus.names, stream)) is None
    assert await bare_bus.length(getattr(bare_bus.names, stream)) == 0
