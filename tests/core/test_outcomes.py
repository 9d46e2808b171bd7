"""The outcome record: one schema (outcomes.OUTCOME_FIELDS), read the same by Python and Lua."""

from __future__ import annotations

import pytest

from bookgen_events import EventBus
from bookgen_events.commit import Commit
from bookgen_events.outcomes import (
    OUTCOME_ALWAYS,
    OUTCOME_FIELDS,
    OUTCOME_OPTIONAL,
    Outcome,
    record_values,
)


def every_field_set(**overrides: object) -> Outcome:
    """An outcome whose every field holds a value unlike any other field's."""
    values: dict[str, object] = {
        "event_id": "ev-1", "entry_id": "1-1", "channel": "webhook", "recipient": "r@x",
        "status": "failed", "attempt": 3, "final": False, "type": "completion",
        "job_id": "job-9", "user_id": "user-4", "error": "boom", "status_code": 503,
        "duration_ms": 12.5, "latency_ms": 40.25, "retry_at_ms": 1700000000123,
        "at_ms": 1700000000000,
    }  # fmt: skip
    values.update(overrides)
    return Outcome(**values)  # type: ignore[arg-type]


def test_the_schema_lists_every_outcome_field_once() -> None:
    """Always-written fields lead, optional ones follow, and together they are Outcome's."""
    assert OUTCOME_FIELDS == OUTCOME_ALWAYS + OUTCOME_OPTIONAL
    assert len(set(OUTCOME_FIELDS)) == len(OUTCOME_FIELDS)
    assert set(OUTCOME_FIELDS) == set(Outcome.__dataclass_fields__)


@pytest.mark.parametrize(
    "override", [{}, {"error": "a\x1fseparator"}, {"event_id": "[looks like json"}]
)
def test_the_record_builder_writes_each_value_under_its_name(override: dict[str, str]) -> None:
    """outcome_record's positional values line up with OUTCOME_FIELDS, split or as JSON."""
    outcome = every_field_set(**override)
    assert Outcome.from_fields(record_values(outcome.record())) == outcome


@pytest.mark.parametrize("error", ["boom", "a\x1fseparator"])
async def test_the_commit_script_names_the_fields_as_python_does(bus: EventBus, error: str) -> None:
    """The script, given the names at load, writes the entry Python reads back unchanged."""
    outcome = every_field_set(error=error)
    commit = Commit.empty()
    commit.outcomes.append(outcome.record())
    await bus.commit("webhook", commit, "webhook")
    [(_, fields)] = await bus.range(stream=bus.names.deliveries)
    assert list(fields) == list(OUTCOME_FIELDS)
    assert Outcome.from_fields(fields) == outcome


async def test_empty_optional_fields_are_left_out(bus: EventBus) -> None:
    """Only the optional fields are dropped when empty; the always-written ones stay."""
    outcome = every_field_set(user_id="", error="", status_code=None, latency_ms=None,
                              retry_at_ms=None, job_id="")  # fmt: skip
    commit = Commit.empty()
    commit.outcomes.append(outcome.record())
    await bus.commit("webhook", commit, "webhook")
    [(_, fields)] = await bus.range(stream=bus.names.deliveries)
    assert list(fields) == list(OUTCOME_ALWAYS)
    assert Outcome.from_fields(fields) == outcome
