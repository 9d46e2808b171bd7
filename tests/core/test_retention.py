"""Retention by age on a real Redis (SPEC 11): streams and dead letters trimmed by age,
never past what a consumer group has still to read or settle; status shows what is kept."""

from __future__ import annotations

from bookgen_events import EventBus, Settings
from bookgen_events.ops import status
from bookgen_events.outcomes import now_ms
from bookgen_events.retention import trim_dead_letters, trim_once, trim_streams

DAY_MS = 86_400_000


async def _aged(bus: EventBus, stream: str, ages_days: list[float]) -> list[str]:
    """Entries whose ids say they were written ``ages_days`` ago (oldest first)."""
    now = now_ms()
    return [
        await bus.redis.xadd(stream, {"event": "{}"}, id=f"{now - int(age * DAY_MS)}-0")
        for age in ages_days
    ]


async def test_streams_lose_what_is_older_than_the_retention(bare_bus: EventBus) -> None:
    """STREAM_RETENTION 7d: entries of 10 and 8 days go, of 6 days and now stay (both streams)."""
    names = bare_bus.names
    kept_events = (await _aged(bare_bus, names.events, [10, 8, 6, 0]))[2:]
    kept_outcomes = (await _aged(bare_bus, names.deliveries, [9, 1]))[1:]
    trimmed = await trim_streams(bare_bus, 7 * 86400)
    assert trimmed == {names.events: 2, names.deliveries: 1}
    assert [i for i, _ in await bare_bus.range()] == kept_events
    assert [i for i, _ in await bare_bus.range(stream=names.deliveries)] == kept_outcomes


async def test_trimming_stops_at_what_a_group_has_not_settled(bare_bus: EventBus) -> None:
    """A group's oldest pending entry and its unread entries are kept, however old."""
    events = bare_bus.names.events
    ids = await _aged(bare_bus, events, [10, 9, 8, 0])
    await bare_bus.ensure_group("g", start="0")
    read = await bare_bus.read_group("g", "c1", count=3, block_ms=None)
    assert [i for i, _ in read] == ids[:3]
    await bare_bus.redis.xack(events, "g", ids[0])  # ids[1] stays pending
    await trim_streams(bare_bus, 7 * 86400)
    assert [i for i, _ in await bare_bus.range()] == ids[1:]

    await bare_bus.ensure_group("late", start="0")  # has read nothing yet
    await bare_bus.redis.xack(events, "g", ids[1], ids[2])
    await trim_streams(bare_bus, 7 * 86400)
    assert [i for i, _ in await bare_bus.range()] == ids[1:]


async def test_dead_letters_lose_what_is_older_than_their_retention(bare_bus: EventBus) -> None:
    """DLQ_RETENTION 30d: a 40-day-old dead letter goes, a 20-day-old one stays."""
    stream = bare_bus.names.dlq("webhook")
    kept = (await _aged(bare_bus, stream, [40, 20]))[1:]
    assert (await trim_dead_letters(bare_bus, 30 * 86400, ["webhook"]))[stream] == 1
    assert [i for i, _ in await bare_bus.redis.xrange(stream)] == kept


async def test_unset_retention_trims_nothing_and_status_shows_it(
    bare_bus: EventBus, settings: Settings
) -> None:
    """Defaults are off: nothing trimmed; status names each setting and the oldest kept."""
    names = bare_bus.names
    await _aged(bare_bus, names.events, [400])
    await _aged(bare_bus, names.dlq("email"), [3])
    assert await trim_once(bare_bus, settings) == {}
    assert await bare_bus.length() == 1
    on = settings.model_copy(update={"stream_retention": 7 * 86400.0, "dlq_retention": 86400.0})
    report = (await status(bare_bus, on))["retention"]
    assert report["stream_retention_s"] == 7 * 86400 and report["log_retention_s"] is None
    assert 399 * DAY_MS < report["oldest_age_ms"][names.events] < 401 * DAY_MS
    assert 2 * DAY_MS < report["oldest_dead_letter_age_ms"]["email"] < 4 * DAY_MS
    await trim_once(bare_bus, on)
    assert await bare_bus.length() == 0
    assert await bare_bus.redis.xlen(names.dlq("email")) == 0
