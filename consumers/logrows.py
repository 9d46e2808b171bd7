"""Rows of the ``notifications`` table, computed from events and delivery outcomes.

Pure functions: the logger (:mod:`consumers.logger`) and ``rebuild-log`` both map stream
entries to rows through here, so a replayed entry always maps to the same row.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from bookgen_events.db import job_entity_id, notification_id
from bookgen_events.endpoints import split_recipient
from bookgen_events.events import Event, EventType
from bookgen_events.outcomes import Outcome


def _naive_utc(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None)


def render(event: Event) -> tuple[str, str]:
    """A plain subject and message for the row (the channels render their own bodies)."""
    d: Any = event.data
    job = f"Job {event.job_id}" if event.job_id else "Notification"
    if event.type is EventType.PROGRESS_UPDATE:
        subject = f"{job}: {d.progress:g}%" + (f" - {d.phase}" if d.phase else "")
        message = d.message or d.phase or f"Progress {d.progress:g}%"
    elif event.type is EventType.COMPLETION:
        subject = f"{job} {d.status}"
        who = f" of {d.character_name}" if d.character_name else ""
        message = f"Biography {d.biography_id or ''}{who} {d.status}.".replace("  ", " ")
    elif event.type is EventType.ERROR_ALERT:
        subject, message = f"[{d.severity}] {job} error", d.error
    elif event.type is EventType.STATUS_CHANGE:
        subject = f"{job} status: {d.old_status or '?'} -> {d.new_status}"
        message = subject
    else:
        subject, message = f"Admin alert: {d.alert_type}", d.message
    return subject[:255], message


def recipients(event: Event, channel: str) -> list[str]:
    """Who ``channel`` notifies: the watched job (else user), the webhook URL, each address."""
    if channel == "websocket":
        target = event.job_id or event.user_id
        return [target] if target else []
    if channel == "webhook":
        return [event.webhook_url] if event.webhook_url else []
    if channel == "email":
        return list(event.emails)
    return []


def _row(
    event_id: str, channel: str, recipient: str, job_id: str, user_id: str, stream_id: str
) -> dict[str, Any]:
    # A registered endpoint's row shows its URL, its id in the metadata (SPEC 9).
    endpoint_id, address = split_recipient(recipient) if channel == "webhook" else (None, "")
    metadata: dict[str, Any] = {
        "event_id": event_id,
        "stream_id": stream_id,
        "job_id": job_id or None,
        "user_id": user_id or None,
    }
    if endpoint_id is not None:
        metadata["endpoint_id"] = endpoint_id
    return {
        "id": notification_id(event_id, channel, recipient),
        "delivery_method": channel,
        "recipient": (address if endpoint_id is not None else recipient)[:255],
        "related_entity_type": "job" if job_id else None,
        "related_entity_id": job_entity_id(job_id),
        "notification_metadata": metadata,
        "subject": None,
        "message": None,
        "error_message": None,
        "delivered_at": None,
    }


def event_rows(event: Event, stream_id: str, channels: Sequence[str]) -> list[dict[str, Any]]:
    """One row per channel x recipient: ``pending``, or ``delivered`` for WebSocket."""
    subject, message = render(event)
    created = _naive_utc(event.occurred_at)
    out = []
    for channel in channels:
        for recipient in recipients(event, channel):
            row = _row(
                event.id, channel, recipient, event.job_id or "", event.user_id or "", stream_id
            )
            if event.data.metadata:
                row["notification_metadata"]["metadata"] = event.data.metadata
            broadcast = channel == "websocket"
            row.update(
                notification_type=event.type.value,
                subject=subject,
                message=message,
                status="delivered" if broadcast else "pending",
                delivery_attempts=1 if broadcast else 0,
                is_rate_limited=False,
                created_at=created,
                delivered_at=created if broadcast else None,
            )
            out.append(row)
    return out


def _uuid7_time(event_id: str) -> datetime | None:
    """The creation time inside a UUIDv7 event id (what ``emit`` assigns), else None."""
    try:
        value = uuid.UUID(event_id)
    except ValueError:
        return None
    if value.version != 7:
        return None
    return datetime.fromtimestamp((value.int >> 80) / 1000, UTC).replace(tzinfo=None)


def outcome_row(outcome: Outcome) -> dict[str, Any]:
    """The row an outcome updates (or creates, when its event's row is not there yet).

    A failed attempt with a retry scheduled is still ``pending`` (with its error); a
    rate-limited or suppressed attempt was never made, so it does not count in
    ``delivery_attempts``. A suppressed one keeps its reason in ``error_message``.
    """
    if outcome.status not in ("delivered", "failed", "rate_limited", "suppressed"):
        raise ValueError(f"unknown outcome status {outcome.status!r}")
    at = datetime.fromtimestamp(outcome.at_ms / 1000, UTC).replace(tzinfo=None)
    row = _row(
        outcome.event_id,
        outcome.channel,
        outcome.recipient,
        outcome.job_id,
        outcome.user_id,
        outcome.entry_id,
    )
    limited = outcome.status == "rate_limited"
    row.update(
        notification_type=outcome.type or None,
        status="pending" if outcome.status == "failed" and not outcome.final else outcome.status,
        delivery_attempts=outcome.attempt - 1
        if limited or outcome.status == "suppressed"
        else outcome.attempt,
        error_message=outcome.error or None,
        is_rate_limited=limited,
        # Until the event's row lands: the id's own time, the same for every outcome of it.
        created_at=_uuid7_time(outcome.event_id) or at,
        delivered_at=at if outcome.status == "delivered" else None,
    )
    return row
