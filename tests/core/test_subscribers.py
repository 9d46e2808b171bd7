"""Subscriber profiles and preferences (SPEC 9), on a real Redis."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from bookgen_events.events import EventType
from bookgen_events.subscribers import (
    InvalidSubscriber,
    SubscriberNotFound,
    SubscriberRegistry,
)


@pytest.fixture
def registry(redis: Redis, prefix: str) -> SubscriberRegistry:
    return SubscriberRegistry.for_prefix(redis, prefix)


PROFILE = {
    "email": "ada@example.com",
    "phone": "+33612345678",
    "preferences": {"email": {"enabled": True, "types": ["completion", "error_alert"]}},
    "quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Europe/Paris"},
    "digest": {"progress_update": "1h"},
}


async def test_put_get_replace_delete(registry: SubscriberRegistry) -> None:
    """PUT replaces the whole profile; every change is audited; delete forgets it."""
    stored = await registry.put("u1", PROFILE)
    assert await registry.get("u1") == stored and stored.phone == "+33612345678"
    replaced = await registry.put("u1", {"email": "ada@example.org"})
    assert replaced.phone is None and replaced.quiet_hours is None
    await registry.delete("u1")
    with pytest.raises(SubscriberNotFound):
        await registry.get("u1")
    assert await registry.find("u1") is None
    assert [c["op"] for c in await registry.store.changes()] == ["deleted", "set", "set"]


async def test_preferences_decide_per_channel_and_type(registry: SubscriberRegistry) -> None:
    """Listed types only where listed; absent channels default on (SMS: completions, errors)."""
    s = await registry.put("u1", {**PROFILE, "preferences": {
        "email": {"types": ["completion"]}, "websocket": {"enabled": False}}})  # fmt: skip
    assert s.wants("email", EventType.COMPLETION)
    assert not s.wants("email", EventType.PROGRESS_UPDATE)
    assert not s.wants("websocket", EventType.COMPLETION)
    assert s.wants("sms", EventType.COMPLETION) and s.wants("sms", EventType.ERROR_ALERT)
    assert not s.wants("sms", EventType.PROGRESS_UPDATE)


async def test_one_preference_turned_off_keeps_the_rest(registry: SubscriberRegistry) -> None:
    """An unsubscribe turns one type off on one channel and leaves every other as it was."""
    await registry.put("u1", {"email": "ada@example.com"})
    after = await registry.set_preference("u1", "email", EventType.PROGRESS_UPDATE, False)
    assert not after.wants("email", EventType.PROGRESS_UPDATE)
    assert all(after.wants("email", k) for k in EventType if k != EventType.PROGRESS_UPDATE)
    assert after.wants("websocket", EventType.PROGRESS_UPDATE)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"email": "not-an-address"}, "email"),
        ({"phone": "0612345678"}, "phone"),
        ({"phone": "+1 555 0100"}, "phone"),
        ({"preferences": {"pager": {}}}, "preferences"),
        ({"preferences": {"email": {"types": ["job.completed"]}}}, "preferences"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "quiet_hours"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "Mars/Olympus"}}, "quiet_hours"),
        ({"digest": {"progress_update": "5s"}}, "digest"),
        ({"digest": {"progress_update": "soon"}}, "digest"),
        ({"colour": "red"}, "colour"),
    ],
)
async def test_bad_fields_are_refused_naming_the_field(
    registry: SubscriberRegistry, fields: dict, field: str
) -> None:
    with pytest.raises(InvalidSubscriber) as info:
        await registry.put("u1", fields)
    assert any(f.startswith(field) for f, _ in info.value.errors), info.value.errors
    assert await registry.find("u1") is None
