"""Digest windows (SPEC 9): a subscriber's notifications of one type and job, collected for
a while and sent as one message when the window closes.

A window is a Redis list per (channel, user, type, job, address) and one scheduled send in
the channel's scheduled set (:mod:`~bookgen_events.schedule`, origin ``digest``), due when
the window closes. The first notification to find the list empty schedules the send
(``digest_collect.lua``). When the send comes due and is leased, ``digest_take.lua`` moves the
list's items into the send itself, atomically: from then on they live in the lease (a process
killed mid-send loses nothing; the lease expires and another sends them) and the next
notification opens a new window. The commit that records the send's outcomes removes it.

Everything is scheduled state in Redis, not a timer in memory, so windows survive restarts
and SIGKILL. A notification collected twice (a consumer killed between collecting and
acking) is listed once: items are de-duplicated by event id when the send is made.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from . import scripts
from .events import WIRE_FIELD, Event, decode
from .keys import StreamNames
from .schedule import Scheduled

#: How long past its close a window's list may outlive a send that never came (a safety net).
LIST_GRACE_MS = 7 * 86_400_000


@dataclass(frozen=True, slots=True)
class DigestItem:
    entry_id: str
    raw: str  # the event's JSON
    event: Event


class DigestWindows:
    """The digest windows of one channel, over the injected client."""

    def __init__(self, redis: Redis, names: StreamNames, channel: str) -> None:
        self.names = names
        self.channel = channel
        self._collect = scripts.register(redis, "digest_collect")
        self._take = scripts.register(redis, "digest_take")

    def key(self, event: Event, recipient: str) -> str:
        """The collecting list of ``event``'s window for ``recipient`` (hashed: user ids and
        addresses are not key material)."""
        parts = "\x1f".join((event.user_id or "", event.type.value, event.job_id or "", recipient))
        digest = hashlib.blake2b(parts.encode(), digest_size=12).hexdigest()
        return f"{self.names.scheduled(self.channel)}:digest:{digest}"

    async def collect(
        self, event: Event, raw: str, entry_id: str, recipient: str, window_ms: int, now_ms: int
    ) -> int:
        """Add the notification to its open window (opening one, due in ``window_ms``)."""
        key = self.key(event, recipient)
        send = Scheduled(raw, entry_id, 1, recipient, "digest", digest=key)
        item = json.dumps({"entry": entry_id, "event": raw}, separators=(",", ":"))
        count: Any = await self._collect(
            keys=[key, self.names.scheduled(self.channel)],
            args=[item, now_ms + window_ms, send.dumps(), window_ms + LIST_GRACE_MS],
        )
        return int(count)

    async def take(self, member: str, send: Scheduled) -> str | None:
        """Move the window's items into the leased ``member``; the member now holding them,
        or None when it is gone."""
        assert send.digest is not None
        taken: Any = await self._take(
            keys=[self.names.scheduled(self.channel), send.digest], args=[member]
        )
        return None if not taken else str(taken)


def items_of(send: Scheduled) -> list[DigestItem]:
    """A taken send's notifications, once each, oldest first (undecodable ones dropped)."""
    found: dict[str, DigestItem] = {}
    for text in send.items:
        try:
            raw = json.loads(text)
            event = decode({WIRE_FIELD: raw["event"]})
        except (ValueError, KeyError, TypeError):
            continue
        found.setdefault(event.id, DigestItem(raw["entry"], raw["event"], event))
    return sorted(found.values(), key=lambda item: (item.event.occurred_at, item.entry_id))
