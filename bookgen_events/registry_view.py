"""A process's view of an audited registry (:mod:`~bookgen_events.registry`), kept current.

Loaded from the registry's hash, then kept current by following its change stream: each
change names a record, which is read again (or dropped when deleted). A change reaches the
view within one poll (``block_ms``, 1 s by default), with no restart. Subclasses say how a
record is read and how the view indexes what it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

from redis.exceptions import RedisError

from .cancelling import cancel_and_wait
from .logs import get_logger
from .registry import AuditedHash

log = get_logger("bookgen_events.registry_view")

T = TypeVar("T")


class RegistryView(Generic[T]):
    """Every record of one registry by id; :meth:`follow` keeps it current."""

    def __init__(self, store: AuditedHash) -> None:
        self.store = store
        self.position = "0-0"  # the last change applied
        self.records: dict[str, T] = {}
        self.loaded = False

    def __len__(self) -> int:
        return len(self.records)

    async def read(self, record_id: str) -> T | None:
        """The record as stored now, or None when there is none."""
        raise NotImplementedError

    async def read_all(self) -> dict[str, T]:
        raise NotImplementedError

    def reindex(self) -> None:
        """Rebuild whatever the subclass derives from :attr:`records`."""

    async def load(self) -> None:
        """Read every record. The position is taken first, so a change made meanwhile is
        applied again by the next refresh (harmless: it re-reads the record)."""
        self.position = await self.store.latest_change()
        self.records = await self.read_all()
        self.reindex()
        self.loaded = True

    async def refresh(self, block_ms: int | None = None) -> int:
        """Apply the changes made since the last one (waiting up to ``block_ms`` for one);
        returns how many were applied. The single-step entry of :meth:`follow`."""
        changes = await self.store.changed_since(self.position, block_ms=block_ms)
        for entry_id, record_id in changes:
            record = await self.read(record_id)
            if record is None:
                self.records.pop(record_id, None)
            else:
                self.records[record_id] = record
            self.position = entry_id
        if changes:
            self.reindex()
        return len(changes)

    @contextlib.asynccontextmanager
    async def kept_current(self, block_ms: int = 1000, *, wait: bool = True) -> AsyncIterator[None]:
        """Load, then follow the changes until the block is left, however it is left.

        With ``wait=False`` the block is entered at once even if Redis cannot be reached: the
        view starts empty and the follower loads it once Redis answers (the gateway's
        ``/health`` must answer while Redis is down)."""
        if wait:
            await self.load()
        follower = asyncio.create_task(
            self.follow(asyncio.Event(), block_ms), name=self.store.hash_key
        )
        try:
            yield
        finally:
            # Cancelled rather than told to stop: it may be blocked on its read for a while,
            # and a follower holds nothing to finish.
            await cancel_and_wait([follower])

    async def follow(self, stop: asyncio.Event, block_ms: int = 1000) -> None:
        """Keep the view current until ``stop``; a Redis outage is waited out, not fatal."""
        backoff = 0.1
        while not stop.is_set():
            try:
                if not self.loaded:
                    await self.load()
                await self.refresh(block_ms)
                backoff = 0.1
            except (RedisError, OSError) as exc:
                log.warning(
                    "cannot follow registry changes; retrying",
                    registry=self.store.hash_key,
                    error=str(exc),
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
