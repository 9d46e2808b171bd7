"""One consumer's reads of one consumer group on one stream.

What every group consumer needs, in one place: its own pending entries first (what it read
before a crash and never acknowledged), then new ones; entries idle too long in a dead
consumer's hands, claimed through a cursor over the group's pending list (XAUTOCLAIM); the
group recreated when Redis lost it (a restart without persistence, in
:class:`~bookgen_events.bus.EventBus`); and a pause, not a crash, while Redis is
unreachable. The delivery runtime (:mod:`bookgen_events.consumer`) and the notification
log's projection (``consumers/logger.py``) both read through it.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

from redis.exceptions import ClusterError, SlotNotCoveredError, TryAgainError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from .bus import Entry, EventBus

#: Errors that mean "Redis cannot be reached right now", not "this request is wrong": on a
#: cluster also a failover in progress (CLUSTERDOWN, TRYAGAIN, a slot nobody serves yet).
REDIS_DOWN = (
    RedisConnectionError,
    RedisTimeoutError,
    OSError,
    ClusterError,
    TryAgainError,
    SlotNotCoveredError,
)

R = TypeVar("R")


def default_consumer_name() -> str:
    """``CONSUMER_NAME``'s default: unique per process, stable across its reads."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def unless_down(awaitable: Awaitable[R], log: Any) -> R | None:
    """Await a loop-level Redis call; while Redis is unreachable, log, wait and return None."""
    try:
        return await awaitable
    except REDIS_DOWN as exc:
        log.warning("redis unavailable", error=str(exc))
        await asyncio.sleep(0.5)
        return None


class GroupReader:
    """Reads for consumer ``consumer`` of ``group`` on ``stream`` (default: the events).

    Every read returns a list, empty (after a pause) while Redis is unreachable; ``down``
    says whether the last call found it so.
    """

    def __init__(
        self,
        bus: EventBus,
        group: str,
        consumer: str,
        *,
        claim_idle_ms: int,
        log: Any,
        stream: str | None = None,
    ) -> None:
        self.bus = bus
        self.group = group
        self.consumer = consumer
        self.stream = stream or bus.names.events
        self.claim_idle_ms = claim_idle_ms
        #: How often to look for idle entries: often enough to take them over soon after
        #: CLAIM_IDLE_MS, seldom enough to cost nothing.
        self.claim_every = min(max(claim_idle_ms / 2000, 0.2), 30.0)
        self.down = False
        self.pending_done = False  # own pending entries all read
        self._pending_after = "0"
        self._claim_cursor = "0-0"
        self._log = log

    async def _call(self, awaitable: Awaitable[R]) -> R | None:
        try:
            result = await awaitable
        except REDIS_DOWN as exc:
            self.down = True
            self._log.warning("redis unavailable", error=str(exc))
            await asyncio.sleep(0.5)
            return None
        self.down = False
        return result

    async def ensure(self) -> None:
        """Create the group at the end of the stream if it does not exist."""
        await self.bus.ensure_group(self.group, self.stream)

    async def own_pending(self, count: int) -> list[Entry]:
        """The next of the entries this consumer read before and never acked (a crash before
        a restart), oldest first; empty once all were read (then ``pending_done``)."""
        entries = await self._call(
            self.bus.read_group(
                self.group,
                self.consumer,
                count=count,
                block_ms=None,
                stream=self.stream,
                pending=True,
                after=self._pending_after,
            )
        )
        if entries:
            self._pending_after = entries[-1][0]
        elif not self.down:
            self.pending_done = True
        return entries or []

    async def new(self, count: int, block_ms: int | None = None) -> list[Entry]:
        """Entries never delivered to the group, waiting up to ``block_ms`` for some."""
        entries = await self._call(
            self.bus.read_group(
                self.group, self.consumer, count=count, block_ms=block_ms, stream=self.stream
            )
        )
        return entries or []

    async def reclaim(self, count: int) -> list[Entry]:
        """Claim entries idle past ``claim_idle_ms`` (their consumer died), the next ``count``
        of the group's pending list; ``wrapped`` once the cursor went all the way round."""
        result = await self._call(
            self.bus.autoclaim(
                self.group,
                self.consumer,
                min_idle_ms=self.claim_idle_ms,
                start=self._claim_cursor,
                count=count,
                stream=self.stream,
            )
        )
        if result is None:
            return []
        self._claim_cursor, entries = result
        return entries

    @property
    def wrapped(self) -> bool:
        """Whether the last reclaim reached the end of the pending list."""
        return self._claim_cursor == "0-0"

    async def keep(self, ids: Sequence[str]) -> None:
        """Keep entries still in progress owned (reset their idle time)."""
        await self._call(self.bus.touch(self.group, self.consumer, ids, stream=self.stream))

    async def leave(self) -> None:
        """Remove this consumer from the group if it owns no pending entry."""
        try:
            mine = [
                c
                for c in await self.bus.consumers_info(self.group, self.stream)
                if c["name"] == self.consumer
            ]
            if mine and int(mine[0]["pending"]) == 0:
                await self.bus.delete_consumer(self.group, self.consumer, self.stream)
        except REDIS_DOWN:
            pass
