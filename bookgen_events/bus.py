"""The event bus: the only module that speaks Redis Streams (X*) and the scheduled-delivery sets.

Keys, for ``STREAM_PREFIX=bookgen``:

- ``bookgen:events``            the immutable event log, trimmed approximately at STREAM_MAXLEN
- ``bookgen:deliveries``        one outcome entry per delivery attempt
- ``bookgen:dlq:<channel>``     dead letters of a channel, never trimmed
- ``bookgen:scheduled:<channel>`` sorted set of deliveries due later (retries, replays,
  redrives), scored by due time in ms; a consumer leases a due member by pushing its score
  ``lease_ms`` into the future, so a consumer that dies mid-retry loses nothing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .connection import command, run_script, run_script_many
from .events import WIRE_FIELD, Event, encode, make_event
from .outcomes import OUTCOME_ALWAYS, OUTCOME_FIELDS, DeadLetter, OutcomeRecord, now_ms

Entry = tuple[str, dict[str, str]]

_EMIT_CHUNK = 1000

_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local lease = tonumber(ARGV[1]) + tonumber(ARGV[2])
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], 'XX', lease, member) end
local head = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {due, head[2] or false}
"""


# One command and one reply for a batch of appends: redis-py reads a pipeline's replies one
# Python call each, which costs more than the appends.
# KEYS: events; ARGV: maxlen, the field name, then one payload per event.
_EMIT_MANY = """
local ids = {}
for i = 3, #ARGV do
  ids[i - 2] = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', ARGV[2], ARGV[i])
end
return ids
"""

# Atomic like MULTI/EXEC, but one command and one reply: redis-py parses a +QUEUED reply per
# command of a transaction in Python, which costs more than the writes themselves.
# KEYS: deliveries, dlq, scheduled, acked stream. ARGV: group, maxlen, then five sections,
# each a count followed by its items: outcomes as one record each (the values of
# OUTCOME_FIELDS, see outcomes.OutcomeRecord; the script names them), dead letters as
# (n, field, value, ...), members to unschedule, (score, member) pairs to schedule, and ids
# to ack.
_COMMIT = (
    "local names = {'"
    + "', '".join(OUTCOME_FIELDS)
    + f"'}}\nlocal width, always = {len(OUTCOME_FIELDS)}, {OUTCOME_ALWAYS}\n"
    + """
local find, sub = string.find, string.sub
local i = 3
local count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
  local record, args, n, pos = ARGV[i], {}, 0, 1
  local values = string.byte(record, 1) == 91 and cjson.decode(record)  -- '[': JSON array
  for j = 1, width do
    local v
    if values then
      v = values[j]
    else  -- each value ends with the unit separator (31)
      local stop = find(record, '\\31', pos, true)
      v = sub(record, pos, stop - 1)
      pos = stop + 1
    end
    if j <= always or v ~= '' then
      args[n + 1] = names[j]
      args[n + 2] = v
      n = n + 2
    end
  end
  redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(args))
  i = i + 1
end
count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
  local n = tonumber(ARGV[i])
  redis.call('XADD', KEYS[2], '*', unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
local n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do redis.call('ZREM', KEYS[3], ARGV[i]); i = i + 1 end
n = tonumber(ARGV[i])
i = i + 1
for _ = 1, n do redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2 end
n = tonumber(ARGV[i])
i = i + 1
local acked = 0
while n > 0 do
  local chunk = math.min(n, 5000)
  acked = acked + redis.call('XACK', KEYS[4], ARGV[1], unpack(ARGV, i, i + chunk - 1))
  i = i + chunk
  n = n - chunk
end
return acked
"""
)


class StreamNames:
    """Every Redis key of one deployment, derived from ``STREAM_PREFIX``."""

    def __init__(self, prefix: str = "bookgen") -> None:
        self.prefix = prefix
        self.events = f"{prefix}:events"
        self.deliveries = f"{prefix}:deliveries"

    def dlq(self, channel: str) -> str:
        return f"{self.prefix}:dlq:{channel}"

    def scheduled(self, channel: str) -> str:
        return f"{self.prefix}:scheduled:{channel}"

    def ratelimit(self, channel: str) -> str:
        return f"{self.prefix}:rl:{channel}"


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A delivery due later: a retry (``recipient`` set) or a replay to all of a channel's recipients."""

    event: str  # the event's JSON, so a retry survives the stream being trimmed
    entry_id: str
    attempt: int = 1
    recipient: str | None = None
    origin: str = "retry"  # retry | replay | redrive

    def dumps(self) -> str:
        return json.dumps(
            {
                "entry": self.entry_id,
                "recipient": self.recipient,
                "attempt": self.attempt,
                "origin": self.origin,
                "event": self.event,
            },
            separators=(",", ":"),
        )

    @classmethod
    def loads(cls, member: str) -> Scheduled:
        raw = json.loads(member)
        return cls(
            event=raw["event"],
            entry_id=raw["entry"],
            attempt=int(raw["attempt"]),
            recipient=raw.get("recipient"),
            origin=raw.get("origin", "retry"),
        )


@dataclass(slots=True)
class Commit:
    """What one flush writes atomically: outcomes, dead letters, schedule changes, then acks."""

    outcomes: list[OutcomeRecord]
    dead_letters: list[DeadLetter]
    schedule: list[tuple[Scheduled, int]]  # (delivery, due_ms)
    unschedule: list[str]  # leased members now settled
    acks: list[str]

    @classmethod
    def empty(cls) -> Commit:
        return cls([], [], [], [], [])

    def drain(self) -> Commit:
        """Move everything out into a new Commit, leaving this one empty (and the same object)."""
        taken = Commit(self.outcomes, self.dead_letters, self.schedule, self.unschedule, self.acks)
        self.outcomes, self.dead_letters, self.schedule = [], [], []
        self.unschedule, self.acks = [], []
        return taken

    def extend(self, other: Commit) -> None:
        self.outcomes += other.outcomes
        self.dead_letters += other.dead_letters
        self.schedule += other.schedule
        self.unschedule += other.unschedule
        self.acks += other.acks

    def __bool__(self) -> bool:
        return bool(
            self.outcomes or self.dead_letters or self.schedule or self.unschedule or self.acks
        )


def entry_fields(
    event: Event | dict[str, Any], max_event_bytes: int
) -> tuple[Event, dict[str, bytes]]:
    """Validate and encode one event as stream entry fields; raises before any write."""
    event = make_event(event)
    return event, {WIRE_FIELD: encode(event, max_event_bytes)}


def _entries(reply: Any) -> list[Entry]:
    """Entries of a one-stream XREAD[GROUP] reply: RESP3 or RESP2, raw or parsed by redis-py.

    An entry deleted while pending comes back with no fields (skipped)."""
    if not reply:
        return []
    entries = next(iter(reply.values())) if isinstance(reply, dict) else reply[0][1]
    out: list[Entry] = []
    for entry_id, fields in entries:
        if isinstance(fields, list):
            if len(fields) == 2:  # one field, as emit writes them
                out.append((entry_id, {fields[0]: fields[1]}))
            else:
                out.append((entry_id, dict(zip(fields[::2], fields[1::2], strict=True))))
        elif fields is not None:
            out.append((entry_id, fields))
    return out


def _is_nogroup(exc: ResponseError) -> bool:
    # NOGROUP: the group is gone; UNBLOCKED: the stream was deleted under a blocking read.
    return str(exc).startswith(("NOGROUP", "UNBLOCKED"))


class EventBus:
    """Appends events and drives consumer groups over one injected ``redis.asyncio.Redis``.

    The client must be created with ``decode_responses=True``.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "bookgen",
        maxlen: int = 1_000_000,
        max_event_bytes: int = 64 * 1024,
    ) -> None:
        self.redis = redis
        # redis-py types replies as ``bytes | str`` (decode_responses is a runtime switch);
        # ours is always decoded, so calls go through an untyped alias and our methods
        # declare the real shapes.
        self._r: Any = redis
        self.names = StreamNames(prefix)
        self.maxlen = maxlen
        self.max_event_bytes = max_event_bytes
        self._claim_due = redis.register_script(_CLAIM_DUE)
        self._commit = redis.register_script(_COMMIT)
        self._emit_many = redis.register_script(_EMIT_MANY)
        # XADD <events> MAXLEN ~ <maxlen> * event <payload>, the payload appended per call
        self._xadd = ("XADD", self.names.events, "MAXLEN", "~", maxlen, "*", WIRE_FIELD)

    @classmethod
    def from_settings(cls, redis: Redis, settings: Any) -> EventBus:
        return cls(
            redis,
            prefix=settings.stream_prefix,
            maxlen=settings.stream_maxlen,
            max_event_bytes=settings.max_event_bytes,
        )

    # -- producing ---------------------------------------------------------------------------

    async def emit(self, event: Event | dict[str, Any]) -> str:
        """Append one event; returns its stream entry id."""
        payload = encode(make_event(event), self.max_event_bytes)
        return await command(self.redis, *self._xadd, payload)  # type: ignore[no-any-return]

    async def emit_many(self, events: Iterable[Event | dict[str, Any]]) -> list[str]:
        """Append many events in one round trip; all are validated before any write.

        Each run of up to 1,000 events is appended by one script call (so atomically), and
        the calls are pipelined: a huge batch never holds Redis for long.
        """
        max_bytes = self.max_event_bytes
        payloads = [encode(make_event(e), max_bytes) for e in events]
        if not payloads:
            return []
        keys = [self.names.events]
        calls = [
            (keys, [self.maxlen, WIRE_FIELD, *payloads[i : i + _EMIT_CHUNK]])
            for i in range(0, len(payloads), _EMIT_CHUNK)
        ]
        replies = await run_script_many(self.redis, self._emit_many, calls)
        return [entry_id for ids in replies for entry_id in ids]

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
    ) -> list[Entry]:
        """Read new entries (or, with ``pending``, this consumer's own unacked ones).

        Recreates the group if Redis lost it (a restart without persistence).
        """
        stream = stream or self.names.events
        args: list[Any] = ["XREADGROUP", "GROUP", group, consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        try:
            reply = await command(self.redis, *args, "STREAMS", stream, "0" if pending else ">")
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

    async def touch(self, group: str, consumer: str, ids: Sequence[str]) -> None:
        """Reset the idle time of entries this consumer still works on (XCLAIM JUSTID), so a
        slow delivery is not reclaimed by another consumer as if its owner had died."""
        if not ids:
            return
        try:
            await self._r.xclaim(self.names.events, group, consumer, 0, list(ids), justid=True)
        except ResponseError as exc:
            if not _is_nogroup(exc):
                raise  # with the group gone (Redis lost its data) there is nothing to keep

    async def extend_lease(self, channel: str, members: Sequence[str], until_ms: int) -> None:
        """Push the lease of scheduled deliveries still in progress to ``until_ms``."""
        if members:
            await self._r.zadd(
                self.names.scheduled(channel), dict.fromkeys(members, until_ms), xx=True
            )

    async def ack(self, group: str, ids: Sequence[str], stream: str | None = None) -> int:
        if not ids:
            return 0
        return await self._r.xack(stream or self.names.events, group, *ids)

    async def commit(
        self, group: str, commit: Commit, channel: str, stream: str | None = None
    ) -> int:
        """Record outcomes, dead letters and schedule changes, and ack — atomically (one script).

        An entry is therefore never acknowledged without its outcome, nor the reverse.
        Acks go to ``stream`` (default: the event stream). Returns the number acked.
        """
        names = self.names
        args: list[Any] = [group, self.maxlen]
        args.append(len(commit.outcomes))
        args += commit.outcomes
        args.append(len(commit.dead_letters))
        for letter in commit.dead_letters:
            fields = [item for pair in letter.to_fields().items() for item in pair]
            args.append(len(fields))
            args += fields
        args.append(len(commit.unschedule))
        args.extend(commit.unschedule)
        args.append(len(commit.schedule))
        for item, due in commit.schedule:
            args.append(due)
            args.append(item.dumps())
        args.append(len(commit.acks))
        args.extend(commit.acks)
        keys = [names.deliveries, names.dlq(channel), names.scheduled(channel)]
        return await run_script(self.redis, self._commit, [*keys, stream or names.events], args)

    async def claim_due(
        self, channel: str, *, now_ms: int, lease_ms: int, limit: int
    ) -> tuple[list[str], float | None]:
        """Lease up to ``limit`` due scheduled deliveries; also returns the next due score."""
        due, head = await self._claim_due(
            keys=[self.names.scheduled(channel)], args=[now_ms, lease_ms, limit]
        )
        return list(due), (float(head) if head else None)

    async def schedule(self, channel: str, items: Iterable[tuple[Scheduled, int]]) -> int:
        """Add deliveries due at the given ms times (used by replay and redrive)."""
        mapping = {s.dumps(): due for s, due in items}
        if not mapping:
            return 0
        return await self._r.zadd(self.names.scheduled(channel), mapping)

    async def redrive(self, channel: str, letters: Sequence[tuple[str, Scheduled]]) -> int:
        """Schedule dead letters for delivery now and remove them from the DLQ, atomically."""
        if not letters:
            return 0
        pipe = self._r.pipeline(transaction=True)
        pipe.zadd(self.names.scheduled(channel), {item.dumps(): now_ms() for _, item in letters})
        pipe.xdel(self.names.dlq(channel), *[dlq_id for dlq_id, _ in letters])
        await pipe.execute()
        return len(letters)

    async def purge_dlq(self, channel: str, ids: Sequence[str] | None = None) -> int:
        """Delete the given dead letters, or the whole DLQ of ``channel``."""
        key = self.names.dlq(channel)
        if ids:
            return await self._r.xdel(key, *ids)
        size = await self._r.xlen(key)
        await self._r.delete(key)
        return size

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
