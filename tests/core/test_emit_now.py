"""The two emit scripts agree: ``emit_now.lua`` (no event of the call has a deliver_at) and
``emit_many.lua`` (some have) see the same idempotency keys, whichever wrote them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bookgen_events import EventBus
from bookgen_events.events import make_event
from bookgen_events.idempotency import HELD

from ..support.events import progress


def _in(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


async def test_a_held_id_emitted_again_without_deliver_at_stays_held(bus: EventBus) -> None:
    """Held by emit_many.lua, then the same id through emit_now.lua (one and many): HELD,
    nothing appended, still held once."""
    held = make_event(progress("h", deliver_at=_in(3600)))
    assert await bus.emit(held) == HELD
    plain = progress("h", id=held.id)  # the same id, no deliver_at
    assert await bus.emit(plain) == HELD
    assert await bus.emit_many([plain, progress("other")]) == [HELD, await _last_id(bus)]
    assert await bus.length() == 1  # only "other"
    assert await bus.scheduled_events.count() == 1


async def test_an_appended_id_emitted_again_with_deliver_at_is_not_held(bus: EventBus) -> None:
    """Appended by emit_now.lua, then the same id with a deliver_at ahead (emit_many.lua):
    the first stream id, nothing held."""
    event = make_event(progress("a"))
    first = await bus.emit(event)
    assert first
    later = progress("a", id=event.id, deliver_at=_in(3600))
    assert await bus.emit(later) == first
    assert await bus.emit_many([later, later]) == [first, first]
    assert await bus.length() == 1
    assert await bus.scheduled_events.count() == 0


async def test_a_batch_mixing_held_and_now_events(bus: EventBus) -> None:
    """One deliver_at in a batch sends the whole batch through emit_many.lua: the others are
    appended at once, in order, each once, repeats of them map to their first ids."""
    now = [make_event(progress(str(i))) for i in range(3)]
    held = progress("x", deliver_at=_in(3600))
    ids = await bus.emit_many([now[0], held, now[1], now[0], now[2]])
    assert ids[1] == HELD and ids[3] == ids[0]
    assert [ids[0], ids[2], ids[4]] == [entry_id for entry_id, _ in await bus.range()]
    assert await bus.emit_many(now) == [ids[0], ids[2], ids[4]]
    assert await bus.length() == 3 and await bus.scheduled_events.count() == 1


async def _last_id(bus: EventBus) -> str:
    [(entry_id, _)] = await bus.redis.xrevrange(bus.names.events, count=1)
    return entry_id  # type: ignore[no-any-return]
