"""Dead letters: ``bookgen:dlq:<channel>``, a stream per channel of deliveries given up on.

The commit script writes them (:mod:`bookgen_events.commit`), with the reason, the attempts
and the event itself (:class:`~bookgen_events.outcomes.DeadLetter`); they are kept until
DLQ_RETENTION (unset: for ever; :mod:`~bookgen_events.retention`).
Here they are listed, and leave: redriven (scheduled for delivery now, removed from the
stream, atomically) or purged. The CLI's ``dlq`` and the operator routes call these
through :class:`AllDeadLetters`, every partition's at once (``bus.all_dead_letters``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis

from .keys import StreamNames
from .outcomes import DeadLetter, now_ms
from .schedule import Scheduled


class DeadLetters:
    """The dead-letter streams of one deployment, over the injected client."""

    def __init__(self, redis: Redis, names: StreamNames) -> None:
        self._r: Any = redis  # decoded replies; see EventBus
        self.names = names

    async def trim_before(self, channel: str, before_ms: int) -> int:
        """Delete ``channel``'s dead letters older than ``before_ms``; how many went."""
        stream = self.names.dlq(channel)
        return int(await self._r.xtrim(stream, minid=f"{before_ms}-0", approximate=False))

    async def oldest_ms(self, channel: str) -> int | None:
        """When ``channel``'s oldest dead letter kept was written (ms), if any."""
        first = await self._r.xrange(self.names.dlq(channel), count=1)
        return int(first[0][0].split("-")[0]) if first else None

    async def letters(self, channel: str) -> list[tuple[str, DeadLetter]]:
        """``(dlq id, letter)`` for every dead letter of ``channel``, oldest first."""
        entries = await self._r.xrange(self.names.dlq(channel))
        return [(dlq_id, DeadLetter.from_fields(fields)) for dlq_id, fields in entries]

    async def redrive(
        self, channel: str, ids: Sequence[str] | None = None
    ) -> tuple[int, list[str]]:
        """Send dead letters (all, or those whose dlq id or event id is in ``ids``) back
        through the channel; returns (redriven, the poison entries' ids, left in place)."""
        letters = await self.letters(channel)
        if ids:
            wanted = set(ids)
            letters = [(i, d) for i, d in letters if i in wanted or d.event_id in wanted]
        items: list[tuple[str, Scheduled]] = []
        poison: list[str] = []
        for dlq_id, letter in letters:
            if letter.poison or not letter.event or not _is_json(letter.event):
                poison.append(dlq_id)
                continue
            item = Scheduled(letter.event, letter.entry_id, 1, letter.recipient or None, "redrive")
            items.append((dlq_id, item))
        return await self._move(channel, items), poison

    async def _move(self, channel: str, letters: Sequence[tuple[str, Scheduled]]) -> int:
        """Schedule ``(dlq id, delivery)`` pairs for delivery now and remove them from the
        dead letters, atomically (one MULTI): a letter is never both, nor lost."""
        if not letters:
            return 0
        pipe = self._r.pipeline(transaction=True)
        pipe.zadd(self.names.scheduled(channel), {item.dumps(): now_ms() for _, item in letters})
        pipe.xdel(self.names.dlq(channel), *[dlq_id for dlq_id, _ in letters])
        await pipe.execute()
        return len(letters)

    async def count(self, channel: str) -> int:
        return int(await self._r.xlen(self.names.dlq(channel)))

    async def purge(self, channel: str, ids: Sequence[str] | None = None) -> int:
        """Delete the given dead letters, or every dead letter of ``channel``."""
        key = self.names.dlq(channel)
        if ids:
            return await self._r.xdel(key, *ids)  # type: ignore[no-any-return]
        size = await self._r.xlen(key)
        await self._r.delete(key)
        return size  # type: ignore[no-any-return]


class AllDeadLetters:
    """Every partition's dead letters of a channel, as one list (``STREAM_PARTITIONS``).

    With one partition a letter's id is its stream id, as always; with N, it is
    ``<partition>:<stream id>`` (``2:1700000000000-0``), since two partitions' streams can
    hold the same stream id. An event id names its letters wherever they are. Redrive and
    purge act on each partition's keys in its own slot (one MULTI per partition).
    """

    def __init__(self, parts: Sequence[DeadLetters]) -> None:
        self.parts = list(parts)

    def _id(self, partition: int, dlq_id: str) -> str:
        return dlq_id if len(self.parts) == 1 else f"{partition}:{dlq_id}"

    async def _each(self, channel: str) -> list[list[tuple[str, DeadLetter]]]:
        return list(await asyncio.gather(*(part.letters(channel) for part in self.parts)))

    async def letters(self, channel: str) -> list[tuple[str, DeadLetter]]:
        """``(dlq id, letter)`` for every dead letter of ``channel``, oldest first."""
        out = [
            (self._id(p, dlq_id), letter)
            for p, letters in enumerate(await self._each(channel))
            for dlq_id, letter in letters
        ]
        return sorted(out, key=lambda pair: pair[1].at_ms) if len(self.parts) > 1 else out

    async def _chosen(self, channel: str, ids: Sequence[str]) -> list[list[str]]:
        """Per partition, the stream ids of the letters ``ids`` name (dlq or event ids)."""
        wanted = set(ids)
        return [
            [i for i, d in letters if self._id(p, i) in wanted or d.event_id in wanted]
            for p, letters in enumerate(await self._each(channel))
        ]

    async def redrive(
        self, channel: str, ids: Sequence[str] | None = None
    ) -> tuple[int, list[str]]:
        """As :meth:`DeadLetters.redrive`, over every partition."""
        chosen: list[list[str] | None] = (
            [None] * len(self.parts) if not ids else list(await self._chosen(channel, ids))
        )
        count, poison = 0, []
        for p, (part, local) in enumerate(zip(self.parts, chosen, strict=True)):
            if local == []:
                continue  # nothing named here (an empty list would mean all)
            moved, left = await part.redrive(channel, local)
            count += moved
            poison += [self._id(p, i) for i in left]
        return count, poison

    async def purge(self, channel: str, ids: Sequence[str] | None = None) -> int:
        """As :meth:`DeadLetters.purge`, over every partition."""
        if not ids:
            return sum([await part.purge(channel) for part in self.parts])
        chosen = await self._chosen(channel, ids)
        return sum(
            [
                await part.purge(channel, local)
                for part, local in zip(self.parts, chosen, strict=True)
                if local
            ]
        )

    async def oldest_ms(self, channel: str) -> int | None:
        """When ``channel``'s oldest dead letter kept (any partition) was written."""
        found = [ms for part in self.parts if (ms := await part.oldest_ms(channel)) is not None]
        return min(found, default=None)

    async def count(self, channel: str) -> int:
        return sum([await part.count(channel) for part in self.parts])


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
