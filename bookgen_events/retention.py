"""Retention by age (SPEC 11): STREAM_RETENTION, DLQ_RETENTION and LOG_RETENTION.

Each is off unless set. ``STREAM_RETENTION`` trims the events and deliveries streams of
every partition by age (XTRIM MINID, beside the STREAM_MAXLEN cap), but never past what a
consumer group still has to read or settle: the cut stops at the oldest entry pending in a
group and at each group's last delivered entry, so a channel that is down loses nothing to
age (STREAM_MAXLEN stays the hard bound). A retry or a replay is not in the stream but in
the channel's scheduled set, with its event (:mod:`~bookgen_events.schedule`), and a
scheduled event waits in the held set (:mod:`~bookgen_events.scheduled_events`): trimming
never touches either. ``DLQ_RETENTION`` trims each channel's dead letters by age.
``LOG_RETENTION`` deletes old ``notifications`` rows in small batches
(:func:`~bookgen_events.db.delete_rows_before`), run by the logger worker
(:func:`consumers.logger.keep_log_trimmed`), so no other process loads SQLAlchemy.

:func:`keep_trimmed` runs the stream and dead-letter trims in every worker process (a trim
is idempotent, so several processes doing it is harmless), every TRIM_INTERVAL_S.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from redis.exceptions import RedisError

from .bus import EventBus
from .channel import DEAD_LETTER_GROUPS
from .logs import get_logger
from .outcomes import now_ms
from .settings import Settings

log = get_logger("bookgen_events.retention")

#: How often a worker process trims by age: retention is counted in hours or days.
TRIM_INTERVAL_S = 60.0


def _id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


async def safe_cut(bus: EventBus, stream: str, before_ms: int) -> str:
    """The MINID to trim ``stream`` to: ``before_ms``, or earlier where a group still has
    entries to read (after its last delivered one) or to settle (its oldest pending)."""
    cut = (before_ms, 0)
    for group in await bus.groups_info(stream):
        name = group["name"]
        oldest = await bus.pending_oldest(name, stream)
        if oldest is not None:
            cut = min(cut, _id(oldest[0]))
        last_ms, last_seq = _id(group.get("last-delivered-id") or "0-0")
        cut = min(cut, (last_ms, last_seq + 1))  # the entries after it are unread
    return f"{cut[0]}-{cut[1]}"


async def trim_streams(bus: EventBus, retention_s: float) -> dict[str, int]:
    """Trim every partition's events and deliveries streams to ``retention_s``; how many
    entries each lost."""
    before = now_ms() - int(retention_s * 1000)
    trimmed: dict[str, int] = {}
    for part in bus.partitions:
        for stream in (part.names.events, part.names.deliveries):
            trimmed[stream] = await part.trim_before(await safe_cut(part, stream, before), stream)
    return trimmed


async def trim_dead_letters(
    bus: EventBus, retention_s: float, channels: Iterable[str] = DEAD_LETTER_GROUPS
) -> dict[str, int]:
    """Trim every channel's dead letters (every partition) to ``retention_s``."""
    before = now_ms() - int(retention_s * 1000)
    trimmed: dict[str, int] = {}
    for part in bus.partitions:
        for channel in channels:
            stream = part.names.dlq(channel)
            trimmed[stream] = await part.dead_letters.trim_before(channel, before)
    return trimmed


async def trim_once(bus: EventBus, settings: Settings) -> dict[str, Any]:
    """Apply STREAM_RETENTION and DLQ_RETENTION once (each only when set)."""
    done: dict[str, Any] = {}
    if settings.stream_retention is not None:
        done["streams"] = await trim_streams(bus, settings.stream_retention)
    if settings.dlq_retention is not None:
        done["dead_letters"] = await trim_dead_letters(bus, settings.dlq_retention)
    return done


async def keep_trimmed(
    bus: EventBus, settings: Settings, stop: asyncio.Event, interval_s: float = TRIM_INTERVAL_S
) -> None:
    """Trim by age every ``interval_s`` until ``stop`` (nothing to do when both are unset)."""
    if settings.stream_retention is None and settings.dlq_retention is None:
        return
    while not stop.is_set():
        try:
            done = await trim_once(bus, settings)
            removed = sum(n for part in done.values() for n in part.values())
            if removed:
                log.info("trimmed by age", entries=removed)
        except (RedisError, OSError) as exc:
            log.warning("trimming by age failed", error=str(exc))
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
