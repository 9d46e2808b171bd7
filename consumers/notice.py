"""What a chat message says about an event, before Slack's or Discord's markup.

:func:`notice` reads an event once into a :class:`Notice` (a headline, a line or two of text,
labelled fields, a tone); :mod:`consumers.slack` and :mod:`consumers.discord` lay it out in
their own JSON. Pure functions of the event: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from bookgen_events.events import (
    AdminData,
    CompletionData,
    ErrorData,
    Event,
    ProgressData,
    StatusChangeData,
)

#: How a message should look: its colour (Discord) and its emoji (both).
Tone = Literal["success", "progress", "info", "warning", "error", "critical", "status", "admin"]
EMOJI: dict[Tone, str] = {
    "success": "✅",
    "progress": "⏳",
    "info": "🔔",
    "warning": "⚠️",
    "error": "❌",
    "critical": "🚨",
    "status": "🔄",
    "admin": "🛠️",
}
#: Statuses that say a job has just begun.
STARTED = frozenset({"started", "running", "processing", "in_progress", "queued"})
BAR_CELLS = 10


def progress_bar(percent: float, cells: int = BAR_CELLS) -> str:
    """``█████░░░░░ 50%``: a text bar that reads the same in Slack, Discord and a log."""
    percent = min(max(percent, 0.0), 100.0)
    filled = int(percent * cells / 100 + 0.5)
    shown = f"{percent:.0f}" if percent == int(percent) else f"{percent:.1f}"
    return "█" * filled + "░" * (cells - filled) + f" {shown}%"


@dataclass(frozen=True)
class Notice:
    """One event as a chat message, markup aside."""

    title: str
    text: str
    tone: Tone
    fields: list[tuple[str, str]] = field(default_factory=list)

    @property
    def headline(self) -> str:
        """The one line a notification preview or a plain-text client shows."""
        return f"{EMOJI[self.tone]} {self.title}"


def _job(event: Event) -> str:
    return f"Job {event.job_id}" if event.job_id else "A job"


def _metadata_fields(metadata: dict[str, object], limit: int = 5) -> list[tuple[str, str]]:
    return [(str(k), str(v)) for k, v in list(metadata.items())[:limit]]


def notice(event: Event) -> Notice:
    """The chat message of ``event``, per its type."""
    job = _job(event)
    data = event.data
    ids = [("Job", event.job_id)] if event.job_id else []
    if isinstance(data, CompletionData):
        if data.character_name and data.status == "completed":
            title = f"Biography of {data.character_name} is ready"
        elif data.status == "completed":
            title = f"{job} completed"
        else:
            title = f"{job} finished: {data.status}"
        extra = [("Biography", f"#{data.biography_id}")] if data.biography_id is not None else []
        tone: Tone = "success" if data.status == "completed" else "warning"
        return Notice(title, f"{job} finished with status {data.status}.", tone, ids + extra)
    if isinstance(data, ProgressData):
        character = data.metadata.get("character_name") or data.metadata.get("character")
        if character:
            title = f"{job}: character detected — {character}"
        else:
            title = f"{job}: {progress_bar(data.progress).rsplit(' ', 1)[1]} done"
        lines = [progress_bar(data.progress)]
        if data.phase:
            lines.append(f"Phase: {data.phase}")
        if data.message:
            lines.append(data.message)
        return Notice(title, "\n".join(lines), "progress", ids)
    if isinstance(data, StatusChangeData):
        if data.new_status.lower() in STARTED:
            return Notice(f"{job} started", f"{job} is now {data.new_status}.", "info", ids)
        change = f"{data.old_status} → {data.new_status}" if data.old_status else data.new_status
        return Notice(f"{job} status: {change}", f"{job} is now {data.new_status}.", "status", ids)
    if isinstance(data, ErrorData):
        tone = data.severity if data.severity in ("warning", "error", "critical") else "info"
        fields = [*ids, ("Severity", data.severity), *_metadata_fields(data.metadata)]
        return Notice(f"{job} failed ({data.severity})", data.error, tone, fields)
    assert isinstance(data, AdminData)
    kind = data.alert_type.replace("_", " ")
    return Notice(
        f"Admin alert: {kind}", data.message, "admin", ids + _metadata_fields(data.metadata)
    )
