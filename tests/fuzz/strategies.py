"""Hypothesis strategies for hostile input: junk JSON, near-valid events, odd strings."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from bookgen_events.events import EventType

#: Strings that have broken parsers, headers or encoders elsewhere.
NASTY_STRINGS = [
    "",
    " ",
    "\x00",
    "a\r\nBcc: victim@example.com",
    "\ud800",  # a lone surrogate: valid in a Python str, not encodable as UTF-8
    "\udfff\ud800",
    "\u202e\u2066",  # bidi overrides
    "😀" * 50,
    "%00%ff%zz",
    "'; DROP TABLE notifications; --",
    "${jndi:ldap://x}",
    "{{7*7}}",
    "NaN",
    "Infinity",
    "-1",
    "1e999",
    "2024-13-45T25:61:61Z",
    "9999999999999999999999999",
]

nasty_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(NASTY_STRINGS),
    st.text(alphabet=st.characters(codec="utf-8"), min_size=200, max_size=400),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    nasty_text,
)
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)
    ),
    max_leaves=12,
)
type_names = st.one_of(st.sampled_from([t.value for t in EventType]), nasty_text, scalars)

_VALID_DATA: dict[str, dict[str, Any]] = {
    "progress_update": {"progress": 50.0, "phase": "writing", "message": "halfway"},
    "completion": {"biography_id": 456, "character_name": "Ada", "status": "completed"},
    "error_alert": {"error": "boom", "severity": "critical"},
    "status_change": {"old_status": "queued", "new_status": "running"},
    "admin_alert": {"alert_type": "disk", "message": "low", "metadata": {"free": 1}},
}
#: Free-text fields where any string is valid: hostile strings there must survive end to end.
_TEXT_FIELDS = {
    "progress_update": ["message"],
    "completion": ["character_name", "status"],
    "error_alert": ["error"],
    "status_change": ["new_status", "old_status"],
    "admin_alert": ["message"],
}
_FIELDS = ["id", "type", "occurred_at", "job_id", "user_id", "data", "webhook_url", "emails"]


@st.composite
def near_valid_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event with a few envelope or data fields replaced, dropped or added."""
    kind = draw(st.sampled_from(sorted(_VALID_DATA)))
    data: dict[str, Any] = dict(_VALID_DATA[kind])
    event: dict[str, Any] = {
        "type": kind,
        "job_id": "42",
        "user_id": "u1",
        "data": data,
        "webhook_url": "https://hooks.example.com/in",
        "emails": ["user@example.com"],
    }
    for _ in range(draw(st.integers(0, 2))):
        target = draw(st.sampled_from(["envelope", "data"]))
        where = event if target == "envelope" else data
        keys = _FIELDS if target == "envelope" else [*data, "progress", "severity", "extra"]
        key = draw(st.sampled_from(keys))
        action = draw(st.sampled_from(["set", "drop", "nasty", "text"]))
        if action == "drop":
            where.pop(key, None)
        elif action == "nasty":
            where[key] = draw(st.sampled_from(NASTY_STRINGS))
        elif action == "text":
            where[key] = draw(nasty_text)
        else:
            where[key] = draw(json_values)
    return event


@st.composite
def hostile_text_events(draw: st.DrawFn) -> dict[str, Any]:
    """A valid event but for one hostile string in a free-text field or a routing key."""
    kind = draw(st.sampled_from(sorted(_VALID_DATA)))
    data: dict[str, Any] = dict(_VALID_DATA[kind])
    event: dict[str, Any] = {"type": kind, "job_id": "42", "data": data}
    text = draw(st.one_of(st.sampled_from(NASTY_STRINGS), nasty_text))
    key = draw(st.sampled_from([*_TEXT_FIELDS[kind], "job_id", "user_id"]))
    (event if key in ("job_id", "user_id") else data)[key] = text
    return event


def has_lone_surrogate(value: Any) -> bool:
    """Whether any string in ``value`` holds a lone surrogate (unencodable as UTF-8)."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(has_lone_surrogate(v) for v in value)
    return False


#: Anything a producer might hand to ``emit`` or ``POST /events``.
event_candidates = st.one_of(
    near_valid_events(),
    hostile_text_events(),
    st.dictionaries(st.sampled_from(_FIELDS), json_values, max_size=8),
    json_values,
)
