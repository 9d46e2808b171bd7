"""Records kept in Redis with every change audited: what endpoints and subscribers are stored in.

Each record is one field of a hash (its id -> its JSON); each change is also an entry on a
change stream (``op``, ``id``, the changed field names, and when, by its entry id), written
in the same transaction. The stream is the audit trail and the change feed at once: a reader
that loaded the hash follows the stream and re-reads what changed. Values never go on the
stream, so secrets stay in the hash alone.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError
from redis.asyncio import Redis

from .connection import is_cluster
from .keys import StreamNames


class AuditedHash:
    """A hash of JSON records and the stream of their changes."""

    def __init__(self, redis: Redis, *, hash_key: str, changes_key: str) -> None:
        self.redis = redis
        self.hash_key = hash_key
        self.changes_key = changes_key

    @classmethod
    def named(cls, redis: Redis, prefix: str, registry: str) -> AuditedHash:
        """The store of ``registry`` (``endpoints``, ``subscribers``) under ``prefix``."""
        key = getattr(StreamNames(prefix, cluster=is_cluster(redis)), registry)
        return cls(redis, hash_key=key, changes_key=StreamNames.changes(key))

    async def get(self, record_id: str) -> str | None:
        value: Any = await self.redis.hget(self.hash_key, record_id)
        return None if value is None else str(value)

    async def values(self) -> list[str]:
        return [str(v) for v in await self.redis.hvals(self.hash_key)]

    async def put(self, record_id: str, value: str, op: str, fields: Iterable[str]) -> None:
        """Store ``value`` and record the change, atomically."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self.hash_key, record_id, value)
            pipe.xadd(self.changes_key, _change(op, record_id, fields))
            await pipe.execute()

    async def delete(self, record_id: str) -> bool:
        """Remove the record and record that; False (and nothing written) if there was none."""
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.watch(self.hash_key)
            if not await pipe.hexists(self.hash_key, record_id):
                await pipe.unwatch()
                return False
            pipe.multi()
            pipe.hdel(self.hash_key, record_id)
            pipe.xadd(self.changes_key, _change("deleted", record_id, []))
            await pipe.execute()
        return True

    async def changes(self, count: int = 100) -> list[dict[str, Any]]:
        """The audit trail, newest first: ``{"id", "op", "record_id", "fields"}``."""
        entries: Any = await self.redis.xrevrange(self.changes_key, count=count)
        return [
            {
                "id": entry_id,
                "op": fields.get("op"),
                "record_id": fields.get("id"),
                "fields": json.loads(fields.get("fields", "[]")),
            }
            for entry_id, fields in entries
        ]

    async def latest_change(self) -> str:
        """The id of the newest change ("0-0" when there is none): where a follower starts."""
        newest: Any = await self.redis.xrevrange(self.changes_key, count=1)
        return str(newest[0][0]) if newest else "0-0"

    async def changed_since(
        self, position: str, *, block_ms: int | None = None, count: int = 500
    ) -> list[tuple[str, str]]:
        """``(change id, record id)`` after ``position``, waiting up to ``block_ms`` for one."""
        reply: Any = await self.redis.xread(
            {self.changes_key: position}, count=count, block=block_ms
        )
        return [
            (entry_id, fields.get("id", "")) for _, entries in reply for entry_id, fields in entries
        ]


def _change(op: str, record_id: str, fields: Iterable[str]) -> dict[Any, Any]:
    return {"op": op, "id": record_id, "fields": json.dumps(sorted(fields))}


def field_errors(
    exc: ValidationError, message: Callable[[Any], str] | None = None
) -> list[tuple[str, str]]:
    """``(field, message)`` for each of pydantic's errors, in plain words."""
    return [
        (
            ".".join(str(p) for p in e["loc"]) or "record",
            message(e) if message else str(e["msg"]).removeprefix("Value error, "),
        )
        for e in exc.errors(include_url=False)
    ]
