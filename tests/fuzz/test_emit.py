"""Fuzzed producers at ``EventBus.emit``/``emit_many``: a valid event or a clean refusal."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bookgen_events import EventBus
from bookgen_events.errors import EventTooLargeError, EventValidationError
from bookgen_events.events import Event, decode

from .profiles import FUZZ, FUZZ_SLOW
from .strategies import (
    event_candidates,
    hostile_text_events,
    near_valid_events,
)

_ENVELOPE = set(Event.model_fields) | {"event"}


def _names_a_field(exc: EventValidationError, candidate: Any) -> bool:
    given_keys = set(candidate) if isinstance(candidate, dict) else set()
    return bool(exc.errors) and all(
        field in given_keys or field.split(".")[0] in _ENVELOPE for field, _ in exc.errors
    )


async def _emit_one(bus: EventBus, candidate: Any) -> None:
    before = await bus.length()
    try:
        entry_id = await bus.emit(candidate)
    except EventValidationError as exc:
        assert _names_a_field(exc, candidate), exc.errors
        assert str(exc).strip()
        assert await bus.length() == before, "a refused event was written"
        return
    assert await bus.length() == before + 1
    [(stored_id, fields)] = await bus.range(entry_id, entry_id)
    assert stored_id == entry_id
    decode(fields)  # what emit wrote, a consumer can read back


@FUZZ
@given(candidate=event_candidates)
async def test_emit_returns_an_entry_or_a_validation_error_naming_a_field(
    bus: EventBus, candidate: Any
) -> None:
    """Any junk at emit ends as a stored, decodable event or an EventValidationError naming a field, with nothing written."""
    await _emit_one(bus, candidate)


@FUZZ
@given(candidate=hostile_text_events())
async def test_emit_survives_hostile_text(bus: EventBus, candidate: dict[str, Any]) -> None:
    """Hostile strings in free-text fields and routing keys are stored intact or refused cleanly."""
    await _emit_one(bus, candidate)


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff then more"])
async def test_lone_surrogate_is_refused_as_invalid(bus: EventBus, text: str) -> None:
    """A lone surrogate (a valid Python str, invalid UTF-8) is refused as an EventValidationError."""
    with pytest.raises(EventValidationError):
        await bus.emit({"type": "admin_alert", "data": {"alert_type": "x", "message": text}})
    assert await bus.length() == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
@FUZZ_SLOW
@given(candidate=event_candidates)
async def test_emit_fuzz_long(bus: EventBus, candidate: Any) -> None:
    """The same property as the default run, with many more examples."""
    await _emit_one(bus, candidate)


@FUZZ
@given(batch=st.lists(near_valid_events(), min_size=1, max_size=6))
async def test_emit_many_writes_all_or_nothing(bus: EventBus, batch: list[dict[str, Any]]) -> None:
    """emit_many either writes every event of a batch or raises before writing any."""
    before = await bus.length()
    try:
        ids = await bus.emit_many(batch)
    except EventValidationError:
        assert await bus.length() == before
    else:
        assert len(ids) == len(batch)
        assert await bus.length() == before + len(batch)


@FUZZ
@given(delta=st.integers(min_value=-300, max_value=300), multibyte=st.booleans())
async def test_payload_size_limit_is_exact(bus: EventBus, delta: int, multibyte: bool) -> None:
    """An event is written iff its encoded size is within MAX_EVENT_BYTES; a bigger one is refused by size."""
    limit = bus.max_event_bytes
    skeleton = Event(type="progress_update", job_id="1", data={"progress": 1.0, "message": ""})
    room = limit - len(skeleton.model_dump_json().encode()) + delta
    char = "é" if multibyte else "x"  # 2 bytes in UTF-8: the limit is in bytes, not characters
    message = char * max(0, room // len(char.encode()))
    event = skeleton.model_copy(
        update={"data": skeleton.data.model_copy(update={"message": message})}
    )
    size = len(event.model_dump_json().encode())
    before = await bus.length()
    if size <= limit:
        await bus.emit(event)
        assert await bus.length() == before + 1
    else:
        with pytest.raises(EventTooLargeError) as info:
            await bus.emit(event)
        assert info.value.size == size and info.value.limit == limit
        assert "MAX_EVENT_BYTES" in str(info.value)
        assert await bus.length() == before


async def test_huge_payload_is_refused_without_a_write(bus: EventBus) -> None:
    """A 10 MB event is refused as too large at emit, and nothing reaches the stream."""
    huge = {"type": "admin_alert", "data": {"alert_type": "x", "message": "y" * 10_000_000}}
    with pytest.raises(EventTooLargeError):
        await bus.emit(huge)
    with pytest.raises(EventTooLargeError):
        await bus.emit_many([{"type": "completion", "data": {}}, huge])
    assert await bus.length() == 0
