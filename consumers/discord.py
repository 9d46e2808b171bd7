"""Discord endpoints (SPEC 10): a webhook message per event, ``content`` plus ``embeds``.

``content`` is the one line a notification shows; one embed carries the title, the message,
the fields, the event's time and a colour by tone (green for success, red for an error,
darker for critical...). ``allowed_mentions`` is empty, so nothing an event carries can
ping ``@everyone`` or a role. Discord answers 204 (or 200), and 429 with ``Retry-After``
and a JSON body whose ``retry_after`` is in seconds (a float): the retry waits for the
longer of the two. Its webhooks take about 5 messages per 2 seconds, so by default an
endpoint of this type is held to 5 per 2 s and 120 a minute (``rate_limit_per_minute``
replaces the per-minute figure; the 2 s window stays).
"""

from __future__ import annotations

import json
from typing import Any

import pydantic_core

from bookgen_events.errors import Reject, RetryLater
from bookgen_events.events import WEBHOOK_EVENT_NAMES, Event

from .notice import Tone, notice
from .outbound import OutboundResponse

DEFAULT_PER_MINUTE = 120
#: Discord's per-webhook pace: (window in ms, messages).
BURST_WINDOW = (2000, 5)
COLOURS: dict[Tone, int] = {
    "success": 0x2ECC71,
    "progress": 0x3498DB,
    "info": 0x3498DB,
    "warning": 0xF1C40F,
    "error": 0xE74C3C,
    "critical": 0x992D22,
    "status": 0x95A5A6,
    "admin": 0x9B59B6,
}
_CONTENT_MAX = 2000
_TITLE_MAX = 256
_DESCRIPTION_MAX = 4096
_FIELD_NAME_MAX = 256
_FIELD_VALUE_MAX = 1024
_FIELDS_MAX = 25


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(event: Event) -> dict[str, Any]:
    """The webhook JSON for ``event``."""
    note = notice(event)
    embed: dict[str, Any] = {
        "title": _cut(note.title, _TITLE_MAX),
        "description": _cut(note.text, _DESCRIPTION_MAX),
        "color": COLOURS[note.tone],
        "timestamp": event.timestamp,
        "footer": {"text": f"{WEBHOOK_EVENT_NAMES[event.type]} · event {event.id}"},
    }
    if note.fields:
        embed["fields"] = [
            {
                "name": _cut(k, _FIELD_NAME_MAX),
                "value": _cut(v, _FIELD_VALUE_MAX) or "-",
                "inline": True,
            }
            for k, v in note.fields[:_FIELDS_MAX]
        ]
    return {
        "content": _cut(note.headline, _CONTENT_MAX),
        "embeds": [embed],
        "allowed_mentions": {"parse": []},
    }


def encode(event: Event) -> bytes:
    return pydantic_core.to_json(message(event))


def retry_after_body(body: bytes) -> float | None:
    """``retry_after`` (seconds) from a 429's JSON body; None if absent or not JSON."""
    try:
        value = json.loads(body).get("retry_after")
    except (ValueError, AttributeError):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None


def refine(response: OutboundResponse, failure: RetryLater | Reject) -> RetryLater | Reject:
    """On 429 wait for the longer of ``Retry-After`` and the body's ``retry_after``."""
    if response.status != 429 or not isinstance(failure, RetryLater):
        return failure
    waited = retry_after_body(response.body)
    if waited is None:
        return failure
    delay = max(waited, failure.delay or 0.0)
    return RetryLater(f"HTTP 429: Discord asks to wait {waited:g}s", delay=delay, status_code=429)
