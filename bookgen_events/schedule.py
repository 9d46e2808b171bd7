"""Deliveries due later: retries, replays and redrives, per channel.

``bookgen:scheduled:<channel>`` is a sorted set of :class:`Scheduled` members scored by due
time in ms. It carries the event itself, so a retry due in ten hours survives the stream
being trimmed. A consumer *leases* a due member by pushing its score ``lease_ms`` into the
future rather than popping it, so a consumer that dies mid-retry loses nothing; the commit
script (:mod:`bookgen_events.commit`) removes it once its outcome is written.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from . import scripts
from .keys import StreamNames


@dataclass(frozen=True, slots=True)
class Scheduled:
    """A delivery due later: a retry (``recipient`` set) or a replay to all of a channel's recipients."""

    event: str  # the event's JSON, so a retry survives the stream being trimmed
    entry_id: str
    attempt: int = 1
    recipient: str | None = None
    origin: str = "retry"  # retry | replay | redrive | quiet (held) | digest (a window's send)
    #: A digest's collecting list (:mod:`~bookgen_events.digests`), and once taken from it,
    #: its items (JSON ``{"entry", "event"}`` each).
    digest: str | None = None
    items: tuple[str, ...] = ()

    def dumps(self) -> str:
        fields: dict[str, object] = {
            "entry": self.entry_id,
            "recipient": self.recipient,
            "attempt": self.attempt,
            "origin": self.origin,
            "event": self.event,
        }
        if self.digest is not None:
            fields["digest"] = self.digest
        if self.items:
            fields["items"] = list(self.items)
        return json.dumps(fields, separators=(",", ":"))

    @classmethod
    def loads(cls, member: str) -> Scheduled:
        raw = json.loads(member)
        return cls(
            event=raw["event"],
            entry_id=raw["entry"],
            attempt=int(raw["attempt"]),
            recipient=raw.get("recipient"),
            origin=raw.get("origin", "retry"),
            digest=raw.get("digest"),
            # A script's cjson writes an empty list as {}.
            items=tuple(raw.get("items") or ()),
        )


class ScheduledDeliveries:
    """The scheduled sets of one deployment, over the injected client."""

    def __init__(self, redis: Redis, names: StreamNames) -> None:
        self._r: Any = redis  # decoded replies; see EventBus
        self.names = names
        self._claim_due = scripts.register(redis, "claim_due")

    async def claim_due(
        self, channel: str, *, now_ms: int, lease_ms: int, limit: int
    ) -> tuple[list[str], float | None]:
        """Lease up to ``limit`` due scheduled deliveries; also returns the next due score."""
        due, head = await self._claim_due(
            keys=[self.names.scheduled(channel)], args=[now_ms, lease_ms, limit]
        )
        return list(due), (float(head) if head else None)

    async def extend_lease(self, channel: str, members: Sequence[str], until_ms: int) -> None:
        """Push the lease of scheduled deliveries still in progress to ``until_ms``."""
        if members:
            await self._r.zadd(
                self.names.scheduled(channel), dict.fromkeys(members, until_ms), xx=True
            )

    async def add(self, channel: str, items: Iterable[tuple[Scheduled, int]]) -> int:
        """Add deliveries due at the given ms times (used by replay and redrive)."""
        mapping = {s.dumps(): due for s, due in items}
        if not mapping:
            return 0
        return await self._r.zadd(self.names.scheduled(channel), mapping)  # type: ignore[no-any-return]
