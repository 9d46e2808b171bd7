"""One broadcast reader per partition -> subscribers found through job_id and user_id indexes.

Every gateway replica reads every partition's whole stream (``STREAM_PARTITIONS``, one
reader task each) with plain XREAD (never a consumer group, which would split events
between replicas). The fan-out keeps each partition's position; a message's ``id`` is
those positions with its own entry's in its partition (:mod:`gateway.cursor`), so it is
the same for every subscriber and resumes any of them exactly. Each event is decoded, serialised and framed
once; the same :class:`Message` goes to every matching :class:`Subscriber`. Delivery is
synchronous and never awaits, so one slow client cannot delay the others: it queues up to
its bound and is then closed with 1013.
"""

from __future__ import annotations

import asyncio

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from bookgen_events.bus import EventBus
from bookgen_events.cancelling import cancel_and_wait
from bookgen_events.errors import DecodeError
from bookgen_events.events import Event, decode
from bookgen_events.logs import get_logger
from bookgen_events.subscriber_index import SubscriberIndex

from .cursor import format_cursor
from .metrics import WS_DELIVERED, WS_EVENTS
from .subscriber import Message, Subscriber

log = get_logger("gateway.fanout")


class Fanout:
    """Reads every partition from its current end and routes each event through the indexes."""

    def __init__(self, bus: EventBus, *, batch: int = 500, block_ms: int = 1000) -> None:
        self.bus = bus
        self.parts = bus.partitions
        self.batch = batch
        self.block_ms = block_ms
        self.by_job: dict[str, set[Subscriber]] = {}
        self.by_user: dict[str, set[Subscriber]] = {}
        #: Per partition, the last entry dispatched ("" until its end is known): every
        #: later one reaches subscribers.
        self.positions = ["0-0"] * len(self.parts)
        self.all: set[Subscriber] = set()
        self.idle = asyncio.Event()  # set while nobody is subscribed (graceful shutdown waits)
        self.idle.set()
        self._tasks: list[asyncio.Task[None]] = []
        #: Subscribers' preferences (SPEC 9), when the app keeps them: see :meth:`muted`.
        self.subscribers: SubscriberIndex | None = None

    def muted(self, event: Event) -> str | None:
        """The user whose own connections skip ``event``: they turned its type off on the
        WebSocket. Others watching the job (an operator's dashboard) still get it."""
        if self.subscribers is None or event.user_id is None:
            return None
        subscriber = self.subscribers.get(event.user_id)
        if subscriber is None or subscriber.wants("websocket", event.type):
            return None
        return event.user_id

    @property
    def position(self) -> str:
        """The positions as a resume id (:mod:`gateway.cursor`): after it, everything is live."""
        return format_cursor([p or "0-0" for p in self.positions])

    async def start(self) -> None:
        """Start reading from each stream's current end (after Redis answers, if it is down)."""
        for p in range(len(self.parts)):
            try:
                await self._seek_end(p)
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("Redis unavailable at start; the reader keeps retrying", error=str(exc))
                self.positions[p] = ""
        self._tasks = [
            asyncio.create_task(self._run(p), name=f"gateway-fanout-{p}")
            for p in range(len(self.parts))
        ]

    async def _seek_end(self, p: int) -> None:
        info = await self.parts[p].stream_info()
        self.positions[p] = info["last-generated-id"] if info else "0-0"

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)

    @property
    def running(self) -> bool:
        return bool(self._tasks) and not any(task.done() for task in self._tasks)

    def subscribe(self, sub: Subscriber) -> str:
        """Index ``sub``; returns the resume id after which it receives every event live."""
        for job in sub.jobs:
            self.by_job.setdefault(job, set()).add(sub)
        for user in sub.users:
            self.by_user.setdefault(user, set()).add(sub)
        self.all.add(sub)
        self.idle.clear()
        return self.position

    def unsubscribe(self, sub: Subscriber) -> None:
        for key, index in ((sub.jobs, self.by_job), (sub.users, self.by_user)):
            for value in key:
                subs = index.get(value)
                if subs is not None:
                    subs.discard(sub)
                    if not subs:
                        del index[value]
        self.all.discard(sub)
        if not self.all:
            self.idle.set()

    def stats(self) -> dict[str, int]:
        """The seed's ``/ws/status`` connection counts."""
        return {
            "total_users": len(self.by_user),
            "total_user_connections": sum(len(s) for s in self.by_user.values()),
            "total_jobs": len(self.by_job),
            "total_job_connections": sum(len(s) for s in self.by_job.values()),
        }

    async def _run(self, p: int) -> None:
        delay = 0.1
        part = self.parts[p]
        while True:
            try:
                if not self.positions[p]:
                    await self._seek_end(p)
                entries = await part.read(
                    self.positions[p], count=self.batch, block_ms=self.block_ms
                )
            except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
                log.warning("stream read failed; retrying", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            except Exception:  # e.g. WRONGTYPE: keep the reader alive and the cause visible
                log.exception("stream read failed unexpectedly; retrying", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            delay = 0.1
            self.dispatch(entries, p)

    def dispatch(self, entries: list[tuple[str, dict[str, str]]], partition: int = 0) -> int:
        """Route a batch of ``partition``'s entries; returns the number of deliveries. Never
        awaits.

        Each subscriber gets all of its messages from the batch as one write, and
        subscribers receiving the same messages share the same joined bytes.
        """
        if not entries:
            return 0
        WS_EVENTS.inc(len(entries))
        if not self.all:
            self.positions[partition] = entries[-1][0]
            return 0
        if len(self.parts) == 1:
            around = None
        else:  # the other partitions' positions, around this one's (read before it moves)
            others = [p or "0-0" for p in self.positions]
            around = (format_cursor(others[:partition]), format_cursor(others[partition + 1 :]))
        self.positions[partition] = entries[-1][0]
        routed = [
            r for r in (self._route(i, f, partition, around) for i, f in entries) if r is not None
        ]
        count = 0
        if len(routed) == 1:  # the common case at moderate rates: no regrouping
            message, targets = routed[0]
            batch = [message]
            for sub in targets:
                sub.deliver(batch, message.frame)
            count = len(targets)
        elif routed:
            outbox: dict[Subscriber, list[Message]] = {}
            for message, targets in routed:
                for sub in targets:
                    box = outbox.get(sub)
                    if box is None:
                        outbox[sub] = [message]
                    else:
                        box.append(message)
            joined: dict[tuple[Message, ...], bytes] = {}
            for sub, box in outbox.items():
                key = tuple(box)
                data = joined.get(key)
                if data is None:
                    data = joined[key] = b"".join(m.frame for m in box)
                sub.deliver(box, data)
                count += len(box)
        WS_DELIVERED.inc(count)
        return count

    def _route(
        self,
        entry_id: str,
        fields: dict[str, str],
        partition: int,
        around: tuple[str, str] | None,
    ) -> tuple[Message, list[Subscriber]] | None:
        """The entry's message and its subscribers (each once), through the indexes."""
        try:
            event = decode(fields)
        except DecodeError as exc:
            log.warning("undecodable entry skipped", stream_id=entry_id, error=str(exc))
            return None
        jobs = self.by_job.get(event.job_id) if event.job_id else None
        users = self.by_user.get(event.user_id) if event.user_id else None
        if not jobs and not users:
            return None
        # A list, not the live set: a delivery can close (and unsubscribe) a subscriber.
        targets = list(jobs) if jobs else []
        if users:  # watching both the job and the user: once
            targets += [sub for sub in users if not jobs or sub not in jobs]
        if self.subscribers is not None and (user := self.muted(event)) is not None:
            targets = [sub for sub in targets if user not in sub.users]
        if around is None:
            return Message.from_event(entry_id, event), targets
        cursor = ".".join(filter(None, (around[0], entry_id, around[1])))
        return Message.from_event(entry_id, event, cursor=cursor, partition=partition), targets
