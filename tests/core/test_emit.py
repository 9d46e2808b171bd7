"""Producers on a real Redis: emit, emit_many, sync twins, NotificationService."""

from __future__ import annotations

import json

import pytest
import redis as sync_redis

from bookgen_events import (
    EventBus,
    EventValidationError,
    NotificationService,
    Settings,
    SyncNotificationService,
    configure,
    emit,
    emit_many,
    emit_many_sync,
    emit_sync,
)
from bookgen_events.events import decode
from bookgen_events.producer import SyncProducer, aclose

from ..support.events import progress


async def _events(bus: EventBus) -> list[dict]:
    return [json.loads(f["event"]) for _, f in await bus.range()]


async def test_emit_appends_one_decodable_entry(bus: EventBus) -> None:
    """emit returns the stream id of an entry holding the validated event."""
    stream_id = await bus.emit(progress("123"))
    entries = await bus.range()
    assert [e[0] for e in entries] == [stream_id]
    event = decode(entries[0][1])
    assert event.job_id == "123" and event.data.progress == 10.0  # type: ignore[union-attr]


async def test_invalid_event_writes_nothing(bare_bus: EventBus) -> None:
    """An invalid event raises at emit and the stream is never created."""
    with pytest.raises(EventValidationError, match=r"data\.progress"):
        await bare_bus.emit({"type": "progress_update", "data": {"progress": 150}})
    assert await bare_bus.redis.exists(bare_bus.names.events) == 0


async def test_emit_many_is_all_or_nothing(bus: EventBus) -> None:
    """One invalid event in a batch means no event of the batch is written."""
    with pytest.raises(EventValidationError):
        await bus.emit_many([progress("1"), progress("2", webhook_url="gopher://x"), progress("3")])
    assert await bus.length() == 0
    ids = await bus.emit_many([progress(str(i)) for i in range(250)])
    assert len(ids) == 250 and ids == sorted(ids, key=lambda i: tuple(map(int, i.split("-"))))
    assert [e["job_id"] for e in await _events(bus)] == [str(i) for i in range(250)]


async def test_oversized_event_is_refused(bus: EventBus) -> None:
    """An event over MAX_EVENT_BYTES is refused and nothing is written."""
    small = EventBus(bus.redis, prefix=bus.names.prefix, max_event_bytes=2048)
    with pytest.raises(ValueError, match="MAX_EVENT_BYTES"):
        await small.emit(progress("1", data={"progress": 1, "message": "x" * 4000}))
    assert await bus.length() == 0


async def test_stream_is_trimmed_approximately(bus: EventBus) -> None:
    """STREAM_MAXLEN bounds the stream (approximate trimming, so within a node's slack)."""
    capped = EventBus(bus.redis, prefix=bus.names.prefix, maxlen=1000)
    for _ in range(5):
        await capped.emit_many([progress("j") for _ in range(1000)])  # distinct ids
    assert 1000 <= await bus.length() < 1300


async def test_module_level_emit_uses_configured_settings(
    bus: EventBus, settings: Settings
) -> None:
    """emit/emit_many and their sync twins write to the configured deployment."""
    configure(settings=settings)
    try:
        await emit(progress("a"))
        await emit_many([progress("b"), progress("c")])
        emit_sync(progress("d"))
        emit_many_sync([progress("e")])
        client = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
        jobs = [
            json.loads(f["event"])["job_id"]
            for _, f in client.xrange(f"{settings.stream_prefix}:events")
        ]
        client.close()
        assert jobs == ["a", "b", "c", "d", "e"]
    finally:
        await aclose()
        configure()


async def test_notification_service_seed_methods(bus: EventBus, settings: Settings) -> None:
    """All five seed methods emit their type; ADMIN_EMAILS join critical errors and admin alerts."""
    service = NotificationService(bus, settings=settings, admin_emails=["ops@example.com"])
    await service.send_progress_update(
        job_id="123", progress=50.0, phase="Processing chapter 10 of 20"
    )
    await service.send_progress_update("123", 75, "Chapter 15 of 20", "Generating content...")
    await service.send_completion_notification(
        job_id="123",
        biography_id=456,
        character_name="Albert Einstein",
        status="completed",
        webhook_url="https://your-app.com/webhook",
        user_email="user@example.com",
    )
    await service.send_error_alert(
        job_id="123",
        error="Generation failed",
        severity="critical",
        admin_emails=["admin@example.com"],
    )
    await service.send_error_alert(job_id="124", error="retrying", severity="warning")
    await service.send_status_change(job_id="123", old_status="queued", new_status="running")
    await service.send_admin_alert(
        alert_type="System Overload",
        message="Queue depth exceeds 100 jobs",
        admin_emails=["admin@example.com"],
        metadata={"queue_depth": 150, "active_workers": 2},
    )
    events = await _events(bus)
    assert [e["type"] for e in events] == [
        "progress_update", "progress_update", "completion", "error_alert", "error_alert",
        "status_change", "admin_alert",
    ]  # fmt: skip
    assert events[1]["data"]["message"] == "Generating content..."
    assert events[2]["webhook_url"] == "https://your-app.com/webhook"
    assert events[2]["emails"] == ["user@example.com"]
    assert events[3]["emails"] == ["admin@example.com", "ops@example.com"]
    assert events[4]["emails"] == []  # not critical: no admins added
    assert events[6]["emails"] == ["admin@example.com", "ops@example.com"]
    assert events[6]["data"]["metadata"] == {"queue_depth": 150, "active_workers": 2}


async def test_sync_service_matches_async(bus: EventBus, settings: Settings) -> None:
    """The sync twin takes the same arguments and writes the same events."""
    client = sync_redis.Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        service = SyncNotificationService(SyncProducer(client, settings), settings=settings)
        service.send_progress_update("9", 0, "Starting")
        service.send_completion_notification(job_id="9", biography_id=1, status="completed")
        with pytest.raises(EventValidationError):
            service.send_progress_update("9", 200, "too far")
    finally:
        client.close()
    assert [e["type"] for e in await _events(bus)] == ["progress_update", "completion"]
