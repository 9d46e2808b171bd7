"""Slack endpoints (SPEC 10): an incoming-webhook message per event, ``text`` plus ``blocks``.

``text`` is the one line notifications and plain clients show; ``blocks`` (Block Kit) lay out
a header, the message, the event's fields and a context line. Whatever the event carries is
escaped (``&``, ``<``, ``>``), so it cannot ping ``<!channel>`` or forge a link. Slack
answers 200 ``ok``, 429 with ``Retry-After`` when posting faster than about one message a
second (the sender's mapping honours it), and a 4xx naming the fault (``invalid_payload``,
``no_service``, ``channel_is_archived``): dead-lettered with that word. By default an
endpoint of this type is limited to 60 messages a minute (``rate_limit_per_minute`` to
change it).
"""

from __future__ import annotations

from typing import Any

import pydantic_core

from bookgen_events.errors import Reject, RetryLater
from bookgen_events.events import WEBHOOK_EVENT_NAMES, Event

from .notice import notice
from .outbound import OutboundResponse

#: Slack's own pace for incoming webhooks: about one message per second.
DEFAULT_PER_MINUTE = 60
_HEADER_MAX = 150  # a header block's plain_text
_SECTION_MAX = 3000  # a section's mrkdwn
_FIELD_MAX = 2000
_FIELDS_MAX = 10


def escape(text: str) -> str:
    """Slack's three control characters, escaped as its docs ask."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def message(event: Event) -> dict[str, Any]:
    """The incoming-webhook JSON for ``event``."""
    note = notice(event)
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {"type": "plain_text", "text": _cut(note.headline, _HEADER_MAX), "emoji": True},
        },
        {
            "type": "section",
            "text": {"type": "mrkdwn", "text": _cut(escape(note.text), _SECTION_MAX)},
        },
    ]
    if note.fields:
        blocks.append(
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": _cut(f"*{escape(k)}*\n{escape(v)}", _FIELD_MAX)}
                    for k, v in note.fields[:_FIELDS_MAX]
                ],
            }
        )
    context = f"{WEBHOOK_EVENT_NAMES[event.type]} · {event.timestamp} · event {event.id}"
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": escape(context)}]})
    return {"text": escape(note.headline), "blocks": blocks}


def encode(event: Event) -> bytes:
    return pydantic_core.to_json(message(event))


def refine(response: OutboundResponse, failure: RetryLater | Reject) -> RetryLater | Reject:
    """Name Slack's reason (its body is one word: ``invalid_payload``...) in a final failure."""
    if isinstance(failure, Reject) and response.body:
        word = response.body[:100].decode("utf-8", "replace").strip()
        return Reject(f"{failure.reason}: {word}", status_code=failure.status_code)
    return failure
