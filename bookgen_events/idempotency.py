"""Idempotent emit (SPEC 11): the event id is the idempotency key.

An id emitted again within ``IDEMPOTENCY_WINDOW`` appends nothing and gets the first stream
id back. The check and the append are one script (``scripts/emit_many.lua``), so two
producers racing the same id, or the connection-level retry of
:func:`~bookgen_events.connection.command` resending a script whose reply was lost, append
it once.

Where the ids live: one string key per id, ``<events stream>:idem:<event id>``, holding the
first stream id and expiring after the window (:meth:`StreamNames.idempotency
<bookgen_events.keys.StreamNames.idempotency>`). Not one hash or set of every id: Redis 7.0
has no per-field expiry (HEXPIRE is 7.4), so one structure would need a sweeper and a second
index of times; a key per id ages out by itself, costs O(1) to check, and is ~100 bytes of
Redis memory per id in the window. The name is the stream's plus a suffix, so it carries
the stream's hash tag: once the stream is named ``{bookgen}:events`` for Redis Cluster, the
stream, every idempotency key and the held set of one emit hash to one slot, as a script
needs. (A partitioned stream keeps this as long as an id always goes to the same partition.)

An event whose ``deliver_at`` lies ahead is held instead of appended (see
:mod:`~bookgen_events.scheduled_events`); its key then holds ``""`` until it is moved, and
lasts until the window after its due time.

A call in which no event has a ``deliver_at`` (the common one) runs ``scripts/emit_now.lua``
instead: the same check and append without the held keys and the due times, which Redis
would otherwise turn into Lua values on every call. Measured on the loaded 2-core box against
the shared Redis 7.0, three runs, each with 20 interleaved slices: emit 0.71-0.82x raw XADD
(0.71-0.72x through emit_many.lua in the same runs), emit_many 0.56-0.63x pipelined XADD
(0.50-0.58x). What is left is Lua's: inside a script, a GET, an XADD and a SET cost Redis
~10-13 us per event against ~2.3 us for a bare XADD (commandstats, pipelined), and a lone
EVALSHA ~44 us against ~9 us for a lone XADD; plus ~16 us of validation and encoding per
event in Python that the raw XADD does not do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from . import scripts
from .connection import run_script_many
from .events import WIRE_FIELD, Event
from .keys import StreamNames

#: Events per script call of emit_many: a huge batch never holds Redis for long.
CHUNK = 1000

#: What emit returns for an event held until its ``deliver_at`` (no stream id yet).
HELD = ""


def due_ms(event: Event) -> int:
    """The event's ``deliver_at`` in ms since the epoch (rounded up: never early), 0 for at once."""
    deliver_at = event.deliver_at
    return 0 if deliver_at is None else math.ceil(deliver_at.timestamp() * 1000)


def script_call(
    names: StreamNames,
    encoded: Sequence[tuple[Event, bytes]],
    *,
    maxlen: int,
    window_ms: int,
) -> tuple[list[str], list[Any]]:
    """``(keys, args)`` of one ``emit_many.lua`` call for these (event, payload) pairs."""
    held, held_events = names.held
    keys = [names.events, held, held_events]
    args: list[Any] = [maxlen, WIRE_FIELD, window_ms]
    for event, payload in encoded:
        keys.append(names.idempotency(event.id))
        args += (event.id, payload, due_ms(event))
    return keys, args


def now_call(
    names: StreamNames, encoded: Sequence[tuple[Event, bytes]], *, maxlen: int, window_ms: int
) -> tuple[list[str], list[Any]]:
    """``(keys, args)`` of one ``emit_now.lua`` call: events none of which has a deliver_at."""
    keys = [names.events]
    keys += [names.idempotency(event.id) for event, _ in encoded]
    args: list[Any] = [maxlen, window_ms]
    args += [payload for _, payload in encoded]
    return keys, args


class Emitter:
    """Appends (or holds) events once per id within the window, over the injected client."""

    def __init__(self, redis: Redis, names: StreamNames, *, maxlen: int, window_ms: int) -> None:
        self.redis = redis
        self.names = names
        self.maxlen = maxlen
        self.window_ms = window_ms
        self._script = scripts.register(redis, "emit_many")
        self._now = scripts.register(redis, "emit_now", field=WIRE_FIELD)

    async def emit(self, event: Event, payload: bytes) -> str:
        """Append one event; its stream id, the first one if the id was seen, or HELD."""
        if event.deliver_at is None:  # now_call() written out: this runs once per emit
            script = self._now
            keys = [self.names.events, self.names.idempotency(event.id)]
            args: list[Any] = [self.maxlen, self.window_ms, payload]
        else:
            script = self._script
            keys, args = script_call(
                self.names, [(event, payload)], maxlen=self.maxlen, window_ms=self.window_ms
            )
        # Idempotent (the event id is the key): safe to retry through a cluster failover.
        [[stream_id]] = await run_script_many(self.redis, script, [(keys, args)], idempotent=True)
        return stream_id  # type: ignore[no-any-return]

    async def emit_many(self, encoded: Sequence[tuple[Event, bytes]]) -> list[str]:
        """Append many: one script call per CHUNK events, the calls pipelined."""
        if any(event.deliver_at is not None for event, _ in encoded):
            script, build = self._script, script_call
        else:
            script, build = self._now, now_call
        calls = [
            build(self.names, encoded[i : i + CHUNK], maxlen=self.maxlen, window_ms=self.window_ms)
            for i in range(0, len(encoded), CHUNK)
        ]
        replies = await run_script_many(self.redis, script, calls, idempotent=True)
        return [stream_id for ids in replies for stream_id in ids]
