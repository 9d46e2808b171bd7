"""Operator functions as plain async functions; the CLI and the HTTP API both call these."""

from __future__ import annotations

from typing import Any

from .bus import EventBus
from .channel import DEAD_LETTER_GROUPS
from .outcomes import Outcome, now_ms
from .scheduled_events import count_in
from .settings import Settings

_LAG_COUNT_CAP = 100_000


def _id_ms(entry_id: str | None) -> int | None:
    if not entry_id:
        return None
    try:
        return int(entry_id.split("-")[0])
    except ValueError:
        return None


def _age_ms(entry_id: str | None) -> int | None:
    ms = _id_ms(entry_id)
    return None if ms is None else now_ms() - ms


async def _lag(bus: EventBus, stream: str, group: dict[str, Any]) -> int | None:
    """Entries not yet delivered to the group; computed where XINFO has no ``lag`` (Redis 6.2)."""
    lag = group.get("lag")
    if lag is not None:
        return int(lag)
    last = group.get("last-delivered-id") or "0-0"
    entries = await bus.range(f"({last}", "+", count=_LAG_COUNT_CAP, stream=stream)
    return len(entries)


async def _groups(bus: EventBus, stream: str) -> list[dict[str, Any]]:
    out = []
    for group in await bus.groups_info(stream):
        name = group["name"]
        oldest = await bus.pending_oldest(name, stream)
        consumers = await bus.consumers_info(name, stream)
        out.append(
            {
                "group": name,
                "lag": await _lag(bus, stream, group),
                "pending": int(group.get("pending", 0)),
                "last_delivered_id": group.get("last-delivered-id"),
                "oldest_pending_id": oldest[0] if oldest else None,
                "oldest_pending_age_ms": oldest[1] if oldest else None,
                "consumers": [
                    {
                        "name": c["name"],
                        "pending": int(c.get("pending", 0)),
                        "idle_ms": int(c.get("idle", 0)),
                    }
                    for c in consumers
                ],
            }
        )
    return out


async def _stream(bus: EventBus, stream: str) -> dict[str, Any]:
    info = await bus.stream_info(stream)
    if info is None:
        return {"name": stream, "exists": False, "length": 0, "groups": []}
    first = info.get("first-entry")
    last = info.get("last-entry")
    first_id = first[0] if first else None
    last_id = last[0] if last else None
    return {
        "name": stream,
        "exists": True,
        "length": int(info.get("length", 0)),
        "first_id": first_id,
        "last_id": last_id,
        "last_generated_id": info.get("last-generated-id"),
        "entries_added": info.get("entries-added"),
        "oldest_age_ms": _age_ms(first_id),
        "groups": await _groups(bus, stream),
    }


async def retention(bus: EventBus, settings: Settings, channels: list[str]) -> dict[str, Any]:
    """Each retention setting (seconds, None: off) and the age of the oldest entry kept."""
    letters = {c: await bus.dead_letters.oldest_ms(c) for c in channels}
    streams = {}
    for stream in (bus.names.events, bus.names.deliveries):
        first = await bus.range(count=1, stream=stream)
        streams[stream] = _age_ms(first[0][0]) if first else None
    return {
        "stream_retention_s": settings.stream_retention,
        "stream_maxlen": settings.stream_maxlen,
        "dlq_retention_s": settings.dlq_retention,
        "log_retention_s": settings.log_retention,
        "oldest_age_ms": streams,
        "oldest_dead_letter_age_ms": {
            c: None if ms is None else now_ms() - ms for c, ms in letters.items()
        },
    }


async def status(bus: EventBus, settings: Settings | None = None) -> dict[str, Any]:
    """Everything an operator needs at a glance: streams, groups, DLQs, retries, memory;
    with ``settings``, the retention settings and the oldest entries kept too."""
    names = bus.names
    channels = set(DEAD_LETTER_GROUPS)
    events = await _stream(bus, names.events)
    channels.update(g["group"] for g in events["groups"])
    pipe = bus.redis.pipeline(transaction=False)
    ordered = sorted(channels)
    for channel in ordered:
        pipe.xlen(names.dlq(channel))
        pipe.zcard(names.scheduled(channel))
    counts = await pipe.execute()
    memory = await bus.redis.info("memory")
    server = await bus.redis.info("server")
    report = {
        "events": events,
        "deliveries": await _stream(bus, names.deliveries),
        "dead_letters": {c: int(counts[2 * i]) for i, c in enumerate(ordered)},
        "scheduled": {c: int(counts[2 * i + 1]) for i, c in enumerate(ordered)},
        # Events held for their deliver_at: "still scheduled" in the accounting (SPEC 14)
        "scheduled_events": await count_in([part.scheduled_events for part in bus.partitions]),
        "redis": {
            "version": server.get("valkey_version") or server.get("redis_version"),
            "used_memory": memory.get("used_memory"),
            "used_memory_human": memory.get("used_memory_human"),
        },
    }
    if settings is not None:
        report["retention"] = await retention(bus, settings, ordered)
    return report


# -- endpoints (SPEC 9) -------------------------------------------------------------------------

#: How many of the newest outcomes ``endpoint_attempts`` looks through: the view is "recent".
ATTEMPTS_SCAN = 10_000


async def endpoint_attempts(
    bus: EventBus, endpoint_id: str, *, limit: int = 50, scan: int = ATTEMPTS_SCAN
) -> list[dict[str, Any]]:
    """The endpoint's most recent delivery attempts, newest first: event id, time, status,
    status code, time taken, error. Bounded: only the newest ``scan`` outcomes are read."""
    prefix = f"{endpoint_id} "
    found: list[dict[str, Any]] = []
    for entry_id, fields in await bus.revrange(count=scan, stream=bus.names.deliveries):
        if not fields.get("recipient", "").startswith(prefix):
            continue
        outcome = Outcome.from_fields(fields)
        found.append(
            {
                "outcome_id": entry_id,
                "event_id": outcome.event_id,
                "at_ms": outcome.at_ms,
                "attempt": outcome.attempt,
                "status": outcome.status,
                "final": outcome.final,
                "status_code": outcome.status_code,
                "duration_ms": outcome.duration_ms,
                "error": outcome.error or None,
            }
        )
        if len(found) >= limit:
            break
    return found


async def recover_endpoint(bus: EventBus, endpoint_id: str, since_ms: int) -> tuple[int, int]:
    """Redeliver what was dead-lettered for the endpoint since ``since_ms`` (its retries
    exhausted, or it was disabled): ``(redriven, poison left)``."""
    prefix = f"{endpoint_id} "
    letters = await bus.dead_letters.letters("webhook")
    ids = [i for i, d in letters if d.recipient.startswith(prefix) and d.at_ms >= since_ms]
    if not ids:
        return 0, 0
    count, poison = await bus.dead_letters.redrive("webhook", ids)
    return count, len(poison)
