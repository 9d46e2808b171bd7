"""Per-channel, per-recipient rate limits, per minute and per hour, shared by all replicas.

One Lua script (``scripts/rate_limit.lua``) checks both windows and records the hit atomically, in one round trip.
We considered the ``limits`` library's async moving window: it checks each limit on its own
(a hit the hourly limit refuses still spends a per-minute slot), builds its own connection
pool instead of using the injected client, and cannot recognise a retry of the same
notification. Here the hit's member is the event id, so a retry, a reclaimed entry or a
redelivery of a notification already counted in the window is not counted twice.
"""

from __future__ import annotations

from redis.asyncio import Redis

from . import scripts
from .connection import run_script
from .keys import StreamNames
from .outcomes import now_ms


class RateLimiter:
    """Sliding-window log limiter: exact counts over the last minute and the last hour."""

    def __init__(self, redis: Redis, *, prefix: str = "bookgen") -> None:
        self._names = StreamNames(prefix)
        self._redis = redis
        self._hit = scripts.register(redis, "rate_limit")

    async def hit(
        self,
        channel: str,
        key: str,
        member: str,
        *,
        per_minute: int,
        per_hour: int,
        at_ms: int | None = None,
    ) -> bool:
        """Count one notification ``member`` for ``key``; False when over a limit (not counted).

        A limit of 0 disables that window.
        """
        if per_minute <= 0 and per_hour <= 0:
            return True
        allowed = await run_script(
            self._redis,
            self._hit,
            self._names.rate_limit(channel, key),
            [at_ms if at_ms is not None else now_ms(), member, per_minute, per_hour],
        )
        return bool(allowed)
