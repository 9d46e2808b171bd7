"""Operator functions as plain async functions; the CLI and the HTTP API both call these."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from .bus import EventBus
from .cancelling import cancel_and_wait
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


def _merged_groups(reports: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per group over every partition: lag and pending summed, the oldest pending."""
    merged: dict[str, dict[str, Any]] = {}
    for groups in reports:
        for g in groups:
            row = merged.get(g["group"])
            if row is None:
                merged[g["group"]] = {**g, "consumers": [dict(c) for c in g["consumers"]]}
                continue
            row["lag"] = None if row["lag"] is None or g["lag"] is None else row["lag"] + g["lag"]
            row["pending"] += g["pending"]
            row["last_delivered_id"] = max(
                (row["last_delivered_id"], g["last_delivered_id"]), key=lambda i: _id_key(i)
            )
            if (g["oldest_pending_age_ms"] or -1) > (row["oldest_pending_age_ms"] or -1):
                row["oldest_pending_id"] = g["oldest_pending_id"]
                row["oldest_pending_age_ms"] = g["oldest_pending_age_ms"]
            consumers = {c["name"]: c for c in row["consumers"]}
            for c in g["consumers"]:
                seen = consumers.get(c["name"])
                if seen is None:
                    row["consumers"].append(dict(c))
                else:
                    seen["pending"] += c["pending"]
                    seen["idle_ms"] = min(seen["idle_ms"], c["idle_ms"])
    return list(merged.values())


def _id_key(entry_id: str | None) -> tuple[int, int]:
    ms, _, seq = (entry_id or "0-0").partition("-")
    return int(ms), int(seq or 0)


def _merged_stream(name: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Every partition's stream report as one: lengths summed, the widest span, groups merged."""
    kept = [p for p in parts if p["exists"]]
    if not kept:
        return {"name": name, "exists": False, "length": 0, "groups": []}
    firsts = [p["first_id"] for p in kept if p["first_id"]]
    lasts = [p["last_id"] for p in kept if p["last_id"]]
    first_id = min(firsts, key=_id_key) if firsts else None
    added = [p["entries_added"] for p in kept]
    return {
        "name": name,
        "exists": True,
        "length": sum(p["length"] for p in kept),
        "first_id": first_id,
        "last_id": max(lasts, key=_id_key) if lasts else None,
        "last_generated_id": max((p["last_generated_id"] for p in kept), key=_id_key),
        "entries_added": None if None in added else sum(added),
        "oldest_age_ms": _age_ms(first_id),
        "groups": _merged_groups([p["groups"] for p in kept]),
    }


async def retention(bus: EventBus, settings: Settings, channels: list[str]) -> dict[str, Any]:
    """Each retention setting (seconds, None: off) and the age of the oldest entry kept."""
    letters = {c: await bus.all_dead_letters.oldest_ms(c) for c in channels}
    streams = {}
    for part in bus.partitions:
        for stream in (part.names.events, part.names.deliveries):
            first = await part.range(count=1, stream=stream)
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
    with ``settings``, the retention settings and the oldest entries kept too.

    With ``STREAM_PARTITIONS`` > 1, ``events`` and ``deliveries`` sum every partition (lag
    and pending per group added up) and ``partitions`` lists each partition's own.
    """
    parts = bus.partitions
    per_part: list[dict[str, Any]] = [
        {
            "partition": p,
            "events": await _stream(part, part.names.events),
            "deliveries": await _stream(part, part.names.deliveries),
        }
        for p, part in enumerate(parts)
    ]
    channels = set(DEAD_LETTER_GROUPS)
    for one in per_part:
        channels.update(g["group"] for g in one["events"]["groups"])
    ordered = sorted(channels)
    dead = dict.fromkeys(ordered, 0)
    scheduled = dict.fromkeys(ordered, 0)
    for part in parts:
        pipe = bus.redis.pipeline(transaction=False)
        for channel in ordered:
            pipe.xlen(part.names.dlq(channel))
            pipe.zcard(part.names.scheduled(channel))
        counts = await pipe.execute()
        for i, c in enumerate(ordered):
            dead[c] += int(counts[2 * i])
            scheduled[c] += int(counts[2 * i + 1])
    memory = await bus.redis.info("memory")
    server = await bus.redis.info("server")
    if len(parts) == 1:
        events, deliveries = per_part[0]["events"], per_part[0]["deliveries"]
    else:
        prefix = bus.names.prefix
        events = _merged_stream(f"{prefix}:{{*}}:events", [r["events"] for r in per_part])
        deliveries = _merged_stream(
            f"{prefix}:{{*}}:deliveries", [r["deliveries"] for r in per_part]
        )
    report: dict[str, Any] = {
        "events": events,
        "deliveries": deliveries,
        "dead_letters": dead,
        "scheduled": scheduled,
        # Events held for their deliver_at: "still scheduled" in the accounting (SPEC 14)
        "scheduled_events": await count_in([part.scheduled_events for part in parts]),
        "redis": {
            "version": _one_node(server).get("valkey_version")
            or _one_node(server).get("redis_version"),
            "used_memory": _summed(memory, "used_memory"),
            "used_memory_human": _human(_summed(memory, "used_memory")),
        },
    }
    if len(parts) > 1:
        report["partitions"] = per_part
    if settings is not None:
        report["retention"] = await retention(bus, settings, ordered)
    return report


def _per_node(info: dict[str, Any]) -> list[dict[str, Any]]:
    """INFO's sections: one dict from a plain Redis, one per node (by address) from a cluster."""
    values = list(info.values())
    if values and all(isinstance(v, dict) for v in values):
        return [v for v in values if isinstance(v, dict)]
    return [info]


def _one_node(info: dict[str, Any]) -> dict[str, Any]:
    return _per_node(info)[0]


def _summed(info: dict[str, Any], field: str) -> int | None:
    found = [n[field] for n in _per_node(info) if isinstance(n.get(field), int)]
    return sum(found) if found else None


def _human(size: int | None) -> str | None:
    if size is None:
        return None
    amount = float(size)
    for unit in ("B", "K", "M", "G"):
        if amount < 1024:
            return f"{amount:.2f}{unit}"
        amount /= 1024
    return f"{amount:.2f}T"


TailEntry = tuple[int, str, dict[str, str]]


async def tail(
    bus: EventBus,
    *,
    start: str = "$",
    count: int = 0,
    follow: bool = False,
    deliveries: bool = False,
    page: int = 100,
) -> AsyncIterator[TailEntry]:
    """``(partition, stream id, fields)`` of every partition's events (or ``deliveries``):
    after ``start`` (``$``: now, pinned when this returns; else a stream id), the last
    ``count`` first (if given), and with ``follow`` new ones as they come. Each partition's
    in order; across partitions as read (the last ``count`` in stream-id order)."""
    parts = bus.partitions
    streams = [part.names.deliveries if deliveries else part.names.events for part in parts]
    lasts = []
    for part, stream in zip(parts, streams, strict=True):
        # "$" is pinned to the newest id now: a later XREAD "$" would skip what arrived
        # between two reads.
        newest = await part.revrange(count=1, stream=stream) if start == "$" else []
        lasts.append(newest[0][0] if newest else "0-0" if start == "$" else start)
    if count:
        floor = "-" if start == "$" else f"({start}"
        recent: list[TailEntry] = []
        for p, (part, stream) in enumerate(zip(parts, streams, strict=True)):
            mine = await part.revrange("+", floor, count=count, stream=stream)
            if mine:
                lasts[p] = mine[0][0]
            recent += [(p, i, f) for i, f in mine]
        recent = sorted(recent, key=lambda r: (_id_key(r[1]), r[0]))[-count:]
        if not follow:
            return _replay(recent)
    else:
        recent = []
    return _read(bus, streams, lasts, recent, follow, page)


async def _replay(entries: list[TailEntry]) -> AsyncIterator[TailEntry]:
    for entry in entries:
        yield entry


async def _read(
    bus: EventBus,
    streams: list[str],
    lasts: list[str],
    recent: list[TailEntry],
    follow: bool,
    page: int,
) -> AsyncIterator[TailEntry]:
    """:func:`tail`'s entries: ``recent``, then each partition after its ``lasts``, read by
    a task per partition (a blocking read each: one partition never waits for another)."""
    parts = bus.partitions
    for entry in recent:
        yield entry
    queue: asyncio.Queue[tuple[int, str, dict[str, str]] | None] = asyncio.Queue(maxsize=1000)
    # A reader stops at this flag too: redis-py may swallow a cancel during a blocking read.
    stop = asyncio.Event()

    async def read(p: int) -> None:
        try:
            last = lasts[p]
            while not stop.is_set():
                entries = await parts[p].read(
                    last, count=page, block_ms=1000 if follow else None, stream=streams[p]
                )
                for entry_id, fields in entries:
                    await queue.put((p, entry_id, fields))
                    last = entry_id
                if not follow and not entries:
                    return
        finally:
            if not stop.is_set():  # else nobody reads the queue any more
                await queue.put(None)

    readers = [asyncio.create_task(read(p), name=f"tail-{p}") for p in range(len(parts))]
    try:
        running = len(readers)
        while running:
            item = await queue.get()
            if item is None:
                running -= 1
            else:
                yield item
        await asyncio.gather(*readers)  # a reader's error, raised here
    finally:
        stop.set()
        await cancel_and_wait(readers)


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
    newest = [
        entry
        for part in bus.partitions
        for entry in await part.revrange(count=scan, stream=part.names.deliveries)
    ]
    if len(bus.partitions) > 1:
        newest = sorted(newest, key=lambda e: _id_key(e[0]), reverse=True)[:scan]
    for entry_id, fields in newest:
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
    letters = await bus.all_dead_letters.letters("webhook")
    ids = [i for i, d in letters if d.recipient.startswith(prefix) and d.at_ms >= since_ms]
    if not ids:
        return 0, 0
    count, poison = await bus.all_dead_letters.redrive("webhook", ids)
    return count, len(poison)
