"""Dead letters: ``bookgen:dlq:<channel>``, a stream per channel of deliveries given up on.

The commit script writes them (:mod:`bookgen_events.commit`), with the reason, the attempts
and the event itself (:class:`~bookgen_events.outcomes.DeadLetter`); they are never trimmed.
Here they leave: redriven (scheduled for delivery now, removed from the stream, atomically)
or purged. Listing and choosing which to redrive is in :mod:`bookgen_events.replay` for now.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from .keys import StreamNames
from .outcomes import now_ms
from .schedule import Scheduled


class DeadLetters:
    """The dead-letter streams of one deployment, over the injected client."""

    def __init__(self, redis: Redis, names: StreamNames) -> None:
        self._r: Any = redis  # decoded replies; see EventBus
        self.names = names

    async def redrive(self, channel: str, letters: Sequence[tuple[str, Scheduled]]) -> int:
        """Schedule ``(dlq id, delivery)`` pairs for delivery now and remove them from the
        dead letters, atomically (one MULTI): a letter is never both, nor lost."""
        if not letters:
            return 0
        pipe = self._r.pipeline(transaction=True)
        pipe.zadd(self.names.scheduled(channel), {item.dumps(): now_ms() for _, item in letters})
        pipe.xdel(self.names.dlq(channel), *[dlq_id for dlq_id, _ in letters])
        await pipe.execute()
        return len(letters)

    async def purge(self, channel: str, ids: Sequence[str] | None = None) -> int:
        """Delete the given dead letters, or every dead letter of ``channel``."""
        key = self.names.dlq(channel)
        if ids:
            return await self._r.xdel(key, *ids)  # type: ignore[no-any-return]
        size = await self._r.xlen(key)
        await self._r.delete(key)
        return size  # type: ignore[no-any-return]
