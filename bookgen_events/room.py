"""How much more a consumer may take on, and a wait until it may.

Two bounds. Work queued or running (the pool's ``load``) stays within ``capacity``: the
deliveries running plus one batch read ahead. Work *owned* — from dispatch until its results
are written, stream entries and leased scheduled deliveries alike — stays under
``max_owned``: a Redis that refuses writes (OOM, a read-only replica) then stops the reads
instead of filling memory with results it cannot take.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable


class Room:
    """Capacity bookkeeping for one consumer; ``load()`` reports work queued or running."""

    def __init__(self, capacity: int, max_owned: int, load: Callable[[], int]) -> None:
        self.capacity = capacity
        self.max_owned = max_owned
        self._load = load
        #: Owned stream entries and leased scheduled deliveries (kept alive by the heartbeat,
        #: never reclaimed by their owner).
        self.ids: set[str] = set()
        self.members: set[str] = set()
        self._freed = asyncio.Event()
        self._waiters = 0  # loops waiting in wait()
        self._wanted = 1  # free slots the latest of them waits for

    def release(self, ids: Iterable[str], members: Iterable[str]) -> None:
        """Work no longer owned (its results written, or handed back)."""
        self.ids.difference_update(ids)
        self.members.difference_update(members)
        self._freed.set()

    def finished(self, load: int) -> None:
        """A piece of work finished, ``load`` left: wake a waiter if there is room now."""
        if self._waiters and self.capacity - load >= self._wanted:
            self._freed.set()

    async def wait(self, free: int = 1) -> None:
        """Wait until ``free`` more may be queued and fewer than ``max_owned`` are owned."""
        while (
            self.capacity - self._load() < free
            or len(self.ids) + len(self.members) >= self.max_owned
        ):
            self._wanted = free
            self._freed.clear()
            self._waiters += 1
            try:
                await self._freed.wait()
            finally:
                self._waiters -= 1
