"""Write-behind of a consumer's results: one task writes them, one atomic commit at a time.

Deliveries append their outcomes, dead letters, schedule changes and acks to one
:class:`~bookgen_events.commit.Commit` (``buffer``, always the same object); the flusher
drains it into one commit-script call per flush, so a burst of deliveries costs one round
trip, and an entry is never acked without its outcome. While Redis refuses the write
(unreachable, OOM, a read-only replica) the results are kept, in order, and retried with
backoff; if Redis lost the consumer group, the group is recreated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from redis.exceptions import ResponseError

from .bus import EventBus
from .commit import Commit
from .reader import REDIS_DOWN, unless_down


class Flusher:
    """Writes ``buffer`` for consumer group ``group`` of ``channel``, in the background.

    ``written(commit, recorded)`` is called after each flush: ``recorded`` is False when the
    group was lost with its pending entries (the outcomes before the failing ack were
    written, the acks were not needed).
    """

    def __init__(
        self,
        bus: EventBus,
        group: str,
        channel: str,
        *,
        written: Callable[[Commit, bool], None],
        log: Any,
    ) -> None:
        self.bus = bus
        self.group = group
        self.channel = channel
        self.buffer = Commit.empty()
        #: Set to have the buffer written soon (a delivery's results are in it).
        self.wanted = asyncio.Event()
        self._written = written
        self._log = log
        self._task: asyncio.Task[None] | None = None
        self._closing = False

    def record(self, commit: Commit) -> None:
        """Add ``commit`` to what the next flush writes."""
        self.buffer.extend(commit)
        self.wanted.set()

    def start(self) -> None:
        self._closing = False
        self._task = asyncio.create_task(self._loop(), name=f"flush-{self.group}")

    async def close(self) -> None:
        """Stop the background task, then write what is left."""
        self._closing = True
        self.wanted.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        await self.flush()

    async def _loop(self) -> None:
        # Ends by flag, never by cancel: a cancel landing inside redis-py's read timeout can
        # surface as TimeoutError on Python 3.11, which would look like "Redis down" here.
        while not self._closing:
            await self.wanted.wait()
            self.wanted.clear()
            await self.flush()

    async def flush(self) -> None:
        """Write the buffer until it is empty, retrying (with backoff) while Redis refuses."""
        backoff = 0.05
        while self.buffer:
            commit = self.buffer.drain()
            try:
                await self.bus.commit(self.group, commit, self.channel)
            except ResponseError as exc:
                if "NOGROUP" in str(exc):
                    # Redis lost the group (restart without persistence): the outcomes before
                    # the failing XACK were written; the entries left the PEL with the group.
                    self._log.error("consumer group lost; recreating it", error=str(exc))
                    self._written(commit, False)
                    await unless_down(self.bus.ensure_group(self.group, start="0"), self._log)
                    continue
                # Anything else (OOM, a read-only replica...): keep the results, try again.
                self._log.error("cannot record results; retrying", error=str(exc))
            except REDIS_DOWN as exc:
                self._log.warning("cannot record results; retrying", error=str(exc))
            else:
                self._written(commit, True)
                continue
            self._put_back(commit)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    def _put_back(self, commit: Commit) -> None:
        """Return an unwritten commit to the front of the buffer."""
        newer = self.buffer.drain()
        self.buffer.extend(commit)
        self.buffer.extend(newer)
