"""The event bus: the one module that speaks Redis Streams commands (X*) to the event and
outcome streams — appends, consumer groups, reads, the commit, XINFO.

Around it, one concept each: key names in :mod:`~bookgen_events.keys`, the Lua scripts in
``scripts/*.lua``, what a flush writes in :mod:`~bookgen_events.commit`, the scheduled sets
in :mod:`~bookgen_events.schedule` and the dead letters in :mod:`~bookgen_events.dlq` (the
bus hands out both as ``bus.scheduled`` and ``bus.dead_letters``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from . import scripts, tracing
from .commit import Commit
from .connection import command, is_cluster, is_resp3, run_script
from .dlq import AllDeadLetters, DeadLetters
from .errors import ConfigError
from .events import Event, encode, make_event
from .idempotency import Emitter
from .keys import StreamNames
from .outcomes import OUTCOME_ALWAYS, OUTCOME_FIELDS
from .partitions import PartitionedEmitter
from .schedule import Scheduled, ScheduledDeliveries
from .scheduled_events import ScheduledEvents
from .tracing import traced_event

__all__ = ["Commit", "Entry", "EventBus", "Scheduled", "StreamNames"]

Entry = tuple[str, dict[str, str]]


def _entries(reply: Any) -> list[Entry]:
    """Entries of a one-stream XREAD[GROUP] reply as :func:`~bookgen_events.connection.command`
    returns it (raw RESP3: ``{stream: [[id, [field, value, ...]], ...]}``).

    An entry deleted while pending comes back with no fields (skipped)."""
    if not reply:
        return []
    out: list[Entry] = []
    for entry_id, fields in next(iter(reply.values())):
        if fields is None:
            continue
        if len(fields) == 2:  # one field, as emit writes them
            out.append((entry_id, {fields[0]: fields[1]}))
        else:
            out.append((entry_id, dict(zip(fields[::2], fields[1::2], strict=True))))
    return out


def _is_nogroup(exc: ResponseError) -> bool:
    # NOGROUP: the group is gone; UNBLOCKED: the stream was deleted under a blocking read.
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


class EventBus:
    """Appends events and drives consumer groups over one injected ``redis.asyncio.Redis``.

    The client must be created with ``decode_responses=True`` and speak RESP3 (redis-py 8's
    default; :func:`~bookgen_events.connection.create_redis` makes one).
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "bookgen",
        maxlen: int = 1_000_000,
        max_event_bytes: int = 64 * 1024,
        idempotency_window_ms: int = 86_400_000,
        partitions: int = 1,
        partition: int = 0,
    ) -> None:
        if not is_resp3(redis):
            raise ConfigError("EventBus needs a RESP3 client (protocol=3, redis-py 8's default)")
        self.redis = redis
        # redis-py types replies as ``bytes | str`` (decode_responses is a runtime switch);
        # ours is always decoded, so calls go through an untyped alias and our methods
        # declare the real shapes.
        self._r: Any = redis
        self.names = StreamNames(
            prefix, partition=partition, partitions=partitions, cluster=is_cluster(redis)
        )
        self.maxlen = maxlen
        self.max_event_bytes = max_event_bytes
        self.scheduled = ScheduledDeliveries(redis, self.names)
        self.dead_letters = DeadLetters(redis, self.names)
        self._commit = scripts.register(
            redis,
            "commit",
            outcome_fields=", ".join(f"'{name}'" for name in OUTCOME_FIELDS),
            outcome_always=len(OUTCOME_ALWAYS),
        )
        self._emitter = Emitter(redis, self.names, maxlen=maxlen, window_ms=idempotency_window_ms)
        self.scheduled_events = ScheduledEvents(
            redis, self.names, maxlen=maxlen, window_ms=idempotency_window_ms
        )
        #: One bus per partition (STREAM_PARTITIONS), this one first: the same client, each
        #: with its partition's key names. Emitting here routes each event to its partition;
        #: a consumer group reads each partition through its own bus.
        self.partitions: list[EventBus] = [self]
        if partitions > 1 and partition == 0:
            self.partitions += [
                EventBus(
                    redis,
                    prefix=prefix,
                    maxlen=maxlen,
                    max_event_bytes=max_event_bytes,
                    idempotency_window_ms=idempotency_window_ms,
                    partitions=partitions,
                    partition=p,
                )
                for p in range(1, partitions)
            ]
            self._emitter = PartitionedEmitter([bus._emitter for bus in self.partitions])  # type: ignore[assignment]
        #: Every partition's dead letters as one (the operator's view: CLI, console).
        self.all_dead_letters = AllDeadLetters([bus.dead_letters for bus in self.partitions])

    @classmethod
    def from_settings(cls, redis: Redis, settings: Any) -> EventBus:
        return cls(
            redis,
            prefix=settings.stream_prefix,
            maxlen=settings.stream_maxlen,
            max_event_bytes=settings.max_event_bytes,
            idempotency_window_ms=int(settings.idempotency_window * 1000),
            partitions=settings.stream_partitions,
        )

    async def check_layout(self) -> None:
        """Record STREAM_PARTITIONS at a deployment's first start; refuse a different one
        later (:class:`ConfigError`): a job's events would move to another partition and
        lose their order, and the old partitions' entries would never be read."""
        wanted = len(self.partitions)
        meta = self.names.meta
        if not await self._r.hsetnx(meta, "partitions", wanted):
            recorded = int(await self._r.hget(meta, "partitions"))
        elif wanted > 1 and await self._r.exists(StreamNames(self.names.prefix).events):
            # A deployment from before the layout was recorded: it ran one plain stream.
            await self._r.hset(meta, "partitions", 1)
            recorded = 1
        else:
            return
        if recorded != wanted:
            raise ConfigError(
                f"STREAM_PARTITIONS is {wanted} but this deployment (STREAM_PREFIX="
                f"{self.names.prefix}) runs {recorded} partition(s); changing it on a running "
                f"system is refused: set STREAM_PARTITIONS={recorded}, or start a new "
                "deployment under another STREAM_PREFIX"
            )

    # -- producing ---------------------------------------------------------------------------

    async def emit(self, event: Event | dict[str, Any]) -> str:
        """Append one event; returns its stream entry id.

        Once per id within the idempotency window (the first stream id is returned again);
        an event with a ``deliver_at`` ahead is held and ``""`` returned (see
        :mod:`~bookgen_events.idempotency`).
        """
        event = make_event(event)
        if tracing.ACTIVE:
            event = traced_event(event)
        return await self._emitter.emit(event, encode(event, self.max_event_bytes))

    async def emit_many(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        """Append many events in one round trip; all are validated before any write.

        Each run of up to 1,000 events is appended by one script call (so atomically), and
        the calls are pipelined: a huge batch never holds Redis for long. Ids already
        emitted, in the window or earlier in the batch, append nothing, as with :meth:`emit`.
        """
        max_bytes = self.max_event_bytes
        encoded = []
        for e in events:
            event = make_event(e)
            if tracing.ACTIVE:
                event = traced_event(event)
            encoded.append((event, encode(event, max_bytes)))
        return await self._emitter.emit_many(encoded) if encoded else []

    # -- consumer groups ---------------------------------------------------------------------

    async def ensure_group(self, group: str, stream: str | None = None, start: str = "$") -> bool:
        """Create ``group`` (and the stream) if missing; returns True when it was created.

        A new group starts at the end of the stream (``$``): a channel switched on later
        does not deliver every old event. Backfilling is a deliberate act
        (:meth:`place_group`, ``consume CHANNEL --from``).
        """
        try:
            await self._r.xgroup_create(stream or self.names.events, group, id=start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" in str(exc):
                return False
            raise
        return True

    async def place_group(self, group: str, start: str, stream: str | None = None) -> bool:
        """Set ``group`` to read everything after ``start`` (creating it there if missing);
        returns True when it was created. Entries already delivered are not redelivered
        unless ``start`` lies before them: this is how a channel backfills on purpose."""
        stream = stream or self.names.events
        if await self.ensure_group(group, stream, start=start):
            return True
        await self._r.xgroup_setid(stream, group, start)
        return False

    async def read_group(
        self,
        group: str,
        consumer: str,
        *,
        count: int,
        block_ms: int | None,
        stream: str | None = None,
        pending: bool = False,
        after: str = "0",
    ) -> list[Entry]:
        """Read new entries (or, with ``pending``, this consumer's own unacked ones after
        ``after``).

        Recreates the group if Redis lost it (a restart without persistence).
        """
        stream = stream or self.names.events
        args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        try:
            reply = await command(self.redis, *args, "STREAMS", stream, after if pending else ">")
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            await self.ensure_group(group, stream, start="0")  # Redis lost it: read all there is
            return []
        return _entries(reply)

    async def autoclaim(
        self,
        group: str,
        consumer: str,
        *,
        min_idle_ms: int,
        start: str = "0-0",
        count: int = 100,
        stream: str | None = None,
    ) -> tuple[str, list[Entry]]:
        """Claim entries idle longer than ``min_idle_ms`` from dead consumers (XAUTOCLAIM)."""
        stream = stream or self.names.events
        try:
            reply = await self._r.xautoclaim(
                stream, group, consumer, min_idle_ms, start_id=start, count=count
            )
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise
            await self.ensure_group(group, stream, start="0")  # Redis lost it: read all there is
            return "0-0", []
        next_start, entries = reply[0], reply[1]
        return next_start, [(i, f) for i, f in entries if f is not None]

    async def touch(
        self, group: str, consumer: str, ids: Sequence[str], stream: str | None = None
    ) -> None:
        """Reset the idle time of entries this consumer still works on (XCLAIM JUSTID), so a
        slow delivery is not reclaimed by another consumer as if its owner had died."""
        if not ids:
            return
        try:
            await self._r.xclaim(
                stream or self.names.events, group, consumer, 0, list(ids), justid=True
            )
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise  # with the group gone (Redis lost its data) there is nothing to keep

    async def commit(
        self, group: str, commit: Commit, channel: str, stream: str | None = None
    ) -> int:
        """Record outcomes, dead letters and schedule changes, and ack — atomically (one script).

        An entry is therefore never acknowledged without its outcome, nor the reverse.
        Acks go to ``stream`` (default: the event stream). Returns the number acked.
        """
        names = self.names
        keys = [names.deliveries, names.dlq(channel), names.scheduled(channel)]
        args = commit.script_args(group, self.maxlen)
        return await run_script(self.redis, self._commit, [*keys, stream or names.events], args)

    async def ping(self) -> bool:
        return bool(await self._r.ping())

    # -- reading -----------------------------------------------------------------------------

    async def read(
        self,
        last_id: str,
        *,
        count: int = 100,
        block_ms: int | None = None,
        stream: str | None = None,
    ) -> list[Entry]:
        """Plain XREAD after ``last_id`` (a broadcast read: no group, nothing acked)."""
        stream = stream or self.names.events
        reply = await self._r.xread({stream: last_id}, count=count, block=block_ms)
        if not reply:
            return []
        if isinstance(reply, dict):  # a cluster client: {stream: [entries]} (parsed entries)
            return list(next(iter(reply.values()))[0])
        return list(reply[0][1])

    async def range(
        self,
        start: str = "-",
        end: str = "+",
        *,
        count: int | None = None,
        stream: str | None = None,
    ) -> list[Entry]:
        return await self._r.xrange(stream or self.names.events, start, end, count=count)

    async def revrange(
        self,
        end: str = "+",
        start: str = "-",
        *,
        count: int | None = None,
        stream: str | None = None,
    ) -> list[Entry]:
        return await self._r.xrevrange(stream or self.names.events, end, start, count=count)

    async def length(self, stream: str | None = None) -> int:
        return await self._r.xlen(stream or self.names.events)

    async def stream_info(self, stream: str | None = None) -> dict[str, Any] | None:
        """XINFO STREAM, or None when the stream does not exist."""
        try:
            return await self._r.xinfo_stream(stream or self.names.events)
        except ResponseError:
            return None

    async def groups_info(self, stream: str | None = None) -> list[dict[str, Any]]:
        try:
            return await self._r.xinfo_groups(stream or self.names.events)
        except ResponseError:
            return []

    async def consumers_info(self, group: str, stream: str | None = None) -> list[dict[str, Any]]:
        try:
            return await self._r.xinfo_consumers(stream or self.names.events, group)
        except ResponseError:
            return []

    async def pending_oldest(self, group: str, stream: str | None = None) -> tuple[str, int] | None:
        """The oldest pending entry's id and idle time in ms, if any."""
        try:
            rows = await self._r.xpending_range(
                stream or self.names.events, group, min="-", max="+", count=1
            )
        except ResponseError:
            return None
        if not rows:
            return None
        return rows[0]["message_id"], int(rows[0]["time_since_delivered"])

    async def delete_consumer(self, group: str, consumer: str, stream: str | None = None) -> None:
        try:
            await self._r.xgroup_delconsumer(stream or self.names.events, group, consumer)
        except ResponseError:
            pass

    async def trim_before(self, min_id: str, stream: str | None = None) -> int:
        """Delete the entries older than ``min_id`` (XTRIM MINID, exact); how many went."""
        stream = stream or self.names.events
        return int(await self._r.xtrim(stream, minid=min_id, approximate=False))
