"""The event envelope: validation at the edge, ids, wire format."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest

from bookgen_events import Event, EventTooLargeError, EventValidationError
from bookgen_events.errors import DecodeError
from bookgen_events.event_ids import new_event_id
from bookgen_events.events import decode, encode, make_event

VALID = {
    "progress_update": {"progress": 50, "phase": "Chapter 10 of 20", "message": "writing"},
    "completion": {"biography_id": 456, "character_name": "Marie Curie", "status": "completed"},
    "error_alert": {"error": "OpenRouter API timeout", "severity": "critical"},
    "status_change": {"old_status": "queued", "new_status": "running"},
    "admin_alert": {"alert_type": "System Overload", "message": "deep queue", "metadata": {"q": 1}},
}


@pytest.mark.parametrize("type_", sorted(VALID))
def test_every_type_round_trips_through_the_wire_format(type_: str) -> None:
    """Each of the five types validates, encodes and decodes back to an equal event."""
    event = make_event({"type": type_, "job_id": 123, "data": VALID[type_]})
    assert event.job_id == "123"
    assert decode({"event": encode(event, 65536)}) == event


@pytest.mark.parametrize(
    ("event", "field"),
    [
        ({"type": "nope", "data": {}}, "type"),
        ({"type": "progress_update", "data": {"progress": 101}}, "data.progress"),
        ({"type": "progress_update", "data": {"progress": -1}}, "data.progress"),
        ({"type": "progress_update", "data": {"progress": float("nan")}}, "data.progress"),
        ({"type": "progress_update", "data": {}}, "data.progress"),
        ({"type": "completion", "data": {"typo": 1}}, "data.typo"),
        ({"type": "error_alert", "data": {"error": "x", "severity": "meh"}}, "data.severity"),
        ({"type": "status_change", "data": {"old_status": "a"}}, "data.new_status"),
        ({"type": "completion", "data": {}, "emails": ["not-an-address"]}, "emails.0"),
        ({"type": "completion", "data": {}, "emails": ["a@b.com\r\nBcc: x@y.com"]}, "emails.0"),
        ({"type": "completion", "data": {}, "webhook_url": "ftp://example.com/x"}, "webhook_url"),
        ({"type": "completion", "data": {}, "webhook_url": "not a url"}, "webhook_url"),
        ({"type": "completion", "data": {"character_name": "A\r\nBcc: x"}}, "data.character_name"),
        ({"type": "completion", "data": {}, "surprise": 1}, "surprise"),
        ({"type": "completion", "data": "text"}, "data"),
    ],
)
def test_invalid_events_name_the_field(event: dict, field: str) -> None:
    """Each invalid event raises a ValueError subclass whose errors name the bad field."""
    with pytest.raises(EventValidationError) as info:
        make_event(event)
    assert isinstance(info.value, ValueError)
    assert field in [f for f, _ in info.value.errors], info.value.errors
    assert field in str(info.value)


def test_oversized_event_is_refused_with_sizes() -> None:
    """An event over MAX_EVENT_BYTES is refused with its size and the limit."""
    event = make_event({"type": "progress_update", "data": {"progress": 1, "message": "x" * 5000}})
    with pytest.raises(EventTooLargeError, match="4096"):
        encode(event, 4096)


def test_ids_are_uuidv7_unique_and_time_ordered() -> None:
    """Generated ids are RFC 9562 version-7 UUIDs, strictly increasing within a process."""
    ids = [new_event_id() for _ in range(5000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    ms = int(ids[0].replace("-", "")[:12], 16)
    assert abs(ms / 1000 - datetime.now(UTC).timestamp()) < 5


def test_timestamps_are_utc_with_z() -> None:
    """Naive times are taken as UTC, aware ones converted; the wire form ends in Z."""
    tz = timezone(timedelta(hours=2))
    event = make_event(
        {"type": "completion", "data": {}, "occurred_at": datetime(2024, 1, 1, 14, tzinfo=tz)}
    )
    assert event.timestamp == "2024-01-01T12:00:00Z"
    assert '"occurred_at":"2024-01-01T12:00:00Z"' in event.model_dump_json()
    naive = make_event({"type": "completion", "data": {}, "occurred_at": "2024-01-01T12:00:00"})
    assert naive.occurred_at.tzinfo is not None


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("2024-01-01T12:00:00Z", "2024-01-01T12:00:00Z"),
        ("2024-01-01T14:00:00+02:00", "2024-01-01T12:00:00Z"),
        ("2024-01-01T12:00:00", "2024-01-01T12:00:00Z"),  # naive: UTC
    ],
)
def test_decoded_timestamps_are_utc_whatever_an_entry_says(written: str, read: str) -> None:
    """A hand-written entry's time is normalised like emit's; UTC ones are kept as they are."""
    event = make_event({"type": "completion", "data": {}})
    raw = event.model_dump_json().replace(event.timestamp, written)
    assert decode({"event": raw}).timestamp == read


def test_a_decoded_timestamp_that_is_no_datetime_names_the_field() -> None:
    event = make_event({"type": "completion", "data": {}})
    raw = event.model_dump_json().replace(event.timestamp, "yesterday")
    with pytest.raises(DecodeError, match=r"occurred_at: .*valid ISO 8601 datetime"):
        decode({"event": raw})


def test_flat_message_is_the_seeds_shape() -> None:
    """flat() gives the seed's WebSocket message: type, job_id, data keys, timestamp."""
    event = make_event(
        {"type": "progress_update", "job_id": "123", "data": VALID["progress_update"]}
    )
    flat = event.flat()
    assert flat["type"] == "progress_update" and flat["job_id"] == "123"
    assert flat["progress"] == 50.0 and flat["phase"] == "Chapter 10 of 20"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", flat["timestamp"])


def test_events_are_immutable() -> None:
    """The envelope is frozen: nothing downstream can alter what was emitted."""
    event = make_event({"type": "completion", "data": {}})
    with pytest.raises(ValueError):
        event.job_id = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "fields",
    [{}, {"event": "not json"}, {"event": '{"type": "progress_update"}'}, {"event": "[]"}],
)
def test_decode_turns_junk_into_decode_error(fields: dict) -> None:
    """Undecodable entries raise DecodeError carrying the raw fields (to dead-letter them)."""
    with pytest.raises(DecodeError) as info:
        decode(fields)
    assert info.value.fields == fields


def test_emails_are_deduplicated_in_order() -> None:
    """Duplicate recipients collapse, so nobody gets the same mail twice."""
    event = Event.model_validate(
        {"type": "completion", "data": {}, "emails": ["a@x.com", "b@x.com", "a@x.com"]}
    )
    assert event.emails == ["a@x.com", "b@x.com"]
