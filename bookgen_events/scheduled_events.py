"""Scheduled events (SPEC 11): events held until their ``deliver_at``, then appended.

Not the deliveries due later of :mod:`~bookgen_events.schedule` (a channel's retries): these
events are not in the stream yet, so no channel, the WebSocket included, sees them before
they are due. ``emit`` holds one (``scripts/emit_many.lua``) in two structures named after
the event stream (:attr:`StreamNames.held <bookgen_events.keys.StreamNames.held>`): a sorted
set of ids scored by due time in ms, and a hash of id -> event JSON, so a cancel finds an
event by its id.

Whichever process runs :func:`keep_moving` (every worker process, the gateway and ``up``,
one per partition) moves due events: it reads the head of the set, then ``scripts/move_due.lua`` removes each
one still there and due by Redis's clock and appends it, with its own id, in one script.
No event is moved twice (a second mover finds it gone) and none is lost with a process
SIGKILLed mid-move (the script ran wholly or not at all), so there is no scheduler to keep
alive and no lease to expire: the move has nothing outside Redis to finish.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import scripts
from .connection import run_script
from .events import WIRE_FIELD
from .keys import StreamNames
from .logs import get_logger

log = get_logger("bookgen_events.scheduled_events")

#: Held events one move reads and moves at most (one script call: Redis is never held long).
MOVE_BATCH = 500
#: How often a mover looks for due events when none were due: due -> appended stays well
#: under a second, for one ZRANGE of an empty head per process and interval.
MOVE_INTERVAL_S = 0.2


class Cancelled(Enum):
    """What :meth:`ScheduledEvents.cancel` found."""

    CANCELLED = "cancelled"
    ALREADY_SENT = "already_sent"
    UNKNOWN = "unknown"

    @classmethod
    def from_reply(cls, reply: Any) -> Cancelled:
        """From ``cancel_event.lua``'s 1, -1 or 0."""
        return _CANCELLED[int(reply)]


_CANCELLED = {1: Cancelled.CANCELLED, -1: Cancelled.ALREADY_SENT, 0: Cancelled.UNKNOWN}


@dataclass(frozen=True, slots=True)
class HeldEvent:
    """An event waiting for its due time."""

    event_id: str
    due_ms: int
    event: dict[str, Any]

    def shown(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "deliver_at": self.event.get("deliver_at"),
            "due_ms": self.due_ms,
            "type": self.event.get("type"),
            "job_id": self.event.get("job_id"),
            "user_id": self.event.get("user_id"),
        }


class ScheduledEvents:
    """The held events of one deployment, over the injected client."""

    def __init__(self, redis: Redis, names: StreamNames, *, maxlen: int, window_ms: int) -> None:
        self._r: Any = redis  # decoded replies; see EventBus
        self.redis = redis
        self.names = names
        self.maxlen = maxlen
        self.window_ms = window_ms
        self._move = scripts.register(redis, "move_due")
        self._cancel = scripts.register(redis, "cancel_event")

    async def move_due(self, *, limit: int = MOVE_BATCH, now_ms: int | None = None) -> list[str]:
        """Append the held events due now (at most ``limit``); their new stream ids.

        ``now_ms`` (default: this process's clock) only decides whether to ask Redis at all;
        the script judges what is due by Redis's clock, so a fast clock moves nothing early.
        """
        held, _ = self.names.held
        head = await self._r.zrange(held, 0, limit - 1, withscores=True)
        now = int(time.time() * 1000) if now_ms is None else now_ms
        due = [member for member, score in head if score <= now]
        if not due:
            return []
        keys = [self.names.events, *self.names.held, *map(self.names.idempotency, due)]
        args = [self.maxlen, WIRE_FIELD, self.window_ms, *due]
        return list(await run_script(self.redis, self._move, keys, args))

    async def cancel(self, event_id: str) -> Cancelled:
        """Remove a held event (its id may then be emitted again)."""
        keys = [*self.names.held, self.names.idempotency(event_id)]
        return Cancelled.from_reply(await run_script(self.redis, self._cancel, keys, [event_id]))

    async def count(self) -> int:
        """How many events are held (each is "still scheduled" in the accounting, SPEC 14)."""
        return int(await self._r.zcard(self.names.held[0]))

    async def list(self, limit: int = 100) -> list[HeldEvent]:
        """The held events due first (at most ``limit``), soonest first."""
        held, events = self.names.held
        head = await self._r.zrange(held, 0, limit - 1, withscores=True)
        if not head:
            return []
        bodies = await self._r.hmget(events, [member for member, _ in head])
        return [
            HeldEvent(member, int(score), json.loads(body))
            for (member, score), body in zip(head, bodies, strict=True)
            if body is not None
        ]


async def cancel_in(parts: Sequence[ScheduledEvents], event_id: str) -> Cancelled:
    """Cancel ``event_id`` in whichever partition holds it (an id alone names no partition)."""
    found = Cancelled.UNKNOWN
    for part in parts:
        found = await part.cancel(event_id)
        if found is not Cancelled.UNKNOWN:
            break
    return found


async def count_in(parts: Sequence[ScheduledEvents]) -> int:
    """Events held in every partition."""
    return sum([await part.count() for part in parts])


async def list_in(parts: Sequence[ScheduledEvents], limit: int = 100) -> list[HeldEvent]:
    """The ``limit`` held events due first, over every partition."""
    held = [event for part in parts for event in await part.list(limit)]
    return sorted(held, key=lambda e: (e.due_ms, e.event_id))[:limit]


async def keep_moving(
    scheduled: ScheduledEvents, stop: asyncio.Event, interval_s: float = MOVE_INTERVAL_S
) -> None:
    """Move due events until ``stop``: at once again after a full batch, else every interval.

    Redis being away pauses it (logged), as it pauses the consumers.
    """
    while not stop.is_set():
        try:
            moved = len(await scheduled.move_due())
        except (RedisError, OSError) as exc:
            log.warning("moving due scheduled events failed", error=str(exc))
            moved = 0
        if moved >= MOVE_BATCH:
            continue
        try:
            await asyncio.wait_for(stop.wait(), interval_s)
        except TimeoutError:
            pass
