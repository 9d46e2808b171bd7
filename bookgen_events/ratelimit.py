"""Per-channel, per-recipient rate limits, per minute and per hour, shared by all replicas.

One Lua script checks both windows and records the hit atomically, in one round trip.
We considered the ``limits`` library's async moving window: it checks each limit on its own
(a hit the hourly limit refuses still spends a per-minute slot), builds its own connection
pool instead of using the injected client, and cannot recognise a retry of the same
notification. Here the hit's member is the event id, so a retry, a reclaimed entry or a
redelivery of a notification already counted in the window is not counted twice.
"""

from __future__ import annotations

from redis.asyncio import Redis

from .connection import run_script
from .outcomes import now_ms

_HIT = """
local now = tonumber(ARGV[1])
local member = ARGV[2]
local limits = {tonumber(ARGV[3]), tonumber(ARGV[4])}
local windows = {60000, 3600000}
for i = 1, 2 do
  if limits[i] > 0 and redis.call('ZSCORE', KEYS[i], member) then return 1 end
end
for i = 1, 2 do
  if limits[i] > 0 then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - windows[i])
    if redis.call('ZCARD', KEYS[i]) >= limits[i] then return 0 end
  end
end
for i = 1, 2 do
  if limits[i] > 0 then
    redis.call('ZADD', KEYS[i], now, member)
    redis.call('PEXPIRE', KEYS[i], windows[i])
  end
end
return 1
"""


class RateLimiter:
    """Sliding-window log limiter: exact counts over the last minute and the last hour."""

    def __init__(self, redis: Redis, *, prefix: str = "bookgen") -> None:
        self._prefix = prefix
        self._redis = redis
        self._hit = redis.register_script(_HIT)

    def _keys(self, channel: str, key: str) -> list[str]:
        base = f"{self._prefix}:rl:{channel}"
        return [f"{base}:m:{key}", f"{base}:h:{key}"]

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
            self._keys(channel, key),
            [at_ms if at_ms is not None else now_ms(), member, per_minute, per_hour],
        )
        return bool(allowed)
