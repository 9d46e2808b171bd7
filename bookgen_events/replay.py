"""Replay from stream offsets and dead-letter redrive: deliveries to one channel only.

Both go through the channel's scheduled-delivery set with each event's original id, so
``webhook-id`` and ``Message-ID`` stay the same and receivers can de-duplicate; the consumer
records outcomes as for any delivery, and the log upserts rather than duplicates rows.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .bus import EventBus, Scheduled
from .errors import OffsetError
from .events import WIRE_FIELD, decode
from .outcomes import DeadLetter, now_ms

REPLAYABLE = ("webhook", "email")
_STREAM_ID = re.compile(r"^\d+(-\d+)?$")


def parse_offset(text: str, *, end: bool = False) -> str:
    """A stream id (``1700000000000-0``) or an ISO 8601 time, as an inclusive stream id."""
    text = text.strip()
    if _STREAM_ID.match(text):
        return text
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise OffsetError(
            f"{text!r} is neither a stream id (like 1700000000000-0) nor an ISO time "
            "(like 2024-01-01T12:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    ms = int(moment.timestamp() * 1000)
    return f"{ms}-{(1 << 64) - 1 if end else 0}"


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass
class ReplayResult:
    channel: str
    start: str
    end: str
    scanned: int = 0
    matched: int = 0
    scheduled: int = 0
    skipped_poison: int = 0
    first_retained: str | None = None
    dry_run: bool = False
    event_ids: list[str] = field(default_factory=list)


async def replay(
    bus: EventBus,
    channel: str,
    start: str,
    end: str = "+",
    *,
    job_id: str | None = None,
    type_: str | None = None,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
    chunk: int = 1000,
) -> ReplayResult:
    """Schedule every retained event in ``[start, end]`` matching the filters for ``channel``."""
    if channel not in REPLAYABLE:
        raise OffsetError(
            f"replay delivers to {' or '.join(REPLAYABLE)}; the log is rebuilt with "
            "`bookgen-events rebuild-log`, and WebSocket clients resume with last_event_id"
        )
    first = await bus.range(count=1)
    last = await bus.revrange(count=1)
    if not first:
        raise OffsetError("the event stream is empty: nothing to replay")
    lo = parse_offset(start)
    hi = "+" if end in ("+", "") else parse_offset(end, end=True)
    first_id, last_id = first[0][0], last[0][0]
    if hi != "+" and _id_key(lo) > _id_key(hi):
        raise OffsetError(f"--from {start} is after --to {end}")
    if _id_key(lo) > _id_key(last_id):
        raise OffsetError(f"--from {start} is after the newest event ({last_id})")
    if hi != "+" and _id_key(hi) < _id_key(first_id):
        raise OffsetError(
            f"--to {end} is before the oldest retained event ({first_id}); older events "
            "were trimmed (STREAM_MAXLEN)"
        )
    result = ReplayResult(channel, lo, hi, first_retained=first_id, dry_run=dry_run)
    total = max(await bus.length(), 1)
    cursor = lo
    while True:
        entries = await bus.range(cursor, hi, count=chunk)
        if cursor != lo:
            entries = entries[1:]  # the cursor entry was handled in the previous chunk
        if not entries:
            break
        batch: list[tuple[Scheduled, int]] = []
        for entry_id, fields in entries:
            result.scanned += 1
            try:
                event = decode(fields)
            except ValueError:
                result.skipped_poison += 1
                continue
            if (job_id and event.job_id != job_id) or (type_ and event.type.value != type_):
                continue
            result.matched += 1
            result.event_ids.append(event.id)
            batch.append((Scheduled(fields[WIRE_FIELD], entry_id, 1, None, "replay"), now_ms()))
        if batch and not dry_run:
            result.scheduled += await bus.schedule(channel, batch)
        cursor = entries[-1][0]
        if on_progress:
            on_progress(result.scanned, total)
    return result


async def dead_letters(bus: EventBus, channel: str) -> list[tuple[str, DeadLetter]]:
    """``(dlq entry id, letter)`` for every dead letter of ``channel``, oldest first."""
    return [
        (dlq_id, DeadLetter.from_fields(fields))
        for dlq_id, fields in await bus.range(stream=bus.names.dlq(channel))
    ]


async def redrive(
    bus: EventBus, channel: str, ids: list[str] | None = None
) -> tuple[int, list[str]]:
    """Send dead letters back through the channel; returns (redriven, skipped poison ids)."""
    letters = await dead_letters(bus, channel)
    if ids:
        wanted = set(ids)
        letters = [(i, d) for i, d in letters if i in wanted or d.event_id in wanted]
    items: list[tuple[str, Scheduled]] = []
    poison: list[str] = []
    for dlq_id, letter in letters:
        if letter.poison or not letter.event:
            poison.append(dlq_id)
            continue
        try:
            json.loads(letter.event)
        except ValueError:
            poison.append(dlq_id)
            continue
        recipient = letter.recipient or None
        items.append((dlq_id, Scheduled(letter.event, letter.entry_id, 1, recipient, "redrive")))
    return await bus.redrive(channel, items), poison
