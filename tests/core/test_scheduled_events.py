"""Scheduled events on a real Redis (SPEC 11): held until due, moved once, cancellable."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime, timedelta

import pytest

from bookgen_events import EventBus, NotificationService, Settings
from bookgen_events.errors import EventValidationError
from bookgen_events.events import make_event
from bookgen_events.idempotency import HELD
from bookgen_events.ops import status
from bookgen_events.producer import cancel
from bookgen_events.scheduled_events import Cancelled, count_in

from ..support.events import progress
from ..support.processes import cli, one_line
from ..support.waits import eventually


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_a_future_event_is_held_then_moved_with_its_id(bus: EventBus) -> None:
    """Held: nothing in the stream and emit returns HELD (again for a repeat); once due, one
    move appends it with its own id, and a repeat emit then returns that stream id."""
    event = make_event(progress("s", deliver_at=_in(0.3)))
    assert await bus.emit(event) == HELD
    assert await bus.emit(event) == HELD
    assert await bus.length() == 0 and await bus.scheduled_events.count() == 1
    assert await bus.scheduled_events.move_due() == []  # not due yet

    async def moved() -> list[str]:
        return await bus.scheduled_events.move_due()

    [stream_id] = await eventually(moved, 5, "the event to fall due")
    [(entry_id, fields)] = await bus.range()
    assert entry_id == stream_id and json.loads(fields["event"])["id"] == event.id
    assert await bus.emit(event) == stream_id
    assert await bus.scheduled_events.count() == 0
    assert await bus.redis.hlen(bus.names.held[1]) == 0


async def test_a_past_deliver_at_is_appended_at_once(bus: EventBus) -> None:
    """deliver_at in the past: emit appends it like any event."""
    stream_id = await bus.emit(progress("p", deliver_at=_in(-60)))
    assert stream_id and await bus.length() == 1
    assert await bus.scheduled_events.count() == 0


def test_deliver_at_is_normalised_to_utc_and_validated() -> None:
    """Naive means UTC, an offset is converted; garbage or a date years ahead names the field."""
    naive = make_event(progress("n", deliver_at="2030-01-01T10:00:00"))
    paris = make_event(progress("n", deliver_at="2030-01-01T11:00:00+01:00"))
    assert naive.deliver_at == paris.deliver_at == datetime(2030, 1, 1, 10, tzinfo=UTC)
    assert paris.deliver_at is not None and paris.deliver_at.tzinfo == UTC
    with pytest.raises(EventValidationError, match="deliver_at"):
        make_event(progress("n", deliver_at="tomorrow"))
    from bookgen_events.events import encode

    far = make_event(progress("n", deliver_at=datetime.now(UTC) + timedelta(days=400)))
    with pytest.raises(EventValidationError, match="deliver_at"):
        encode(far, 65536)


async def test_cancel_held_sent_and_unknown(bus: EventBus) -> None:
    """cancel: a held event is removed (and its id free again); a sent one is ALREADY_SENT."""
    held = make_event(progress("c", deliver_at=_in(3600)))
    await bus.emit(held)
    assert await cancel(held.id, bus=bus) is Cancelled.CANCELLED
    assert await cancel(held.id, bus=bus) is Cancelled.UNKNOWN
    assert await bus.scheduled_events.count() == 0 and await bus.length() == 0
    sent = make_event(progress("c"))
    await bus.emit(sent)
    assert await cancel(sent.id, bus=bus) is Cancelled.ALREADY_SENT


async def test_service_takes_deliver_at_and_status_counts_what_waits(
    bus: EventBus, settings: Settings
) -> None:
    """NotificationService(deliver_at=) holds the event; status shows it as scheduled."""
    service = NotificationService(bus, settings=settings)
    assert await service.send_progress_update("9", 5, "later", deliver_at=_in(3600)) == HELD
    await service.send_status_change("9", "a", "b", deliver_at=_in(3600))
    assert (await status(bus))["scheduled_events"] == 2
    [first, second] = await bus.scheduled_events.list()
    assert first.event["type"] == "progress_update" and second.event["type"] == "status_change"


async def test_a_mover_sigkilled_mid_move_loses_and_duplicates_nothing(
    bus: EventBus, redis_url: str
) -> None:
    """3,000 due events; a mover process racing this one is SIGKILLed mid-way: every event
    is appended exactly once, with its own id, and nothing stays held."""
    events = [make_event(progress(str(i), deliver_at=_in(0.2))) for i in range(3000)]
    await bus.emit_many(events)
    await asyncio.sleep(0.25)  # waiting for the clock itself: the events fall due at +0.2 s
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.core.mover_proc", redis_url, bus.names.prefix, "2000"
    )
    try:

        async def started() -> bool:
            return await bus.length() >= 200

        await eventually(started, 20, "the mover process to move some")
        await bus.scheduled_events.move_due(limit=50)  # a second mover, meanwhile
    finally:
        child.kill()
        await child.wait()
    assert await bus.scheduled_events.count() > 0, "some are still held when the kill lands"
    while await bus.scheduled_events.move_due():
        pass
    ids = [json.loads(f["event"])["id"] for _, f in await bus.range()]
    assert len(ids) == 3000 and set(ids) == {e.id for e in events}
    assert await bus.scheduled_events.count() == 0
    assert await bus.redis.hlen(bus.names.held[1]) == 0


def test_cli_scheduled_and_cancel(cli_env: dict[str, str], settings: Settings) -> None:
    """`scheduled --json` lists what waits; `cancel ID` exits 0, or 1 with one line when the
    event was already sent."""
    import redis as sync_redis

    from bookgen_events.producer import SyncProducer

    client = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        producer = SyncProducer(client, settings)
        held = make_event(progress("x", deliver_at=_in(3600)))
        producer.emit(held)
        sent = make_event(progress("y"))
        producer.emit(sent)
    finally:
        client.close()
    listed = cli(cli_env, "scheduled", "--json")
    assert listed.returncode == 0, listed.stderr
    body = json.loads(listed.stdout)
    assert body["count"] == 1 and body["events"][0]["event_id"] == held.id
    assert cli(cli_env, "cancel", held.id).returncode == 0
    late = cli(cli_env, "cancel", sent.id)
    assert late.returncode == 1 and "already sent" in one_line(late.stderr)


async def test_partitions_each_hold_and_move_their_own(bare_bus: EventBus) -> None:
    """With STREAM_PARTITIONS=3, events of several jobs are held in their partitions; one
    mover per partition moves them, and cancel and count find them by id alone."""
    bus = EventBus(bare_bus.redis, prefix=bare_bus.names.prefix, partitions=3)
    parts = [part.scheduled_events for part in bus.partitions]
    events = [make_event(progress(f"job{i}", deliver_at=_in(0.3))) for i in range(12)]
    await bus.emit_many(events)
    assert await count_in(parts) == 12 and sum([await p.count() > 0 for p in parts]) >= 2
    assert await cancel(events[0].id, bus=bus) is Cancelled.CANCELLED

    async def all_moved() -> bool:
        for part in parts:
            await part.move_due()
        return await count_in(parts) == 0

    await eventually(all_moved, 5, "every partition's events to be moved")
    appended = sum([await part.length() for part in bus.partitions])
    assert appended == 11
    assert await cancel(events[1].id, bus=bus) is Cancelled.ALREADY_SENT
